import Testing
@testable import KaleidoDist

/// `GradientReducer` over 2 and 4 ranks of an `InProcessWorld`, driven as the trainer drives it.
@Suite struct GradientReducerWorldTests {
    /// Ten tensors of uneven sizes, back to back.
    static let tensors: [Range<Int>] = {
        var end = 0
        return [5, 17, 1, 64, 3, 40, 9, 128, 2, 33].map { count in
            defer { end += count }
            return end..<(end + count)
        }
    }()
    static let arenaCount = tensors.last!.upperBound

    /// Many buckets (one per tensor, or one float's worth), a few, and one.
    static let caps: [BucketCap] = [.perTensor, .bytes(4), .bytes(100), .bytes(600), .unbounded]

    static func gradients(rank: Int, step: Int) -> [Float] {
        ReductionFixtures.gradients(count: arenaCount, seed: UInt64(100 * step + rank))
    }

    /// One step as `ReLICv2Step` runs it: backward visits layers last to first, each layer's
    /// gradients are written and then reported final, then `finish()`. Gradients are written only
    /// when their layer is reached, over garbage, so a bucket reduced too early shows.
    static func backwardAndReduce(_ reducer: GradientReducer, arena: UnsafeMutableBufferPointer<Float>, gradients: [Float]) throws {
        arena.update(repeating: 1e30)
        reducer.beginStep()
        for tensor in tensors.reversed() {
            for i in tensor { arena[i] = gradients[i] }
            try reducer.gradientsFinal(from: tensor.lowerBound)
        }
        try reducer.finish()
    }

    @Test(arguments: [2, 4], caps)
    func everyRankEndsWithTheAverageOfAllRanksGradients(ranks: Int, cap: BucketCap) throws {
        let results = try InProcessWorld.run(ranks: ranks) { communicator in
            let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: Self.arenaCount)
            defer { arena.deallocate() }
            let reducer = GradientReducer(tensors: Self.tensors, gradients: arena.baseAddress!, cap: cap, communicator: communicator)
            var steps: [[Float]] = []
            for step in 1...2 {   // the second step checks that beginStep() resets what the first left
                communicator.enterStep(step)
                try Self.backwardAndReduce(reducer, arena: arena, gradients: Self.gradients(rank: communicator.rank, step: step))
                #expect((0...reducer.buckets.count).contains(reducer.overlappedBuckets))
                steps.append(Array(arena))
            }
            return steps
        }
        for step in 1...2 {
            // The documented arithmetic: the deterministic rank-order sum, divided by the world size
            // (the reducer multiplies by 1/W, which is the same for the power-of-two worlds tested).
            let sum = ReductionFixtures.rankOrderSum((0..<ranks).map { Self.gradients(rank: $0, step: step) })
            let average = sum.map { $0 / Float(ranks) }
            for rank in 0..<ranks {
                #expect(ReductionFixtures.difference(results[rank][step - 1], from: average) == nil, "rank \(rank), step \(step), \(cap)")
            }
        }
    }

    /// `overlappedBuckets` counts buckets whose reduction completed before `finish()`. Each round
    /// of barrier-then-progress completes at least the oldest bucket on every rank (the barrier
    /// guarantees every rank took the previous round's step), so after buckets + 1 rounds all
    /// have overlapped, whatever the threads' timing; with nothing reported before `finish()`, none.
    @Test(arguments: [2, 4])
    func overlappedBucketsCountReductionsCompletedBeforeFinish(ranks: Int) throws {
        let counts = try InProcessWorld.run(ranks: ranks) { communicator in
            let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: Self.arenaCount)
            defer { arena.deallocate() }
            arena.update(repeating: 1)
            let reducer = GradientReducer(tensors: Self.tensors, gradients: arena.baseAddress!, cap: .bytes(100),
                                          communicator: communicator)
            reducer.beginStep()
            try reducer.gradientsFinal(from: 0)
            for _ in 0...reducer.buckets.count {
                try communicator.barrier()
                try reducer.gradientsFinal(from: 0)
            }
            try reducer.finish()
            let overlapped = reducer.overlappedBuckets
            #expect(arena.allSatisfy { $0 == 1 })

            reducer.beginStep()
            try reducer.finish()
            return (buckets: reducer.buckets.count, overlapped: overlapped, withoutReports: reducer.overlappedBuckets)
        }
        for count in counts {
            #expect(count.buckets == 8)   // 33 | 2 | 128 | 9 | 40 | 3 | 64 | 1 + 17 + 5 floats (25 fit)
            #expect(count.overlapped == count.buckets)
            #expect(count.withoutReports == 0)
        }
    }
}
