import Foundation
import KaleidoCheckpoint
import KaleidoData
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
    let faults: FaultInjection
    let pool: ComputePool
    let logger = Logger(label: "kaleido.pretrain")

    /// Saves the data loader's position with each checkpoint (set by `PretrainingRun`): a
    /// resume then checks that the data, mix and batch still describe the same sample stream.
    public var loaderState: ((Int) -> LoaderState)?

    public struct Summary: Codable, Sendable {
        public var steps: Int
        public var finalLoss: Double
        public var imagesPerSecond: Double
        /// Probes, kNN and retrieval after training, and of the same network before training:
        /// what "it learned" is measured against (nil when not evaluated).
        public var evaluation: PretrainingEvaluation.Scores?
        public var initialEvaluation: PretrainingEvaluation.Scores?
        /// Steps this invocation ran (fewer than `steps` after a resume or a preemption).
        public var stepsRun = 0
        /// Stopped early (a signal, or the end of a `stopAfter` slice) after saving a checkpoint.
        public var preempted = false
        /// The signal that stopped it (`SIGTERM`, `SIGUSR1`, `SIGINT`), nil for a slice's end.
        public var stopSignal: String?
        public var lastCheckpoint: String?
        /// Mean loss over each fifth of the steps this invocation ran: a single step's loss is too
        /// noisy (random crops, one batch) to say whether training is still improving.
        public var lossByFifth: [Double] = []

        public init(steps: Int, finalLoss: Double, imagesPerSecond: Double) {
            self.steps = steps
            self.finalLoss = finalLoss
            self.imagesPerSecond = imagesPerSecond
        }

        /// The first modality's (the image one's in an image run) linear probe, and kNN top-1.
        public var probe: LinearProbe.Result? { evaluation?.modalities.first?.probe }
        public var knnTop1: Double? { evaluation?.modalities.first?.knnTop1 }

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
                        zstdLevel: config.checkpoint.zstdLevel, pause: faults.savePause)
    }

    public init(config: KaleidoConfig, communicator: Communicator, threads: Int, faults: FaultInjection = .none) {
        self.config = config
        self.communicator = communicator
        self.faults = faults
        // Matrix products are cut into pieces the pool's threads take in turn, each a
        // single-threaded OpenBLAS call: OpenBLAS's own workers spin in sched_yield between calls
        // and compete with the pool (a third of the step on 2 cores; see BENCHMARKS.md).
        self.pool = ComputePool(threads: threads, splitsMatrixProducts: true)
        BLAS.threadCount = 1
        runDirectory = URL(fileURLWithPath: config.run.outputDir).appendingPathComponent(config.run.name)
    }

    /// The datasets (modalities) of the run, in the order image, video, rgbd.
    var datasets: [String] {
        let mix = config.data.mix
        return [("image", mix.image), ("video", mix.video), ("rgbd", mix.rgbd)].filter { $0.1 > 0 }.map(\.0)
    }

    /// - Parameter classes: classes of the data, for the supervised heads (one per modality in
    ///   `data.mix`, `heads.<modality>`) when the objective uses them.
    public func makeModel(classes: Int = 0) throws -> ReLICv2Model {
        var options = config.model.zooOptions
        options.dropPath = Float(config.model.dropPath)
        let classifiers = config.ssl.objective == .relicv2 ? [] : datasets.map { DatasetHeadsLayer.Head($0, classes: classes) }
        let heads = ReLICv2Model.Heads(projectorHidden: config.ssl.projectorHidden, projection: config.ssl.projectorDim,
                                       predictorHidden: config.ssl.predictorHidden, classifiers: classifiers)
        return try ReLICv2Model(backbone: config.model.arch.zooName(cifarStem: config.model.cifarStem), options: options,
                                heads: heads, seed: UInt64(config.run.seed))
    }

    func makeStep(_ model: ReLICv2Model) -> TrainingStep {
        let o = config.optim
        let settings = OptimizerSettings(kind: o.name, weightDecay: Float(o.weightDecay),
                                         momentum: Float(o.momentum), beta1: Float(o.beta1), beta2: Float(o.beta2),
                                         epsilon: Float(o.eps), trustCoefficient: Float(o.trustCoefficient))
        return TrainingStep(
            model: model,
            loss: ReLICv2Loss(temperature: Float(config.ssl.temperature), alpha: Float(config.ssl.alpha), beta: Float(config.ssl.beta)),
            optimizer: settings.make(for: model.online),
            learningRate: WarmupCosineSchedule(base: o.lr, final: o.minLr, warmupSteps: o.warmupSteps, totalSteps: config.run.steps),
            momentum: MomentumSchedule(base: config.ssl.emaBase, final: config.ssl.emaFinal, totalSteps: config.run.steps),
            queueSize: config.ssl.queueSize, communicator: communicator, pool: pool, seed: UInt64(config.run.seed),
            bucketCap: config.dist.bucketMb > 0 ? .bytes(Int(config.dist.bucketMb * 1_048_576)) : .unbounded,
            objective: config.ssl.objective, synchronizeBatchNorm: config.dist.syncBn, datasets: datasets)
    }

    /// Trains for `run.steps` steps on `source`, then evaluates on `evaluation` if given.
    /// - Parameters:
    ///   - resume: a checkpoint to continue from (`source` must start at its step).
    ///   - preemption: stops the run after the current step, with a checkpoint, when signalled.
    ///   - stopAfter: steps this invocation runs at most before saving and stopping as if
    ///     preempted (time-sliced allocations); nil runs to `run.steps`.
    public func run(source: MultiViewSource, evaluation: PretrainingEvaluation?, classes: Int,
                    resume: LoadedCheckpoint? = nil, preemption: PreemptionSignal? = nil, stopAfter: Int? = nil) throws -> Summary {
        let model = try makeModel(classes: classes)
        let step = makeStep(model)
        var firstStep = 0
        if let resume {
            firstStep = try restore(resume, model: model, step: step)
            logger.info("resumed", metadata: ["checkpoint": "\(resume.url.path)", "step": "\(firstStep)"])
        } else if !config.model.`init`.isEmpty {
            let report = try InitialWeights.load(config.model.`init`, ignoring: config.model.initIgnore, into: model)
            logger.info("encoder initialised from a file", metadata: ["model.init": "\(config.model.`init`)", "tensors": "\(report.loaded.count)",
                                                                     "converted_to_f32": "\(report.converted.count)",
                                                                     "fresh": "\(report.missing.joined(separator: ","))"])
        }
        let coordinator = communicator.isCoordinator
        let metrics = coordinator ? try MetricsLog(directory: runDirectory) : nil
        if coordinator {
            try ConfigLoader.yaml(of: config).write(to: runDirectory.appendingPathComponent("config.yaml"), atomically: true, encoding: .utf8)
            logger.info("pretraining", metadata: ["backbone": "\(model.backbone.name)", "parameters": "\(model.online.trainableCount)",
                                                  "steps": "\(config.run.steps)", "run": "\(runDirectory.path)"])
        }
        let evaluator = coordinator ? evaluation : nil
        var summary = Summary(steps: config.run.steps, finalLoss: .nan, imagesPerSecond: 0)
        if let evaluator, config.eval.linearProbe, resume == nil {
            summary.initialEvaluation = try evaluator.run(model: model, pool: pool)
            logger.info("probe before training", metadata: ["scores": "\(summary.initialEvaluation!.brief)"])
        }
        try train(model: model, step: step, from: firstStep, source: source, metrics: metrics, classes: classes,
                  preemption: preemption, stopAfter: stopAfter, summary: &summary)
        if let evaluator, config.eval.linearProbe, !summary.preempted {
            let scores = try evaluator.run(model: model, pool: pool)
            summary.evaluation = scores
            try metrics?.record(step: config.run.steps, kind: "probe", values: Self.probeMetrics(scores, before: summary.initialEvaluation))
        }
        try metrics?.flush()
        return summary
    }

    /// The training loop from step `first`: steps, metrics, progress, replica checks, time
    /// slices, preemption and checkpoints.
    func train(model: ReLICv2Model, step: TrainingStep, from first: Int, source: MultiViewSource, metrics: MetricsLog?,
               classes: Int, preemption: PreemptionSignal?, stopAfter: Int?, summary: inout Summary) throws {
        let configYAML = try ConfigLoader.yaml(of: config)
        // The staging copy at a save's step boundary takes every core of the rank's share, also
        // those training leaves free (dist.threads below it): no thread of either kind is busy then,
        // and the copy took 20–21 ms on one Zen 4 core and 11–18 ms on two (BENCHMARKS.md).
        let coreShare = Distributed.threads(configured: 0)
        // Ranks sharing one process (in-process worlds) do not own the process's cores.
        let plan = Distributed.threadPlan(threads: pool.threads)
        let pinsWriter = config.checkpoint.pinWriter && plan.ownsItsCores && (communicator.worldSize == 1 || Distributed.launched())
        let saver = CheckpointSaver(store: checkpointStore, communicator: communicator, background: config.checkpoint.async, metrics: metrics,
                                    copyPool: pool.threads >= coreShare ? pool : ComputePool(threads: coreShare), pinsWriter: pinsWriter)
        defer { saver.releaseLoopThread() }
        if config.checkpoint.everySteps > 0 && config.checkpoint.everySteps < config.run.steps {
            saver.prepareStaging(arrayCounts: savedArrays(model: model, step: step).map(\.count))
        }
        func save(after completed: Int, wait: Bool) throws {
            try saver.save(try checkpointContent(model: model, step: step, completed: completed, config: configYAML), step: completed, wait: wait)
        }
        let onlineProbe = config.eval.onlineProbe && communicator.isCoordinator
            ? OnlineProbe(model: model, classes: classes, learningRate: config.eval.onlineProbeLr, pool: pool) : nil
        let progress = communicator.isCoordinator ? ProgressDisplay(totalSteps: config.run.steps, every: config.run.logEvery) : nil
        let started = Date()
        var losses: [Double] = []
        var completed = first
        // The coordinator may have spent minutes on the probe above while the others waited: meet
        // first, then arm stalled-rank detection for the loop, where every rank does the same work.
        try communicator.barrier()
        communicator.setTimeout(config.dist.timeoutSeconds > 0 ? config.dist.timeoutSeconds : nil)
        defer { communicator.setTimeout(nil) }
        for index in first..<config.run.steps {
            let stepStarted = DispatchTime.now().uptimeNanoseconds
            communicator.enterStep(index + 1)
            stallIfInjected(step: index + 1)
            let groups = try source.groups(step: index, rank: communicator.rank, worldSize: communicator.worldSize)
            let result = try step.run(step: index, groups: groups)
            for group in groups { onlineProbe?.update(group) }
            let stepSeconds = Double(DispatchTime.now().uptimeNanoseconds - stepStarted) / 1e9
            try saver.stepFinished(seconds: stepSeconds)
            losses.append(Double(result.loss.total))
            summary.finalLoss = Double(result.loss.total)
            completed = index + 1
            progress?.update(step: index, loss: Double(result.loss.total), learningRate: result.learningRate,
                             samples: groups.reduce(0) { $0 + $1.samples } * communicator.worldSize)
            if let metrics, (index + 1) % config.run.logEvery == 0 || index + 1 == config.run.steps {
                let rate = Double((index + 1 - first) * config.data.batchSize) / max(Date().timeIntervalSince(started), 1e-9)
                try metrics.record(step: index + 1, kind: "train",
                                   values: Self.trainMetrics(result, imagesPerSecond: rate, stepSeconds: stepSeconds))
                if let onlineProbe { try metrics.record(step: index + 1, kind: "train", values: onlineProbe.drain()) }
            }
            if communicator.worldSize > 1 && (index + 1) % config.dist.emaCheckEvery == 0 {
                try checkTargetReplicas(model: model, step: index + 1)
            }
            let agreed = try agreeAfterStep(preemption: preemption, saver: saver)
            try saver.commitIfWritten(ranks: agreed.shardsWritten)
            let every = config.checkpoint.everySteps
            let sliceOver = stopAfter.map { index + 1 - first >= $0 && index + 1 < config.run.steps } ?? false
            if sliceOver || agreed.stop {
                summary.stopSignal = sliceOver ? nil : preemption?.signalName ?? "a signal on another rank"
                try save(after: index + 1, wait: true)
                logger.notice("preempted: saved a checkpoint and stopping", metadata: ["step": "\(index + 1)"])
                summary.preempted = true
                break
            }
            if index + 1 == config.run.steps || (every > 0 && (index + 1) % every == 0) {
                try save(after: index + 1, wait: index + 1 == config.run.steps)
            }
        }
        try saver.commitPending()
        try saver.reportRemainingStalls()
        summary.lastCheckpoint = saver.lastCommitted?.path
        summary.stepsRun = completed - first
        summary.imagesPerSecond = Double(summary.stepsRun * config.data.batchSize) / max(Date().timeIntervalSince(started), 1e-9)
        summary.lossByFifth = Summary.blockMeans(losses, parts: 5)
    }

    /// One `train` row of metrics.jsonl: the step's loss, its parts, and each modality's own
    /// loss (`loss_video`, …) when the step held several.
    static func trainMetrics(_ result: TrainingStep.Result, imagesPerSecond: Double, stepSeconds: Double) -> [String: Double] {
        var values: [String: Double] = [
            "loss": Double(result.loss.total), "contrastive": Double(result.loss.contrastive),
            "divergence": Double(result.loss.divergence), "lr": result.learningRate, "ema_momentum": result.momentum,
            "grad_norm": result.gradientNorm, "supervised": Double(result.supervised),
            "allreduce_wait_ms": result.allReduceWaitSeconds * 1000,
            "buckets_overlapped": Double(result.overlappedBuckets), "buckets": Double(result.buckets),
            "images_per_second": imagesPerSecond, "step_seconds": stepSeconds,
        ]
        if result.groups.count > 1 {
            for group in result.groups { values["loss_\(group.dataset)"] = Double(group.loss.total) }
        }
        return values
    }

    /// The `probe` row: the first modality under today's keys (top1, knn_top1, …), every
    /// modality under suffixed keys, retrieval recall@1 and its chance level.
    static func probeMetrics(_ scores: PretrainingEvaluation.Scores, before: PretrainingEvaluation.Scores?) -> [String: Double] {
        var values: [String: Double] = [:]
        for (index, score) in scores.modalities.enumerated() {
            let initial = before?.modality(score.modality)
            let suffix = index == 0 ? "" : "_\(score.modality)"
            values["top1\(suffix)"] = score.probe.top1
            values["top5\(suffix)"] = score.probe.top5
            values["knn_top1\(suffix)"] = score.knnTop1
            values["initial_top1\(suffix)"] = initial?.probe.top1 ?? .nan
            values["initial_knn_top1\(suffix)"] = initial?.knnTop1 ?? .nan
            if scores.modalities.count > 1 && index == 0 {
                values["top1_\(score.modality)"] = score.probe.top1
                values["initial_top1_\(score.modality)"] = initial?.probe.top1 ?? .nan
            }
        }
        for pair in scores.retrieval {
            values["recall1_\(pair.query)_\(pair.gallery)"] = pair.recallAt1
            values["chance1_\(pair.query)_\(pair.gallery)"] = pair.chanceAt1
        }
        return values
    }
}

