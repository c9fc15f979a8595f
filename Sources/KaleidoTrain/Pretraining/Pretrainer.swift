import Foundation
import KaleidoCheckpoint
import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor
import Logging

/// Runs ReLICv2 pretraining from a resolved config: builds the model and optimiser, loops over
/// steps with metrics and progress, and finishes with a linear probe and kNN on frozen
/// features of the held-out split.
public final class Pretrainer {
    public let config: KaleidoConfig
    public let communicator: Communicator
    public let runDirectory: URL
    let pool: ComputePool
    let logger = Logger(label: "kaleido.pretrain")

    public struct Summary: Codable, Sendable {
        public var steps: Int
        public var finalLoss: Double
        public var imagesPerSecond: Double
        public var probe: LinearProbe.Result?
        public var knnTop1: Double?
        /// The same evaluation of the network before training: what "it learned" is measured against.
        public var initialProbe: LinearProbe.Result?
        public var initialKnnTop1: Double?
        /// Steps this invocation ran (fewer than `steps` after a resume or a preemption).
        public var stepsRun = 0
        /// Stopped early by SIGTERM/SIGUSR1 after saving a checkpoint.
        public var preempted = false
        public var lastCheckpoint: String?
        /// Mean loss over each fifth of the steps this invocation ran: a single step's loss is too
        /// noisy (random crops, one batch) to say whether training is still improving.
        public var lossByFifth: [Double] = []

        /// Whether every fifth's mean loss is below the previous one.
        public var lossFellMonotonically: Bool {
            lossByFifth.count > 1 && zip(lossByFifth, lossByFifth.dropFirst()).allSatisfy { $1 < $0 }
        }

        /// Means of `values` over `parts` consecutive, nearly equal blocks (fewer when short).
        static func blockMeans(_ values: [Double], parts: Int) -> [Double] {
            let blocks = min(parts, values.count)
            return (0..<blocks).map { b in
                let block = values[(b * values.count / blocks)..<((b + 1) * values.count / blocks)]
                return block.reduce(0, +) / Double(block.count)
            }
        }
    }

    /// Where this run's checkpoints live: `<run directory>/checkpoints`.
    public var checkpointStore: CheckpointStore {
        CheckpointStore(directory: runDirectory.appendingPathComponent("checkpoints"), keep: config.checkpoint.keep,
                        zstdLevel: config.checkpoint.zstdLevel)
    }

    public init(config: KaleidoConfig, communicator: Communicator, threads: Int) {
        self.config = config
        self.communicator = communicator
        // Matrix products are cut into pieces the pool's threads take in turn, each a
        // single-threaded OpenBLAS call: OpenBLAS's own workers spin in sched_yield between calls
        // and compete with the pool (a third of the step on 2 cores; see BENCHMARKS.md).
        self.pool = ComputePool(threads: threads, splitsMatrixProducts: true)
        BLAS.threadCount = 1
        runDirectory = URL(fileURLWithPath: config.run.outputDir).appendingPathComponent(config.run.name)
    }

    public static func backboneName(_ model: ModelConfig) -> String {
        switch model.arch {
        case .resnet18: return model.cifarStem ? "resnet18-cifar" : "resnet18"
        case .resnet50: return model.cifarStem ? "resnet50-cifar" : "resnet50"
        case .omnivoreSwinTiny: return "omnivore-swin-t"
        case .omnivoreSwinSmall: return "omnivore-swin-s"
        case .omnivoreSwinBase: return "omnivore-swin-b"
        case .convnextIsoSmall: return "convnext-isotropic-small"
        case .convnextIsoBase: return "convnext-isotropic-base"
        case .convnextIsoLarge: return "convnext-isotropic-large"
        default: return model.arch.rawValue.replacingOccurrences(of: "_", with: "-")
        }
    }

    /// - Parameter classes: classes of the data, for the supervised heads (one per modality in
    ///   `data.mix`) when the objective uses them.
    public func makeModel(classes: Int = 0) throws -> ReLICv2Model {
        let options = ModelOptions(classes: 0, dropPath: Float(config.model.dropPath), zeroInitResidual: config.model.zeroInitResidual,
                                   baseWidth: config.model.baseWidth > 0 ? config.model.baseWidth : nil,
                                   stemPatch: config.model.stemPatch, layerScaleInit: Float(config.model.layerScaleInit))
        let mix = config.data.mix
        let classifiers = config.ssl.objective == .relicv2 ? [] :
            [("image", mix.image), ("video", mix.video), ("rgbd", mix.rgbd)].filter { $0.1 > 0 }.map { DatasetHeadsLayer.Head($0.0, classes: classes) }
        let heads = ReLICv2Model.Heads(projectorHidden: config.ssl.projectorHidden, projection: config.ssl.projectorDim,
                                       predictorHidden: config.ssl.predictorHidden, classifiers: classifiers)
        return try ReLICv2Model(backbone: Self.backboneName(config.model), options: options, heads: heads,
                                seed: UInt64(config.run.seed))
    }

