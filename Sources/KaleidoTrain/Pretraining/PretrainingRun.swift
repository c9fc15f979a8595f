import Foundation
import KaleidoCheckpoint
import KaleidoData
import KaleidoDist
import Logging

/// Everything `kaleido pretrain` does once the config is resolved and the communicator is up:
/// checks the rules that depend on the number of ranks, opens the data, finds the checkpoint to
/// resume from, starts the prefetching loader at its step, trains, evaluates, and returns the
/// summary. The CLI parses, calls this and prints; tests call it directly.
public struct PretrainingRun {
    public let resolved: ResolvedConfig
    /// `auto` (the newest valid checkpoint of the run, or start fresh) or a checkpoint directory.
    public var resume: String?
    /// Steps to run at most before saving and stopping as if preempted.
    public var stopAfter: Int?
    public var preemption: PreemptionSignal?
    public var faults: FaultInjection
    /// Keys (`data.batch_size`, …) whose change since the checkpoint a resume accepts although
    /// they alter the run (`--resume-allow`); see `ResumeConfigCheck`.
    public var resumeAllowed: Set<String>

    public init(resolved: ResolvedConfig, resume: String? = nil, resumeAllowed: Set<String> = [], stopAfter: Int? = nil,
                preemption: PreemptionSignal? = nil, faults: FaultInjection = .none) {
        self.resolved = resolved
        self.resume = resume
        self.resumeAllowed = resumeAllowed
        self.stopAfter = stopAfter
        self.preemption = preemption
        self.faults = faults
    }

    /// A config built in code (tests): its values have no file or override to point errors at.
    public init(config: KaleidoConfig, resume: String? = nil, resumeAllowed: Set<String> = [], stopAfter: Int? = nil) {
        self.init(resolved: ResolvedConfig(config: config, origins: [:]), resume: resume, resumeAllowed: resumeAllowed, stopAfter: stopAfter)
    }

    public var config: KaleidoConfig { resolved.config }

    public func run(communicator: Communicator, threads: Int) throws -> (summary: Pretrainer.Summary, runDirectory: URL) {
        try resolved.validate(worldSize: communicator.worldSize)
        let pretrainer = Pretrainer(config: config, communicator: communicator, threads: threads, faults: faults)
        let lock = try lockRunDirectory(pretrainer.runDirectory, communicator: communicator)
        defer { lock?.release() }
        let pipeline = try DataPipeline(config.dataConfiguration, split: .train)
        pretrainer.loaderState = { pipeline.state(at: $0) }
        // Every rank loads the checkpoint (each needs the full arrays); `auto` without one starts fresh.
        var checkpoint: LoadedCheckpoint?
        if let resume {
            let url = resume == "auto" ? pretrainer.checkpointStore.newestValid() : URL(fileURLWithPath: resume)
            checkpoint = try url.map { try pretrainer.checkpointStore.load($0) }
        }
        var start = LoaderState.start
        if let checkpoint {
            let changes = try checkResumedConfig(checkpoint, coordinator: communicator.isCoordinator)
            start = pipeline.state(at: checkpoint.step)
            // The saved position must be where this configuration's stream is at that step:
            // a changed batch, mix, mix mode or dataset would silently train on other samples
            // (unless the user accepted a change of the data with --resume-allow).
            if let saved = checkpoint.blobs["loader"], !changes.allowed.contains(where: { $0.keyPath.hasPrefix("data.") }) {
                let state = try JSONDecoder().decode(LoaderState.self, from: saved)
                _ = try pipeline.resume(from: state)
            }
        }
        let loader = try DataLoader(pipeline: pipeline, rank: communicator.rank, worldSize: communicator.worldSize, state: start)
        defer { loader.stop() }
        let evaluation = config.eval.linearProbe && communicator.isCoordinator ? try PretrainingEvaluation(config: config) : nil
        let source = LoaderSource(loader: loader, crossModalViews: config.ssl.crossModalViews)
        let summary = try pretrainer.run(source: source, evaluation: evaluation, classes: pipeline.classes.count,
                                         resume: checkpoint, preemption: preemption, stopAfter: stopAfter)
        return (summary, pretrainer.runDirectory)
    }
}

