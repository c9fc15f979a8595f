import Testing
import KaleidoTensor
@testable import KaleidoSSL

/// The objective of one modality group when ranks hold different numbers of its samples (a
/// joint step's group of 5 on 2 ranks is 2 + 3): each rank's loss, averaged over ranks, is the
/// single-process loss of the whole group, and each rank's prediction gradients, averaged as the
/// gradient all-reduce does, are the single-process gradients of its rows.
@Suite struct ReLICv2ObjectiveTests {
    let dimension = 6, samples = 5, largeViews = 2, smallViews = 1

    /// (V·n, D) stacked rows of `rows` (a sub-range of the group) for each view of `full`.
    func rows(_ full: Tensor, views: Int, _ range: Range<Int>) -> Tensor {
        let out = Tensor(zeros: [views * range.count, dimension])
        for v in 0..<views {
            for (j, n) in range.enumerated() {
                (out.pointer + (v * range.count + j) * dimension).update(from: full.pointer + (v * samples + n) * dimension, count: dimension)
            }
        }
        return out
    }

    /// A gather that returns the whole group's rows (what the all-reduce would assemble).
    func gather(from full: [Int: Tensor]) -> RowGather {
        { _, views, _ in ReLICv2Objective.split(full[views]!, views: views, rows: self.samples) }
    }

    @Test(arguments: [0, 8])
    func unevenRanksAverageToTheSingleProcessLossAndGradients(queue: Int) throws {
        var rng = SplitMix64(seed: 21)
        let large = Tensor(randomNormal: [largeViews * samples, dimension], rng: &rng)
        let small = Tensor(randomNormal: [smallViews * samples, dimension], rng: &rng)
        let targets = Tensor(randomNormal: [largeViews * samples, dimension], rng: &rng)
        let loss = ReLICv2Loss(temperature: 0.2, alpha: 1, beta: 1)
        let wholeGather = gather(from: [largeViews: large, smallViews: small])

        func run(_ range: Range<Int>, ranks: Int) throws -> (ReLICv2Loss.Value, [Tensor]) {
            let objective = ReLICv2Objective(loss: loss, queueCapacity: queue, dimension: dimension)
            let groupRows = GroupRows(local: range.count, offset: range.lowerBound, global: samples, ranks: ranks)
            let targetGather: RowGather = { _, views, _ in ReLICv2Objective.split(targets, views: views, rows: self.samples) }
            // Two steps, so a queue (when configured) holds the first step's targets in the second.
            _ = try objective.takeTargets(rows(targets, views: largeViews, range), views: largeViews, rows: groupRows, gather: targetGather)
            let anchors = [AnchorViews(predictions: rows(large, views: largeViews, range), views: largeViews, skippedTargets: [0, 1]),
                           AnchorViews(predictions: rows(small, views: smallViews, range), views: smallViews, skippedTargets: [nil])]
            _ = try objective.lossAndGradients(anchors, rows: groupRows, gather: wholeGather, allocate: { Tensor(zeros: $0) }, pool: .serial)
            try objective.takeTargets(rows(targets, views: largeViews, range), views: largeViews, rows: groupRows, gather: targetGather)
            return try objective.lossAndGradients(anchors, rows: groupRows, gather: wholeGather, allocate: { Tensor(zeros: $0) },
                                                  pool: .serial)
        }
        let (whole, wholeGradients) = try run(0..<samples, ranks: 1)
        let (first, firstGradients) = try run(0..<2, ranks: 2)
        let (second, secondGradients) = try run(2..<samples, ranks: 2)
        let mean = (first.total + second.total) / 2
        #expect(abs(mean - whole.total) <= 1e-6 * abs(whole.total), "ranks \(first.total), \(second.total) → \(mean); one process \(whole.total)")
        #expect(abs((first.divergence + second.divergence) / 2 - whole.divergence) <= 1e-6 * max(1, whole.divergence))
        for (group, views) in [largeViews, smallViews].enumerated() {
            let expectedFirst = rows(wholeGradients[group], views: views, 0..<2)
            let expectedSecond = rows(wholeGradients[group], views: views, 2..<samples)
            for (got, expected) in [(firstGradients[group], expectedFirst), (secondGradients[group], expectedSecond)] {
                let scale = expected.array.map(abs).max()!
                let error = zip(got.array, expected.array).map { abs($0 / 2 - $1) }.max()!
                #expect(error <= 1e-6 * scale, "anchor group \(group): error \(error) of \(scale)")
            }
        }
    }

    /// An extra view skipped against target 0 (a cross-modal view cut from large view 0) pairs
    /// with the other target only: its loss and gradient differ from a view paired with both,
    /// and a weight scales the gradients, not the value.
    @Test func skippedTargetsAndWeights() throws {
        var rng = SplitMix64(seed: 5)
        let large = Tensor(randomNormal: [2 * 4, dimension], rng: &rng)
        let extra = Tensor(randomNormal: [4, dimension], rng: &rng)
        let targets = Tensor(randomNormal: [2 * 4, dimension], rng: &rng)
        let objective = ReLICv2Objective(loss: ReLICv2Loss(), queueCapacity: 0, dimension: dimension)
        let rows = GroupRows.single(4)
        let identity: RowGather = { stacked, views, rows in ReLICv2Objective.split(stacked, views: views, rows: rows.local) }
        func run(skipping: Int?, weight: Float) throws -> (Float, [Float]) {
            try objective.takeTargets(targets, views: 2, rows: rows, gather: identity)
            let anchors = [AnchorViews(predictions: large, views: 2, skippedTargets: [0, 1]),
                           AnchorViews(predictions: extra, views: 1, skippedTargets: [skipping])]
            let (value, gradients) = try objective.lossAndGradients(anchors, rows: rows, weight: weight, gather: identity,
                                                                   allocate: { Tensor(zeros: $0) }, pool: .serial)
            return (value.total, gradients[1].array)
        }
        let (both, pairedWithBoth) = try run(skipping: nil, weight: 1)
        let (one, pairedWithOne) = try run(skipping: 0, weight: 1)
        let (weighted, halved) = try run(skipping: 0, weight: 0.5)
        #expect(both != one)
        #expect(pairedWithBoth != pairedWithOne)
        #expect(weighted == one)
        #expect(zip(halved, pairedWithOne).allSatisfy { abs($0 - 0.5 * $1) <= 1e-7 * max(1, abs($1)) })
    }
}
