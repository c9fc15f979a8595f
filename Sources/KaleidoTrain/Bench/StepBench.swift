import Foundation
import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor

/// The ReLICv2 training step of `../shared/bench/pytorch_reference.py`, on the same shapes:
/// online encoder + projector + predictor (hidden 1024, out 128), EMA target, 2 large and
/// 2 small views of a fixed random batch, AdamW (lr 1e-3, weight decay 0.05).
public struct StepBench {
    /// The groups of models a run can select, each run at its own shapes.
    public enum Suite: String, CaseIterable, Sendable {
        /// The reference's small-input models: batch 64, 2 × 32 px + 2 × 16 px.
        case small
        /// The reference's paper-scale models: ImageNet stems at batch 16, 2 × 224 px + 2 × 96 px;
        /// Video Swin-T at batch 8 on 8-frame clips, 2 × 112 px + 2 × 64 px.
        case paper
        /// Kaleido's own Omnivore steps at the small suite's shapes (the reference has none).
        case omnivore
    }

    /// What one step's batch holds.
    public enum Views: Sendable, Equatable {
        /// Images (N, H, W, 3).
        case images
        /// Clips (N, T, H, W, 3) of `frames` frames, large and small views of equal length.
        case clips
        /// Three equal groups — images, clips, RGB-D — with each clip and scene's cross-modal
        /// view, as `configs/omnivore-debug.yaml` trains.
        case joint
    }

    /// One benchmark model and the shapes it runs at unless told otherwise: the arguments the
    /// reference's header gives for it.
    public struct Model: Sendable {
        /// As the reference spells it.
        public let name: String
        /// Kaleido's `ModelZoo` name.
        public let zoo: String
        public let suite: Suite
        public let views: Views
        public let batch, large, small: Int
        /// Frames per clip for `.clips` and `.joint`; nil for images.
        public let frames: Int?
    }

    /// Every benchmark model, one row each.
    public static let models: [Model] = [
        Model(name: "resnet18-cifar", zoo: "resnet18-cifar", suite: .small, views: .images, batch: 64, large: 32, small: 16, frames: nil),
        Model(name: "convnext-atto", zoo: "convnext-atto-32", suite: .small, views: .images, batch: 64, large: 32, small: 16, frames: nil),
        Model(name: "swin-tiny-32", zoo: "swin-cifar", suite: .small, views: .images, batch: 64, large: 32, small: 16, frames: nil),
        Model(name: "resnet50", zoo: "resnet50", suite: .paper, views: .images, batch: 16, large: 224, small: 96, frames: nil),
        Model(name: "convnext-tiny", zoo: "convnext-tiny", suite: .paper, views: .images, batch: 16, large: 224, small: 96, frames: nil),
        // Omnivore Swin-T's trunk is the reference's torchvision swin3d_t: patch 2×4×4, window 8×7×7,
        // embed 96, depths 2-2-6-2, heads 3-6-12-24. Both clip the window to the token grid the same
        // way (a dimension no larger than the window gets the whole dimension and no shift), so on
        // 8-frame clips the temporal window is 4 (4 temporal tokens) everywhere; at 112 px the grids
        // are 28², 14², 7², 4² (stage 3's window is its whole 7×7 grid, unshifted; stage 4's 4×4×4)
        // and at 64 px 16², 8², 4², 2² (windows of 4×4×4 and 4×2×2 in stages 3 and 4). Two
        // differences, neither changing the work: Omnivore's trunk also holds the depth patch
        // embedding (unused on RGB clips; its parameters are counted and stepped by AdamW), and its
        // stochastic depth is 0.2 against torchvision's 0.1 (both scale by a mask, skip no work).
        Model(name: "swin3d-t", zoo: "omnivore-swin-t", suite: .paper, views: .clips, batch: 8, large: 112, small: 64, frames: 8),
        Model(name: "omnivore-cifar", zoo: "omnivore-swin-cifar", suite: .omnivore, views: .images, batch: 64, large: 32, small: 16,
              frames: nil),
        // Clips of 2 frames, as configs/omnivore-debug.yaml (one temporal token).
        Model(name: "omnivore-cifar-joint", zoo: "omnivore-swin-cifar", suite: .omnivore, views: .joint, batch: 64, large: 32,
              small: 16, frames: 2),
    ]