    /// Trains for `run.steps` steps on `source`, then evaluates on `evaluation` if given.
    /// - Parameters:
    ///   - resume: a checkpoint to continue from (`source` must start at its step).
    ///   - preemption: stops the run after the current step, with a checkpoint, when signalled.
    ///   - stopAfter: steps this invocation runs at most before saving and stopping as if
    ///     preempted (time-sliced allocations); nil runs to `run.steps`.
    public func run(source: MultiViewSource, evaluation: LabelledImageSource?, classes: Int,
                    resume: LoadedCheckpoint? = nil, preemption: PreemptionSignal? = nil, stopAfter: Int? = nil) throws -> Summary {
        let model = try makeModel(classes: classes)
        let o = config.optim
        let settings = OptimizerSettings(kind: OptimizerKind(rawValue: o.name.rawValue)!, weightDecay: Float(o.weightDecay),
                                         momentum: Float(o.momentum), beta1: Float(o.beta1), beta2: Float(o.beta2),
                                         epsilon: Float(o.eps), trustCoefficient: Float(o.trustCoefficient))
        let step = ReLICv2Step(
            model: model,
            loss: ReLICv2Loss(temperature: Float(config.ssl.temperature), alpha: Float(config.ssl.alpha), beta: Float(config.ssl.beta)),
            optimizer: settings.make(for: model.online),
            learningRate: WarmupCosineSchedule(base: o.lr, final: o.minLr, warmupSteps: o.warmupSteps, totalSteps: config.run.steps),
            momentum: MomentumSchedule(base: config.ssl.emaBase, final: config.ssl.emaFinal, totalSteps: config.run.steps),
            queueSize: config.ssl.queueSize, communicator: communicator, pool: pool, seed: UInt64(config.run.seed),
            bucketCap: config.dist.bucketMb > 0 ? .bytes(Int(config.dist.bucketMb * 1_048_576)) : .unbounded,
            objective: config.ssl.objective, synchronizeBatchNorm: config.dist.syncBn)

        let coordinator = communicator.isCoordinator
        let store = checkpointStore
        let configYAML = try ConfigLoader.yaml(of: config)
        var firstStep = 0
        if let resume {
            firstStep = try restore(resume, model: model, step: step)
            logger.info("resumed", metadata: ["checkpoint": "\(resume.url.path)", "step": "\(firstStep)"])
        }
        func save(after completed: Int) throws -> URL {
            try store.save(checkpointContent(model: model, step: step, completed: completed, config: configYAML),
                           communicator: communicator)
        }
        let metrics = coordinator ? try MetricsLog(directory: runDirectory) : nil
        if coordinator {
            try ConfigLoader.yaml(of: config).write(to: runDirectory.appendingPathComponent("config.yaml"),
                                                            atomically: true, encoding: .utf8)
            logger.info("pretraining", metadata: ["backbone": "\(model.backbone.name)", "parameters": "\(model.online.trainableCount)",
                                                  "steps": "\(config.run.steps)", "run": "\(runDirectory.path)"])
        }
        let evaluator = FrozenFeatureEvaluation(model: model, pool: pool)
        let probe = LinearProbe(epochs: config.eval.probeEpochs)
        let knn = KNearestNeighbours(k: config.eval.knnK, temperature: Float(config.eval.knnTemperature))
        let onlineProbe = config.eval.onlineProbe && coordinator
            ? OnlineProbe(model: model, classes: classes, learningRate: config.eval.onlineProbeLr, pool: pool) : nil
        var initial: (probe: LinearProbe.Result, knnTop1: Double)?
        if config.eval.linearProbe, let evaluation, coordinator, resume == nil {
            initial = try evaluator.run(source: evaluation, probe: probe, knn: knn)
            logger.info("probe before training", metadata: ["top1": "\(initial!.probe.top1)", "knn_top1": "\(initial!.knnTop1)"])
        }
        let progress = coordinator ? ProgressDisplay(totalSteps: config.run.steps, every: config.run.logEvery) : nil
        let started = Date()
        var last: ReLICv2Step.Result?
        var lastCheckpoint: URL?
        var preempted = false
        var completed = firstStep
        var losses: [Double] = []
        // The coordinator may have spent minutes on the probe above while the others waited: meet
        // first, then arm stalled-rank detection for the loop, where every rank does the same work.
        try communicator.barrier()
        communicator.setTimeout(config.dist.timeoutSeconds > 0 ? config.dist.timeoutSeconds : nil)
        defer { communicator.setTimeout(nil) }
        for index in firstStep..<config.run.steps {
            communicator.enterStep(index + 1)
            stallIfInjected(step: index + 1)
            let batch = try source.batch(step: index, rank: communicator.rank, worldSize: communicator.worldSize)
            let result = try step.run(step: index, batch: batch)
            onlineProbe?.update(batch)
            last = result
            losses.append(Double(result.loss.total))
            completed = index + 1
            progress?.update(step: index, loss: Double(result.loss.total), learningRate: result.learningRate,
                             samples: batch.samples * communicator.worldSize)
            if let metrics, (index + 1) % config.run.logEvery == 0 || index + 1 == config.run.steps {
                let seconds = Date().timeIntervalSince(started)
                try metrics.record(step: index + 1, kind: "train", values: [
                    "loss": Double(result.loss.total), "contrastive": Double(result.loss.contrastive),
                    "divergence": Double(result.loss.divergence), "lr": result.learningRate, "ema_momentum": result.momentum,
                    "grad_norm": result.gradientNorm, "supervised": Double(result.supervised),
                    "allreduce_wait_ms": result.allReduceWaitSeconds * 1000,
                    "buckets_overlapped": Double(result.overlappedBuckets), "buckets": Double(result.buckets),
                    "images_per_second": Double((index + 1 - firstStep) * config.data.batchSize) / max(seconds, 1e-9),
                ])
                if let onlineProbe { try metrics.record(step: index + 1, kind: "train", values: onlineProbe.drain()) }
            }
            if communicator.worldSize > 1 && (index + 1) % config.dist.emaCheckEvery == 0 {
                try checkTargetReplicas(model: model, step: index + 1)
            }
            let every = config.checkpoint.everySteps
            let sliceOver = stopAfter.map { index + 1 - firstStep >= $0 && index + 1 < config.run.steps } ?? false
            if try sliceOver || preemption?.agreed(communicator) == true {
                lastCheckpoint = try save(after: index + 1)
                logger.notice("preempted: saved a checkpoint and stopping", metadata: ["step": "\(index + 1)"])
                preempted = true
                break
            }
            if index + 1 == config.run.steps || (every > 0 && (index + 1) % every == 0) {
                lastCheckpoint = try save(after: index + 1)
            }
        }
        let stepsRun = completed - firstStep
        let imagesPerSecond = Double(stepsRun * config.data.batchSize) / max(Date().timeIntervalSince(started), 1e-9)
        var summary = Summary(steps: config.run.steps, finalLoss: Double(last?.loss.total ?? .nan), imagesPerSecond: imagesPerSecond,
                              initialProbe: initial?.probe, initialKnnTop1: initial?.knnTop1, stepsRun: stepsRun,
                              preempted: preempted, lastCheckpoint: lastCheckpoint?.path,
                              lossByFifth: Summary.blockMeans(losses, parts: 5))
        if config.eval.linearProbe, let evaluation, coordinator, !preempted {
            let result = try evaluator.run(source: evaluation, probe: probe, knn: knn)
            summary.probe = result.probe
            summary.knnTop1 = result.knnTop1
            try metrics?.record(step: config.run.steps, kind: "probe", values: [
                "top1": result.probe.top1, "top5": result.probe.top5, "knn_top1": result.knnTop1,
                "initial_top1": initial?.probe.top1 ?? .nan, "initial_knn_top1": initial?.knnTop1 ?? .nan,
            ])
        }
        try metrics?.flush()
        return summary
    }
}

