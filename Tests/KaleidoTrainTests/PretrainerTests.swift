import Foundation
import Testing
import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor
@testable import KaleidoTrain

/// Random "images" whose views are the same image plus small noise: a task the ReLICv2 loss
/// can only improve on by telling samples apart.
final class NoisyCopies: MultiViewSource {
    let samples: Int, side: Int, pool: Int
    let images: [Tensor]

    init(samples: Int, side: Int, pool: Int) {
        self.samples = samples; self.side = side; self.pool = pool
        var rng = SplitMix64(seed: 77)
        images = (0..<pool).map { _ in Tensor(randomNormal: [side, side, 3], rng: &rng) }
    }

    func batch(step: Int, rank: Int, worldSize: Int) throws -> MultiViewBatch {
        let perRank = samples / worldSize
        let large = Tensor(zeros: [2 * perRank, side, side, 3])
        var rng = SplitMix64(keys: UInt64(step), UInt64(rank))
        var labels: [Int32] = []
        for n in 0..<perRank {
            let index = (step * samples + rank * perRank + n) % pool
            labels.append(Int32(index))
            for v in 0..<2 {
                let destination = large.pointer + (v * perRank + n) * side * side * 3
                for i in 0..<(side * side * 3) { destination[i] = images[index].pointer[i] + 0.1 * rng.normal() }
            }
        }
        return MultiViewBatch(large: large, largeViews: 2, small: nil, smallViews: 0, labels: labels)
    }

    func groups(step: Int, rank: Int, worldSize: Int) throws -> [MultiViewBatch] {
        [try batch(step: step, rank: rank, worldSize: worldSize)]
    }
}

@Suite struct PretrainerTests {
    func step(model: ReLICv2Model, lr: Double = 3e-3) -> TrainingStep {
        TrainingStep(model: model, loss: ReLICv2Loss(temperature: 0.2, alpha: 1, beta: 1),
                    optimizer: OptimizerSettings(kind: .adamw, weightDecay: 0).make(for: model.online),
                    learningRate: WarmupCosineSchedule(base: lr, warmupSteps: 2, totalSteps: 40),
                    momentum: MomentumSchedule(base: 0.99, totalSteps: 40), queueSize: 0,
                    communicator: LocalCommunicator(), pool: .serial, seed: 0)
    }

    func tinyModel() throws -> ReLICv2Model {
        try ReLICv2Model(backbone: "resnet18-cifar", options: ModelOptions(baseWidth: 4),
                         heads: .init(projectorHidden: 32, projection: 16, predictorHidden: 32), seed: 3)
    }

    @Test func lossByFifthAveragesBlocksAndJudgesTheTrend() {
        #expect(Pretrainer.Summary.blockMeans([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], parts: 5) == [1.5, 3.5, 5.5, 7.5, 9.5])
        #expect(Pretrainer.Summary.blockMeans([4, 2], parts: 5) == [4, 2])
        var summary = Pretrainer.Summary(steps: 10, finalLoss: 0, imagesPerSecond: 0)
        summary.lossByFifth = Pretrainer.Summary.blockMeans([5, 4.9, 4, 4.2, 3, 3.1, 2.5, 2.6, 2, 1], parts: 5)
        #expect(summary.lossFellMonotonically)
        summary.lossByFifth = [3, 2.9, 2.95, 2.8, 2.7]
        #expect(!summary.lossFellMonotonically)
        summary.lossByFifth = [3]
        #expect(!summary.lossFellMonotonically)
    }

    @Test func lossFallsOnATaskItCanLearn() throws {
        let model = try tinyModel()
        let runner = step(model: model)
        let source = NoisyCopies(samples: 8, side: 8, pool: 8)
        var losses: [Float] = []
        for index in 0..<30 {
            losses.append(try runner.run(step: index, batch: source.batch(step: index, rank: 0, worldSize: 1)).loss.total)
        }
        let early = losses.prefix(5).reduce(0, +) / 5, late = losses.suffix(5).reduce(0, +) / 5
        #expect(late < early - 0.3, "loss \(early) → \(late)")
    }

    @Test func targetIsAnEMAOfTheOnlineNetworkAndGetsNoGradient() throws {
        let model = try tinyModel()
        let runner = step(model: model)
        let before = Array(UnsafeBufferPointer(start: model.target.values.pointer, count: model.targetFloats))
        _ = try runner.run(step: 0, batch: NoisyCopies(samples: 4, side: 8, pool: 4).batch(step: 0, rank: 0, worldSize: 1))
        let online = model.online.values.pointer, target = model.target.values.pointer
        // θ_t = γ θ_t + (1 − γ) θ_o with γ = 0.99 at step 0.
        var worst: Float = 0
        for i in 0..<model.targetFloats where model.online.entries.contains(where: { $0.offset <= i && i < $0.offset + $0.count && $0.spec.role.isTrainable }) {
            worst = max(worst, abs(target[i] - (0.99 * before[i] + 0.01 * online[i])))
        }
        #expect(worst < 1e-6)
        // The target has no gradient storage at all (a copy holds values only): nothing can flow into it.
        #expect(!model.target.hasGradients && model.target.gradients.count == 0)
        #expect(model.online.hasGradients && model.online.gradients.count == model.online.count)
        // The predictor is outside the EMA range: the target keeps its initial copy.
        let predictor = model.online.entries.first { $0.spec.name.hasPrefix("predictor.") }!
        #expect(predictor.offset >= model.targetFloats)
    }