    /// The models of `suites`, in table order.
    public static func models(in suites: Set<Suite>) -> [Model] { models.filter { suites.contains($0.suite) } }

    public static func model(named name: String) throws -> Model {
        guard let model = models.first(where: { $0.name == name }) else {
            throw SelectionError.unknownModel(name, known: models.map(\.name))
        }
        return model
    }

    /// The models a command line selects: comma-separated model names, or comma-separated suites
    /// (`all` for every suite), or, given neither, the 32-px suites (small and omnivore).
    public static func selection(models names: String?, suites: String?) throws -> [Model] {
        func list(_ text: String) -> [String] { text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        switch (names, suites) {
        case (.some, .some): throw SelectionError.modelsAndSuites
        case (let names?, nil): return try list(names).map(model(named:))
        case (nil, let suites?):
            let selected = try list(suites).reduce(into: Set<Suite>()) { selected, name in
                if name == "all" { selected.formUnion(Suite.allCases); return }
                guard let suite = Suite(rawValue: name) else {
                    throw SelectionError.unknownSuite(name, known: Suite.allCases.map(\.rawValue) + ["all"])
                }
                selected.insert(suite)
            }
            return models(in: selected)
        case (nil, nil): return models(in: [.small, .omnivore])
        }
    }

    /// A selection the table cannot satisfy, in the command line's words.
    public enum SelectionError: Error, CustomStringConvertible, Equatable {
        case unknownModel(String, known: [String])
        case unknownSuite(String, known: [String])
        case modelsAndSuites

        public var description: String {
            switch self {
            case .unknownModel(let name, let known): "unknown model \"\(name)\"; choose from \(known.joined(separator: ", "))"
            case .unknownSuite(let name, let known): "unknown suite \"\(name)\"; choose from \(known.joined(separator: ", "))"
            case .modelsAndSuites: "give --models or --suite, not both"
            }
        }
    }

    public let model: Model
    public var batch: Int
    public var large: Int
    public var small: Int
    /// Frames of the clips (`.clips` and `.joint` models; images ignore it).
    public var clipFrames: Int
    public var threads = 2
    public var warmup = 2
    public var steps = 5
    /// Matrix products split over the compute pool (true) or threaded by OpenBLAS (false).
    public var splitsMatrixProducts = true

    /// `model` at its default shapes.
    public init(_ model: Model) {
        self.model = model
        (batch, large, small, clipFrames) = (model.batch, model.large, model.small, model.frames ?? 1)
    }

    /// Whether the views hold clips, so `clipFrames` matters.
    public var hasClips: Bool { model.views != .images }

    /// The shape arguments, spelled as the reference and `kaleido bench step` take them.
    public var shapeArguments: [String] {
        ["--batch", "\(batch)", "--large", "\(large)", "--small", "\(small)"] + (hasClips ? ["--frames", "\(clipFrames)"] : [])
    }

    /// One JSON line's worth, with the reference's keys (plus GFLOP/s).
    public struct Result: Codable, Sendable {
        public var framework = "kaleido"
        public var model: String
        public var batch: Int
        public var large: Int
        public var small: Int
        /// Frames per clip; nil for images (as the reference).
        public var frames: Int?
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
        /// FMA throughput of all `threads` threads at once over one thread's, the lower of a check
        /// just before and just after the timed steps: `threads` when each thread had a core of
        /// its own, less when the machine gave fewer (a virtual machine's cores shared with a
        /// neighbour, another process). Says whether a row was measured on the whole machine.
        public var coresDelivered = 1.0
    }

    /// - Parameter communicator: under mpirun every rank runs the step on its own batch of
    ///   `batch` samples and gradients are all-reduced, as in data-parallel training.
    public func run(communicator: Communicator = LocalCommunicator()) throws -> Result {
        // The pool's threads run the matrix products in pieces of single-threaded OpenBLAS
        // calls, so OpenBLAS keeps no threads of its own spinning next to the pool's.
        BLAS.threadCount = splitsMatrixProducts ? 1 : threads
        let pool = ComputePool(threads: threads, splitsMatrixProducts: splitsMatrixProducts)
        let network = try ReLICv2Model(backbone: model.zoo, options: ModelOptions(),
                                       heads: .init(projectorHidden: 1024, projection: 128, predictorHidden: 1024), seed: 0)
        var rng = SplitMix64(seed: 0)
        let views = groups(&rng)
        let step = TrainingStep(
            model: network, loss: ReLICv2Loss(temperature: 0.2, alpha: 1, beta: 1),
            optimizer: OptimizerSettings(kind: .adamw, weightDecay: 0.05).make(for: network.online),
            learningRate: WarmupCosineSchedule(base: 1e-3, final: 1e-3, warmupSteps: 0, totalSteps: 1),
            momentum: MomentumSchedule(base: 0.996, totalSteps: 1 << 30),
            queueSize: 0, communicator: communicator, pool: pool, seed: 0, datasets: views.map(\.dataset))
        var loss: Float = .nan
        for index in 0..<warmup { loss = try step.run(step: index, groups: views).loss.total }
        let coresBefore = Self.coresDelivered(pool)
        try communicator.barrier()
        let start = DispatchTime.now().uptimeNanoseconds
        var waiting = 0.0
        for index in 0..<steps {
            let result = try step.run(step: warmup + index, groups: views)
            loss = result.loss.total
            waiting += result.allReduceWaitSeconds
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(steps)
        let coresAfter = Self.coresDelivered(pool)
        let ranks = communicator.worldSize
        return Result(model: model.name, batch: batch, large: large, small: small, frames: hasClips ? clipFrames : nil,
                      threads: threads, stepS: seconds, imagesPerS: Double(batch * ranks) / seconds,
                      onlineParams: network.online.trainableCount, loss: loss.isFinite ? Double(loss) : nil,
                      peakRssMib: Self.peakResidentMiB(),
                      gflopsPerS: stepFLOPs(network, groups: views) * Double(ranks) / seconds / 1e9, ranks: ranks,
                      allreduceWaitShare: waiting / Double(steps) / seconds, coresDelivered: min(coresBefore, coresAfter))
    }

    /// `pool`'s FMA throughput over one thread's (`Result.coresDelivered`), each the best of
    /// three runs of about 8 ms per thread (4·10⁶ iterations of 10 FMAs of 8 lanes).
    static func coresDelivered(_ pool: ComputePool) -> Double {
        guard pool.threads > 1 else { return 1 }
        let sink = Tensor(zeros: [pool.threads])
        func flopsPerSecond(_ pool: ComputePool) -> Double {
            var best = 0.0
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                let flops = PeakThroughput.fmaChains(iterations: 4_000_000, pool: pool, sink: sink.pointer)
                best = max(best, flops / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
            }
            return best
        }
        return flopsPerSecond(pool) / flopsPerSecond(.serial)
    }

    /// The step's groups: one of images or clips, or the joint step's three.
    func groups(_ rng: inout SplitMix64) -> [MultiViewBatch] {
        switch model.views {
        case .images: return [group(batch, frames: nil, channels: 3, &rng)]
        case .clips:
            var clips = group(batch, frames: clipFrames, channels: 3, &rng)
            clips.dataset = "video"
            return [clips]
        case .joint: return jointGroups(&rng)
        }
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