extension PretrainingRun {
    /// Rank 0 locks the run directory (the ranks write it through rank 0 and into shared
    /// checkpoint directories); every rank learns whether it could, so all stop together when
    /// another run holds it.
    func lockRunDirectory(_ directory: URL, communicator: Communicator) throws -> RunDirectoryLock? {
        var lock: RunDirectoryLock?
        var failure: Error?
        if communicator.isCoordinator {
            do {
                lock = try RunDirectoryLock(directory: directory)
            } catch {
                failure = error
            }
        }
        var failed: [UInt64] = [failure == nil ? 0 : 1]
        try failed.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        if let failure { throw failure }
        if failed[0] > 0 { throw TrainingError.rankFailed(rank: 0, what: "lock the run directory \(directory.path)") }
        let logger = Logger(label: "kaleido.pretrain")
        if let lock, let stale = lock.staleHolder {
            logger.warning("took over a stale run-directory lock (its holder is gone)", metadata: ["holder": "\(stale)", "lock": "\(lock.path)"])
        }
        if let lock, lock.unsupported {
            logger.warning("the file system does not support flock: two runs in this run directory would not be refused",
                           metadata: ["lock": "\(lock.path)"])
        }
        return lock
    }

    /// Compares the checkpoint's config with this run's: refuses changed keys that alter the run
    /// unless `resumeAllowed` names them; logs every accepted change (old → new) on the coordinator.
    func checkResumedConfig(_ checkpoint: LoadedCheckpoint, coordinator: Bool) throws -> ResumeConfigCheck {
        let check = try ResumeConfigCheck(saved: checkpoint.config, current: config, allowing: resumeAllowed)
        guard check.refused.isEmpty else { throw ConfigError.resumeChanged(checkpoint: checkpoint.url.path, changes: check.refused) }
        if coordinator {
            let logger = Logger(label: "kaleido.pretrain")
            for change in check.allowed {
                logger.warning("resuming with a changed key that alters the run (--resume-allow)", metadata: ["change": "\(change)"])
            }
            for change in check.accepted { logger.warning("resuming with a changed key", metadata: ["change": "\(change)"]) }
        }
        return check
    }
}

extension Pretrainer.Summary {
    /// What `kaleido pretrain` prints when the run ends: the loss, its trend, per modality the
    /// probe and kNN next to the network before training, and cross-modal retrieval next to chance.
    /// An image-only run keeps the unlabelled lines it has always printed.
    public func report(knnK: Int) -> [String] {
        var lines = [String(format: "pretrained %d steps: final loss %.4f, %.1f images/s", steps, finalLoss, imagesPerSecond)]
        if lossByFifth.count > 1 {
            lines.append("mean loss by fifth of the run: " + lossByFifth.map { String(format: "%.3f", $0) }.joined(separator: " → ")
                         + (lossFellMonotonically ? "  (falls monotonically)" : "  (not monotonic)"))
        }
        guard let evaluation else { return lines }
        let labelled = evaluation.modalities.count > 1
        for score in evaluation.modalities {
            let before = initialEvaluation?.modality(score.modality)
            let tag = labelled ? " [\(score.modality)]" : ""
            lines.append("linear probe\(tag): " + String(format: "top-1 %.1f%%  top-5 %.1f%%   (before training: top-1 %.1f%%)",
                                score.probe.top1 * 100, score.probe.top5 * 100, (before?.probe.top1 ?? .nan) * 100))
            lines.append("kNN (k=\(knnK))\(tag):   " + String(format: "top-1 %.1f%%                (before training: top-1 %.1f%%)",
                                score.knnTop1 * 100, (before?.knnTop1 ?? .nan) * 100))
        }
        for pair in evaluation.retrieval {
            let before = initialEvaluation?.retrieval.first { $0.query == pair.query && $0.gallery == pair.gallery }
            lines.append("retrieval \(pair.query) → \(pair.gallery): " + String(format: "recall@1 %.1f%%  (chance %.1f%%, before training %.1f%%)",
                                pair.recallAt1 * 100, pair.chanceAt1 * 100, (before?.recallAt1 ?? .nan) * 100))
        }
        return lines
    }
}