extension Pretrainer {
    /// The ranks' one agreement per step (an all-reduce of two counters, only when something needs
    /// it): whether any rank was signalled to stop, and how many ranks have written their shard
    /// of the background save in flight. Every rank then stops, or commits, after the same step.
    func agreeAfterStep(preemption: PreemptionSignal?, saver: CheckpointSaver) throws -> (stop: Bool, shardsWritten: UInt64) {
        guard preemption != nil || saver.isWriting else { return (false, 0) }
        var counts: [UInt64] = [preemption?.requested == true ? 1 : 0, saver.shardWritten]
        try counts.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        return (counts[0] > 0, counts[1])
    }

    /// See `FaultInjection.stall`.
    func stallIfInjected(step: Int) {
        guard faults.stall == .init(rank: communicator.rank, step: step) else { return }
        logger.warning("fault injection: stalling", metadata: ["step": "\(step)"])
        Thread.sleep(forTimeInterval: 3600)
    }

    /// The coordinator's periodic check that every rank's target network is the same; a rank
    /// that differs gets rank 0's, and the log says which.
    func checkTargetReplicas(model: ReLICv2Model, step: Int) throws {
        if faults.perturbTarget == .init(rank: communicator.rank, step: step) {
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

    /// Replaces every rank's BatchNorm running statistics (online and target) by their mean over
    /// the ranks. Without SyncBN each rank tracks the statistics of its own slice of the batch,
    /// and a checkpoint of per-rank slices would hold a patchwork of them; averaged, it holds the
    /// statistics of the global batch's running mean at any world size. Training never reads
    /// them (batch statistics), so the loss curve does not change. Collective.
    func averageBatchNormStatistics(_ model: ReLICv2Model) throws {
        guard communicator.worldSize > 1, !config.dist.syncBn else { return }
        let ranges = [model.online, model.target].flatMap { arena in
            arena.entries.filter { $0.spec.role == .buffer }.map { (arena.values.pointer + $0.offset, $0.count) }
        }
        var packed = [Float](repeating: 0, count: ranges.reduce(0) { $0 + $1.1 })
        guard !packed.isEmpty else { return }
        var offset = 0
        for (pointer, count) in ranges {
            packed.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: offset).update(from: pointer, count: count) }
            offset += count
        }
        try packed.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        let scale = 1 / Float(communicator.worldSize)
        offset = 0
        for (pointer, count) in ranges {
            for i in 0..<count { pointer[i] = packed[offset + i] * scale }
            offset += count
        }
    }