    @Test func aNonFiniteGradientStopsTheRunNamingTheParameter() throws {
        let model = try tinyModel()
        let runner = step(model: model)
        // Poison one weight: its gradient and the loss become NaN.
        let entry = model.online.entry(named: "layer1.0.conv1.weight")!
        model.online.values.pointer[entry.offset] = .nan
        let snapshot = Array(UnsafeBufferPointer(start: model.online.values.pointer, count: model.online.count))
        #expect(throws: TrainingError.self) {
            try runner.run(step: 7, batch: NoisyCopies(samples: 4, side: 8, pool: 4).batch(step: 0, rank: 0, worldSize: 1))
        }
        do {
            _ = try runner.run(step: 7, batch: NoisyCopies(samples: 4, side: 8, pool: 4).batch(step: 0, rank: 0, worldSize: 1))
        } catch {
            #expect("\(error)".contains("step 7"))
        }
        // No optimiser step from poisoned gradients (BN statistics, buffers, did see the batch).
        for entry in model.online.entries where entry.spec.role.isTrainable {
            for i in entry.offset..<(entry.offset + entry.count) where snapshot[i].bitPattern != model.online.values.pointer[i].bitPattern {
                Issue.record("\(entry.spec.name) changed")
                return
            }
        }
    }

    /// The Omnivore supervised heads, alone and added to ReLICv2: the cross-entropy of the
    /// samples' labels falls, and the target network never sees the classifier.
    @Test(arguments: [Objective.supervised, .relicv2Supervised])
    func supervisedHeadsLearnTheLabels(objective: Objective) throws {
        let model = try ReLICv2Model(backbone: "resnet18-cifar", options: ModelOptions(baseWidth: 4),
                                     heads: .init(projectorHidden: 32, projection: 16, predictorHidden: 32,
                                                  classifiers: [.init("image", classes: 8)]), seed: 3)
        #expect(model.online.entry(named: "heads.image.weight")!.offset >= model.targetFloats)
        let runner = TrainingStep(model: model, loss: ReLICv2Loss(), optimizer: OptimizerSettings(kind: .adamw).make(for: model.online),
                                 learningRate: WarmupCosineSchedule(base: 3e-3, warmupSteps: 2, totalSteps: 40),
                                 momentum: MomentumSchedule(base: 0.99, totalSteps: 40), queueSize: 0,
                                 communicator: LocalCommunicator(), pool: .serial, seed: 0, objective: objective)
        let source = NoisyCopies(samples: 8, side: 8, pool: 8)
        var losses: [Float] = []
        for index in 0..<25 {
            let result = try runner.run(step: index, batch: source.batch(step: index, rank: 0, worldSize: 1))
            losses.append(result.supervised)
            if objective == .supervised { #expect(result.loss.contrastive == 0 && result.loss.total == result.supervised) }
        }
        let early: Float = losses.prefix(3).reduce(0, +) / 3
        let late: Float = losses.suffix(3).reduce(0, +) / 3
        #expect(late < early - 0.5, "\(losses)")
    }
}

/// Without SyncBN each rank tracks its own BatchNorm running statistics; a checkpoint must hold
/// one well-defined set, whatever the world size: their mean over the ranks.
@Suite struct BatchNormStatisticsTests {
    @Test func savedRunningStatisticsAreTheRanksMean() throws {
        let config = { var config = KaleidoConfig(); config.model.baseWidth = 4; return config }()
        let buffers = try InProcessWorld.run(ranks: 2) { communicator -> [[Float]] in
            let pretrainer = Pretrainer(config: config, communicator: communicator, threads: 1)
            let model = try pretrainer.makeModel()
            for arena in [model.online, model.target] {
                for entry in arena.entries where entry.spec.role == .buffer {
                    for i in 0..<entry.count { arena.values.pointer[entry.offset + i] = Float(communicator.rank * 10 + i % 3) }
                }
            }
            try pretrainer.averageBatchNormStatistics(model)
            return [model.online, model.target].map { arena in
                arena.entries.filter { $0.spec.role == .buffer }.flatMap { entry in
                    Array(UnsafeBufferPointer(start: arena.values.pointer + entry.offset, count: entry.count))
                }
            }
        }
        #expect(buffers[0] == buffers[1])
        let online = buffers[0][0]
        #expect(!online.isEmpty)
        // Rank 0 held i % 3, rank 1 held 10 + i % 3 (counted within each entry): the mean is 5 + i % 3.
        #expect(online.allSatisfy { [5, 6, 7].contains($0) }, "\(online.prefix(8))")
    }
}