extension Pretrainer {
    /// Fault injection for the stalled-rank test: `KALEIDO_FAULT_STALL=rank:step` makes that rank
    /// stop before that step while staying alive, as a hung file system or a deadlock would.
    func stallIfInjected(step: Int) {
        guard ProcessInfo.processInfo.environment["KALEIDO_FAULT_STALL"] == "\(communicator.rank):\(step)" else { return }
        logger.warning("fault injection: stalling", metadata: ["step": "\(step)"])
        Thread.sleep(forTimeInterval: 3600)
    }

    /// The coordinator's periodic check that every rank's target network is the same; a rank
    /// that differs gets rank 0's, and the log says which.
    func checkTargetReplicas(model: ReLICv2Model, step: Int) throws {
        if let fault = ProcessInfo.processInfo.environment["KALEIDO_FAULT_PERTURB_TARGET"],
           fault == "\(communicator.rank):\(step)" {
            // Fault injection for the consistency test: this rank's target drifts.
            model.target.values.pointer[0] += 1
        }
        // Trainable weights must agree; BatchNorm statistics legitimately differ with per-rank BN.
        let target = UnsafeMutableBufferPointer(start: model.target.values.pointer, count: model.target.count)
        let weights = model.target.entries.filter { $0.spec.role.isTrainable && $0.offset < model.targetFloats }
            .map { $0.offset..<($0.offset + $0.count) }
        let repaired = try ReplicaConsistency.enforce(target, compared: weights, communicator: communicator)
        if !repaired.isEmpty && communicator.isCoordinator {
            logger.warning("target networks differed; re-broadcast rank 0's",
                           metadata: ["step": "\(step)", "ranks": "\(repaired.map(String.init).joined(separator: ","))"])
        }
    }

