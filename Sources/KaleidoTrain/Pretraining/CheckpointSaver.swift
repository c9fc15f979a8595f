import Foundation
import KaleidoCheckpoint
import KaleidoDist
import KaleidoTensor
import Logging

/// The training loop's checkpoint saves, blocking or in the background (`checkpoint.async`),
/// and what each costs the run.
///
/// A background save stages this rank's slices at the step boundary (`beginSave`) and is written
/// by a low-priority thread while the next steps run. It is committed — a collective: manifest,
/// rename, prune — at the first step boundary where every rank's shard is written (agreed with
/// the per-step all-reduce the loop already makes for preemption), or earlier when the next save,
/// the end of the run or a preemption has to wait for it. A failed shard on any rank stops every
/// rank with the error there, and the previous checkpoint stays the newest.
///
/// The cost of a save is its stall: for a blocking save its duration; for a background one the
/// staging at the step boundary, the commit, and the extra time of the steps in its window
/// (staging to commit) over the median of the latest steps without a save window. Both are
/// logged per save and written to metrics.jsonl (`kind: checkpoint`).
final class CheckpointSaver {
    let store: CheckpointStore
    let communicator: Communicator
    let background: Bool
    let metrics: MetricsLog?
    /// The training threads, which copy a background save's state at the step boundary.
    let copyPool: ComputePool
    let logger = Logger(label: "kaleido.checkpoint")

    private struct Window {
        var save: PendingCheckpointSave
        /// The step boundary's part: building the content and staging it.
        var beginSeconds: Double
        var stepSeconds: [Double] = []
    }
    private var pending: Window?
    /// Reused by every background save, so only the first one maps fresh pages.
    private let staging = CheckpointStagingBuffer()
    /// The steps outside any save window: the baseline of a stall.
    private var stall = StallEstimate()
    /// The newest committed checkpoint.
    private(set) var lastCommitted: URL?

    init(store: CheckpointStore, communicator: Communicator, background: Bool, metrics: MetricsLog?, copyPool: ComputePool) {
        self.store = store
        self.communicator = communicator
        self.background = background
        self.metrics = metrics
        self.copyPool = copyPool
    }

    /// Maps the staging buffer for arrays of these sizes while the first steps run (background
    /// saves only), so the first save's staging is a copy like every later one.
    func prepareStaging(arrayCounts: [Int]) {
        guard background else { return }
        staging.prepare(floats: CheckpointContent.stagedFloats(arrayCounts: arrayCounts, rank: communicator.rank,
                                                               worldSize: communicator.worldSize))
    }

    /// Whether a background save is in flight (the loop then agrees on its progress every step).
    var isWriting: Bool { pending != nil }

    /// This rank's contribution to the per-step agreement: 1 when its shard is written.
    var shardWritten: UInt64 { pending?.save.isWritten == true ? 1 : 0 }

    /// Records a finished step's duration, in the open save window or as a quiet step.
    func stepFinished(seconds: Double) {
        if pending != nil {
            pending!.stepSeconds.append(seconds)
        } else {
            stall.recordQuietStep(seconds: seconds)
        }
    }

    /// Saves `content` after step `step`. `wait` (the end of the run, a preemption) or a blocking
    /// store writes it now; otherwise it is staged and written in the background. A background
    /// save still in flight is committed first.
    func save(_ content: @autoclosure () throws -> CheckpointContent, step: Int, wait: Bool) throws {
        try commitPending()
        let started = DispatchTime.now().uptimeNanoseconds
        if background && !wait {
            let save = try store.beginSave(try content(), communicator: communicator, staging: staging, copyPool: copyPool,
                                             yieldingToTraining: true)
            pending = Window(save: save, beginSeconds: Self.seconds(since: started))
            return
        }
        lastCommitted = try store.save(try content(), communicator: communicator)
        let seconds = Self.seconds(since: started)
        try report(step: step, values: ["stall_seconds": seconds, "save_seconds": seconds, "async": 0])
    }

    /// Commits the background save when every rank has written its shard (`written` ranks, from
    /// the per-step agreement).
    func commitIfWritten(ranks written: UInt64) throws {
        if pending != nil && written == UInt64(communicator.worldSize) { try commitPending() }
    }

    /// Waits for the background save in flight, if any, and commits it.
    func commitPending() throws {
        guard let window = pending else { return }
        pending = nil
        let started = DispatchTime.now().uptimeNanoseconds
        lastCommitted = try window.save.finish(communicator: communicator)
        let commit = Self.seconds(since: started)
        // What training lost: the step boundary's staging, the commit (with any wait for the
        // shard), and the steps of the window beyond the latest quiet steps.
        let stallSeconds = stall.seconds(window: window.stepSeconds, boundary: window.beginSeconds + commit)
        try report(step: window.save.step, values: [
            "stall_seconds": stallSeconds ?? .nan, "staging_ms": window.save.stagingSeconds * 1000,
            "commit_ms": commit * 1000, "save_seconds": window.save.writeSeconds ?? .nan,
            "window_steps": Double(window.stepSeconds.count), "async": 1,
        ])
    }

    static func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    private func report(step: Int, values: [String: Double]) throws {
        guard communicator.isCoordinator else { return }
        let text = values.keys.sorted().map { key in "\(key)=\(String(format: "%.3f", values[key]!))" }.joined(separator: " ")
        logger.info("checkpoint cost", metadata: ["step": "\(step)", "measured": "\(text)"])
        try metrics?.record(step: step, kind: "checkpoint", values: values)
    }
}

/// What a background save cost the training: the time spent at step boundaries (staging, commit)
/// plus the extra time of the steps in its window over the median of the latest quiet steps.
struct StallEstimate {
    /// How many quiet steps the baseline keeps. Few, so it is the machine's speed of the last
    /// minute: on shared VMs the step time moves between levels minutes apart (on the Zen 4 of
    /// BENCHMARKS.md, 2.12 and 2.35 s for ResNet-50), and a median over the last 50 steps
    /// charged a slow minute to the saves in it and hid a save's cost in a fast one.
    static let baselineSteps = 9
    private(set) var quietSteps: [Double] = []

    mutating func recordQuietStep(seconds: Double) {
        quietSteps.append(seconds)
        if quietSteps.count > Self.baselineSteps { quietSteps.removeFirst(quietSteps.count - Self.baselineSteps) }
    }

    /// boundary + max(0, Σ (window step − median quiet step)); nil before any quiet step. Noise
    /// in single steps averages out over the window; only the total is clamped.
    func seconds(window: [Double], boundary: Double) -> Double? {
        Self.median(quietSteps).map { base in boundary + max(0, window.reduce(0) { $0 + $1 - base }) }
    }

    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
}
