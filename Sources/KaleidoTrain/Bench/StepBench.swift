import Foundation
import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor

/// The ReLICv2 training step of `../shared/bench/pytorch_reference.py`, on the same shapes:
/// online encoder + projector + predictor (hidden 1024, out 128), EMA target, 2 large and
/// 2 small views of a fixed random batch, AdamW (lr 1e-3, weight decay 0.05).
public struct StepBench {
    /// Benchmark names, as the reference spells them, and Kaleido's zoo names. The Omnivore
    /// ones are Kaleido's own (no reference): `omnivore-cifar` on images, `omnivore-cifar-joint`
    /// a joint step of three equal groups — images, clips, RGB-D — with each clip and scene's
    /// cross-modal view, as `configs/omnivore-debug.yaml` trains.
    public static let models: [(name: String, zoo: String)] = [
        ("resnet18-cifar", "resnet18-cifar"), ("convnext-atto", "convnext-atto-32"), ("swin-tiny-32", "swin-cifar"),
        ("omnivore-cifar", "omnivore-swin-cifar"), ("omnivore-cifar-joint", "omnivore-swin-cifar"),
    ]

    /// Frames of the joint benchmark's clips: 2, as configs/omnivore-debug.yaml (one temporal token).
    public var clipFrames = 2

    public var batch = 64
    public var large = 32
    public var small = 16
    public var threads = 2
    public var warmup = 2
    public var steps = 5
    /// Matrix products split over the compute pool (true) or threaded by OpenBLAS (false).
    public var splitsMatrixProducts = true

    public init() {}

    /// One JSON line's worth, with the reference's keys (plus GFLOP/s).
    public struct Result: Codable, Sendable {
        public var framework = "kaleido"
        public var model: String
        public var batch: Int
        public var large: Int
        public var small: Int
        public var threads: Int
        public var stepS: Double
        public var imagesPerS: Double
        public var onlineParams: Int
        public var loss: Double?
        public var peakRssMib: Double
        public var gflopsPerS: Double
        /// Ranks of the run; images/s is the global rate (batch per rank × ranks).
        public var ranks = 1
        /// Share of the step spent waiting on the gradient all-reduce after backward.
        public var allreduceWaitShare = 0.0
    }

    /// - Parameter communicator: under mpirun every rank runs the step on its own batch of
    ///   `batch` samples and gradients are all-reduced, as in data-parallel training.
    public func run(model name: String, communicator: Communicator = LocalCommunicator()) throws -> Result {
        guard let zoo = Self.models.first(where: { $0.name == name })?.zoo else {
            throw ModelError.unknownModel(name, known: Self.models.map(\.name))
        }
        // The pool's threads run the matrix products in pieces of single-threaded OpenBLAS
        // calls, so OpenBLAS keeps no threads of its own spinning next to the pool's.
        BLAS.threadCount = splitsMatrixProducts ? 1 : threads
        let pool = ComputePool(threads: threads, splitsMatrixProducts: splitsMatrixProducts)
        let model = try ReLICv2Model(backbone: zoo, options: ModelOptions(),
                                     heads: .init(projectorHidden: 1024, projection: 128, predictorHidden: 1024), seed: 0)
        let joint = name.hasSuffix("-joint")
        let step = TrainingStep(
            model: model, loss: ReLICv2Loss(temperature: 0.2, alpha: 1, beta: 1),
            optimizer: OptimizerSettings(kind: .adamw, weightDecay: 0.05).make(for: model.online),
            learningRate: WarmupCosineSchedule(base: 1e-3, final: 1e-3, warmupSteps: 0, totalSteps: 1),
            momentum: MomentumSchedule(base: 0.996, totalSteps: 1 << 30),
            queueSize: 0, communicator: communicator, pool: pool, seed: 0,
            datasets: joint ? ["image", "video", "rgbd"] : ["image"])
        var rng = SplitMix64(seed: 0)
        let views = joint ? jointGroups(&rng) : [group(batch, frames: nil, channels: 3, &rng)]
        var loss: Float = .nan
        for index in 0..<warmup { loss = try step.run(step: index, groups: views).loss.total }
        try communicator.barrier()
        let start = DispatchTime.now().uptimeNanoseconds
        var waiting = 0.0
        for index in 0..<steps {
            let result = try step.run(step: warmup + index, groups: views)
            loss = result.loss.total
            waiting += result.allReduceWaitSeconds
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(steps)
        let ranks = communicator.worldSize
        return Result(model: name, batch: batch, large: large, small: small, threads: threads, stepS: seconds,
                      imagesPerS: Double(batch * ranks) / seconds, onlineParams: model.online.trainableCount,
                      loss: loss.isFinite ? Double(loss) : nil, peakRssMib: Self.peakResidentMiB(),
                      gflopsPerS: stepFLOPs(model, groups: views) * Double(ranks) / seconds / 1e9, ranks: ranks,
                      allreduceWaitShare: waiting / Double(steps) / seconds)
    }

    /// Random views of `n` samples: images (frames nil), clips, or RGB-D (4 channels).
    func group(_ n: Int, frames: Int?, channels: Int, _ rng: inout SplitMix64) -> MultiViewBatch {
        func views(_ side: Int) -> Tensor {
            Tensor(randomNormal: [2 * n] + (frames.map { [$0] } ?? []) + [side, side, channels], rng: &rng)
        }
        return MultiViewBatch(large: views(large), largeViews: 2, small: views(small), smallViews: 2,
                              labels: [Int32](repeating: 0, count: n))
    }

    /// A joint step's three groups (batch split in thirds, weights 1/3), with cross-modal views.
    func jointGroups(_ rng: inout SplitMix64) -> [MultiViewBatch] {
        let sizes = [batch - 2 * (batch / 3), batch / 3, batch / 3]
        var image = group(sizes[0], frames: nil, channels: 3, &rng)
        var video = group(sizes[1], frames: clipFrames, channels: 3, &rng)
        var rgbd = group(sizes[2], frames: nil, channels: 4, &rng)
        (image.dataset, video.dataset, rgbd.dataset) = ("image", "video", "rgbd")
        video.crossModal = Tensor(randomNormal: [sizes[1], 1, large, large, 3], rng: &rng)
        rgbd.crossModal = Tensor(randomNormal: [sizes[2], large, large, 3], rng: &rng)
        image.weight = 1.0 / 3; video.weight = 1.0 / 3; rgbd.weight = 1.0 / 3
        return [image, video, rgbd]
    }

    /// Forward and backward (2× forward) of the online network on every view, plus the target's
    /// forward on the large views, summed over the step's groups.
    func stepFLOPs(_ model: ReLICv2Model, groups: [MultiViewBatch]) -> Double {
        func forward(_ shape: [Int]) -> Double {
            let features = model.trunk.describe(shape)
            let projected = model.projector.describe(features.outputShape)
            return features.flops + projected.flops + model.predictor.describe(projected.outputShape).flops
        }
        return groups.reduce(0) { total, group in
            let online = forward(group.large.shape) + (group.small.map { forward($0.shape) } ?? 0)
                + (group.crossModal.map { forward($0.shape) } ?? 0)
            return total + 3 * online + forward(group.large.shape)
        }
    }

    /// The process's peak resident set, as the reference reads it (getrusage ru_maxrss).
    public static func peakResidentMiB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }
}