    /// Everything a bit-exact resume needs, after `completed` steps.
    func checkpointContent(model: ReLICv2Model, step: ReLICv2Step, completed: Int, config yaml: String) throws -> CheckpointContent {
        let layout = LayoutEntry.of(model.online)
        var arrays = [SavedArray(name: "online", arena: model.online), SavedArray(name: "target", arena: model.target)]
        for (name, storage) in step.optimizer.state {
            arrays.append(SavedArray(name: "optimizer.\(name)", borrowing: UnsafeBufferPointer(start: storage.pointer, count: storage.count),
                                     layout: layout))
        }
        if let queue = step.queue { arrays.append(SavedArray(name: "queue", values: queue.values)) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return CheckpointContent(step: completed, config: yaml, arrays: arrays,
                                 optimizer: OptimizerRecord(kind: config.optim.name.rawValue, stepCount: step.optimizer.stepCount),
                                 schedulerStep: completed, queueSize: step.queue?.capacity,
                                 blobs: ["rng": try encoder.encode(step.randomState)])
    }

    /// Restores a checkpoint into the model and step; returns the number of completed steps.
    func restore(_ checkpoint: LoadedCheckpoint, model: ReLICv2Model, step: ReLICv2Step) throws -> Int {
        try checkpoint.restore("online", into: model.online)
        try checkpoint.restore("target", into: model.target)
        for (name, storage) in step.optimizer.state {
            try checkpoint.restore("optimizer.\(name)", into: UnsafeMutableBufferPointer(start: storage.pointer, count: storage.count))
        }
        step.optimizer.stepCount = checkpoint.optimizer?.stepCount ?? checkpoint.step
        if let queue = step.queue, checkpoint.arrayNames.contains("queue") { queue.values = try checkpoint.array("queue") }
        if let rng = checkpoint.blobs["rng"] { step.randomState = try JSONDecoder().decode(SplitMix64.self, from: rng) }
        return checkpoint.step
    }
}

/// Frozen-feature evaluation of the online backbone (eval mode: BN running statistics).
public struct FrozenFeatureEvaluation {
    let model: ReLICv2Model
    let pool: ComputePool
    public var batchSize = 128

    public init(model: ReLICv2Model, pool: ComputePool) {
        self.model = model
        self.pool = pool
    }

    public func features(_ source: LabelledImageSource, split: EvaluationSplit) throws -> FeatureSet {
        let context = RunContext(arena: model.online, pool: pool, training: false, recordsForBackward: false)
        let total = source.count(split: split)
        let dimension = model.backbone.featureDimension
        let features = Tensor(zeros: [total, dimension])
        var labels: [Int32] = []
        var start = 0
        while start < total {
            let range = start..<min(total, start + batchSize)
            let (images, batchLabels) = try source.images(split: split, range: range)
            let out = model.features(images, context)
            (features.pointer + start * dimension).update(from: out.pointer, count: range.count * dimension)
            labels += batchLabels
            context.activations.reset()
            start = range.upperBound
        }
        return FeatureSet(features: features, labels: labels)
    }

    public func run(source: LabelledImageSource, probe: LinearProbe, knn: KNearestNeighbours) throws
        -> (probe: LinearProbe.Result, knnTop1: Double) {
        let train = try features(source, split: .train), validation = try features(source, split: .validation)
        let result = probe.evaluate(train: train, test: validation, classes: source.classes, pool: pool)
        let top1 = knn.top1(train: train, test: validation, classes: source.classes, pool: pool)
        return (result, top1)
    }
}