    /// Everything a bit-exact resume needs, after `completed` steps. Collective (it averages the
    /// ranks' BatchNorm statistics first).
    func checkpointContent(model: ReLICv2Model, step: TrainingStep, completed: Int, config yaml: String) throws -> CheckpointContent {
        try averageBatchNormStatistics(model)
        let arrays = savedArrays(model: model, step: step)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // No RNG state: the step's drop-path stream is keyed by (seed, step, rank) and the data's by
        // (seed, sample, view), so every rank's streams at step `completed` follow from the step.
        var blobs: [String: Data] = [:]
        if let loaderState { blobs["loader"] = try encoder.encode(loaderState(completed)) }
        return CheckpointContent(step: completed, config: yaml, arrays: arrays,
                                 optimizer: OptimizerRecord(kind: config.optim.name.rawValue, stepCount: step.optimizer.stepCount),
                                 schedulerStep: completed, queueSize: step.queues.first?.queue.capacity, blobs: blobs)
    }

    /// The float arrays of a checkpoint: both arenas and the optimiser state borrowed, the
    /// negative queues copied.
    func savedArrays(model: ReLICv2Model, step: TrainingStep) -> [SavedArray] {
        let layout = LayoutEntry.of(model.online)
        var arrays = [SavedArray(name: "online", arena: model.online), SavedArray(name: "target", arena: model.target)]
        for (name, storage) in step.optimizer.state {
            arrays.append(SavedArray(name: "optimizer.\(name)", borrowing: UnsafeBufferPointer(start: storage.pointer, count: storage.count),
                                     layout: layout))
        }
        for (name, queue) in step.queues { arrays.append(SavedArray(name: name, values: queue.values)) }
        return arrays
    }

    /// Restores a checkpoint into the model and step; returns the number of completed steps.
    func restore(_ checkpoint: LoadedCheckpoint, model: ReLICv2Model, step: TrainingStep) throws -> Int {
        try checkpoint.restore("online", into: model.online)
        try checkpoint.restore("target", into: model.target)
        for (name, storage) in step.optimizer.state {
            try checkpoint.restore("optimizer.\(name)", into: UnsafeMutableBufferPointer(start: storage.pointer, count: storage.count))
        }
        step.optimizer.stepCount = checkpoint.optimizer?.stepCount ?? checkpoint.step
        for (name, queue) in step.queues where checkpoint.arrayNames.contains(name) { queue.values = try checkpoint.array(name) }
        return checkpoint.step
    }
}
