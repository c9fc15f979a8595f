import Testing
import KaleidoData
import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor
@testable import KaleidoTrain

/// A joint step (image, video and RGB-D groups of 9, 8 and 6 samples) on 1 rank and on 2 and 4
/// in-process ranks (threads, no mpirun) with SyncBN: ranks hold different numbers of a group's
/// samples, gather them at their offsets, and give the single process's losses within 1e-4
/// relative. Not closer: the trunk's float32 features of 9 samples run together and run as 4 + 5
/// already differ by 5e-5 relative (OpenBLAS picks kernels by matrix size), so ranks, which run
/// fewer rows, round differently; the gathers and the loss's normalisation are exact.
@Suite struct StepWorldSizeTests {
    static let sizes = [("image", 9), ("video", 8), ("rgbd", 6)]
    static let side = 8

    /// Rank `rank`'s slices of step `step`'s groups, cut from one global batch drawn per step.
    static func groups(step: Int, rank: Int, worldSize: Int) -> [MultiViewBatch] {
        var rng = SplitMix64(keys: 91, UInt64(step))
        return sizes.map { dataset, count in
            let frames = dataset == "video" ? [2] : [], channels = dataset == "rgbd" ? 4 : 3
            let large = Tensor(randomNormal: [2 * count] + frames + [side, side, channels], rng: &rng)
            let small = Tensor(randomNormal: [1 * count] + frames + [side / 2, side / 2, channels], rng: &rng)
            let labels = (0..<count).map { Int32(($0 + step) % 3) }
            let slice = DataPipeline.shard(count, rank: rank, worldSize: worldSize)
            func rows(_ tensor: Tensor, views: Int) -> Tensor {
                let each = tensor.count / tensor.shape[0]
                let out = Tensor(zeros: [views * slice.count] + Array(tensor.shape.dropFirst()))
                for v in 0..<views {
                    (out.pointer + v * slice.count * each).update(from: tensor.pointer + (v * count + slice.lowerBound) * each,
                                                                  count: slice.count * each)
                }
                return out
            }
            var batch = MultiViewBatch(large: rows(large, views: 2), largeViews: 2, small: rows(small, views: 1), smallViews: 1,
                                       labels: Array(labels[slice]), dataset: dataset)
            batch.offset = slice.lowerBound
            batch.globalSamples = count
            batch.weight = Float(count) / 23
            return batch
        }
    }

    static func losses(communicator: Communicator, steps: Int) throws -> [[Float]] {
        let model = try ReLICv2Model(backbone: "omnivore-swin-cifar", options: ModelOptions(baseWidth: 8),
                                     heads: .init(projectorHidden: 16, projection: 8, predictorHidden: 16), seed: 4)
        let step = TrainingStep(model: model, loss: ReLICv2Loss(), optimizer: OptimizerSettings(kind: .adamw).make(for: model.online),
                                learningRate: WarmupCosineSchedule(base: 1e-3, warmupSteps: 1, totalSteps: steps),
                                momentum: MomentumSchedule(base: 0.99, totalSteps: steps), queueSize: 10,
                                communicator: communicator, pool: .serial, seed: 0, bucketCap: .bytes(16 << 10),
                                synchronizeBatchNorm: true, datasets: sizes.map(\.0))
        return try (0..<steps).map { index in
            let result = try step.run(step: index, groups: groups(step: index, rank: communicator.rank, worldSize: communicator.worldSize))
            return [result.loss.total] + result.groups.map(\.loss.total)
        }
    }

    @Test(arguments: [2, 4])
    func aJointStepOnSeveralRanksGivesTheLossesOfOne(ranks: Int) throws {
        // Ranks are threads here: OpenBLAS's own thread pool is not safe to share between callers.
        BLAS.threadCount = 1
        let single = try Self.losses(communicator: LocalCommunicator(), steps: 3)
        let perRank = try InProcessWorld.run(ranks: ranks) { communicator in try Self.losses(communicator: communicator, steps: 3) }
        for (rank, curve) in perRank.enumerated() {
            // Every rank logs the same (averaged) losses.
            #expect(curve == perRank[0], "rank \(rank)")
        }
        for (step, (expected, got)) in zip(single, perRank[0]).enumerated() {
            for (part, (a, b)) in zip(expected, got).enumerated() {
                #expect(abs(a - b) <= 1e-4 * abs(a), "step \(step) part \(part): 1 rank \(a), \(ranks) ranks \(b)")
            }
        }
    }
}
