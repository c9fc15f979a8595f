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
    /// Whether a background save keeps the loop thread and its writer on different cores
    /// (`checkpoint.pin_writer`, where the rank owns its cores).
    let pinsWriter: Bool
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
    /// The steps outside any save window, and the saves waiting for them: the baseline of a stall.
    private var stall = StallEstimate()
    /// The newest committed checkpoint.
    private(set) var lastCommitted: URL?
    /// The loop thread's cores while a save window keeps it to one of them.
    private var loopThreadCores: [Int]?

    init(store: CheckpointStore, communicator: Communicator, background: Bool, metrics: MetricsLog?, copyPool: ComputePool,
         pinsWriter: Bool = false) {
        self.store = store
        self.communicator = communicator
        self.background = background
        self.metrics = metrics
        self.copyPool = copyPool
        self.pinsWriter = pinsWriter
    }

    /// Keeps the loop thread (the caller) to the core it is on for a save window and returns the
    /// rank's other cores, the writer's; nil (nothing changed) with fewer than two cores.
    ///
    /// Why: the loop thread waits for the pool's workers at the end of every parallel loop,
    /// calling sched_yield, and a writer at SCHED_IDLE that shared its core got to run there —
    /// for up to a scheduler tick (4 ms at HZ=250), we believe, since nothing wakes the loop
    /// thread to preempt it. On the rank's other cores the writer runs while the workers sleep,
    /// and a waking worker takes its core back at once. ResNet-50 with both cores training, a
    /// save every 5 steps, medians of six runs each: 0.076–0.100 s per save with the writer
    /// free to share the loop thread's core, 0.015–0.043 s kept off it (BENCHMARKS.md).
    private func keepLoopThreadToItsCore() -> [Int]? {
        guard pinsWriter, loopThreadCores == nil, let cores = ThreadAffinity.currentThreadCores(), cores.count >= 2,
              let core = ThreadAffinity.currentCore(), cores.contains(core),
              ThreadAffinity.restrictCurrentThread(to: [core]) else { return nil }
        loopThreadCores = cores
        return cores.filter { $0 != core }
    }

    /// Gives the loop thread back its cores (after a save window; the loop calls it when it ends).
    func releaseLoopThread() {
        guard let cores = loopThreadCores else { return }
        loopThreadCores = nil
        if !ThreadAffinity.restrictCurrentThread(to: cores) {
            // A cpuset changed under the run: the loop thread stays on one core, which costs speed.
            logger.warning("could not give the training loop thread its cores back after a background save",
                           metadata: ["cores": "\(cores)", "now": "\(ThreadAffinity.currentThreadCores() ?? [])"])
        }
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

    /// Records a finished step's duration, in the open save window or as a quiet step (which may
    /// complete the cost of earlier saves: they are reported then).
    func stepFinished(seconds: Double) throws {
        if pending != nil {
            pending!.stepSeconds.append(seconds)
        } else {
            try reportStalls(stall.recordQuietStep(seconds: seconds))
        }
    }

    /// Reports the saves whose cost is still open, with the quiet steps seen so far (the end of
    /// the run).
    func reportRemainingStalls() throws {
        try reportStalls(stall.drain())
    }

    /// Saves `content` after step `step`. `wait` (the end of the run, a preemption) or a blocking
    /// store writes it now; otherwise it is staged and written in the background. A background
    /// save still in flight is committed first, and with `wait` the costs still open are reported
    /// before this save's.
    func save(_ content: @autoclosure () throws -> CheckpointContent, step: Int, wait: Bool) throws {
        try commitPending()
        if wait { try reportRemainingStalls() }
        let started = DispatchTime.now().uptimeNanoseconds
        if background && !wait {
            let writerCores = keepLoopThreadToItsCore()
            do {
                let save = try store.beginSave(try content(), communicator: communicator, staging: staging, copyPool: copyPool,
                                               yieldingToTraining: true, writerCores: writerCores)
                pending = Window(save: save, beginSeconds: Self.seconds(since: started))
            } catch {
                releaseLoopThread()
                throw error
            }
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
        defer { releaseLoopThread() }
        let started = DispatchTime.now().uptimeNanoseconds
        lastCommitted = try window.save.finish(communicator: communicator)
        let commit = Self.seconds(since: started)
        // What training lost: the step boundary's staging, the commit (with any wait for the
        // shard), and the steps of the window beyond the quiet steps around it (reported once
        // the steps after it have run).
        let values: [String: Double] = [
            "staging_ms": window.save.stagingSeconds * 1000, "commit_ms": commit * 1000,
            "save_seconds": window.save.writeSeconds ?? .nan, "window_steps": Double(window.stepSeconds.count), "async": 1,
        ]
        try reportStalls(stall.saveCommitted(step: window.save.step, window: window.stepSeconds,
                                             boundary: window.beginSeconds + commit, values: values))
    }

    private func reportStalls(_ windows: [StallEstimate.Window]) throws {
        for window in windows {
            try report(step: window.step, values: window.values.merging(["stall_seconds": StallEstimate.seconds(window) ?? .nan]) { $1 })
        }
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
/// plus the extra time of the steps in its window over the quiet steps around it — the latest
/// `neighbourSteps` before the window and the first as many after it. Steps on both sides cancel
/// the drift of a shared machine, whose step time moves between levels minutes apart (on the
/// Zen 4 of BENCHMARKS.md, 3.74 → 3.88 s over ten ResNet-50 steps): a baseline of earlier steps
/// alone charged a rising machine's drift to the save (a trailing median of nine steps reported a
/// median stall of 0.058 s where the neighbours on both sides gave 0.040 s on the same run).
/// A save's cost is therefore known `neighbourSteps` quiet steps after its commit.
struct StallEstimate {
    static let neighbourSteps = 3

    /// A committed save waiting for the quiet steps after its window.
    struct Window {
        var step: Int
        var windowSeconds: [Double]
        var boundarySeconds: Double
        /// What is reported with the stall (staging, commit, write time).
        var values: [String: Double]
        var before: [Double]
        var after: [Double] = []
    }

    /// The latest quiet steps (at most `neighbourSteps`).
    private(set) var recentQuiet: [Double] = []
    /// Committed saves whose cost is not known yet, oldest first.
    private(set) var waiting: [Window] = []

    /// A committed save: its window's step durations and its time at boundaries. Returns the
    /// older saves this one forces out (see `recordQuietStep`).
    mutating func saveCommitted(step: Int, window: [Double], boundary: Double, values: [String: Double]) -> [Window] {
        waiting.append(Window(step: step, windowSeconds: window, boundarySeconds: boundary, values: values, before: recentQuiet))
        return take { $0.after.count >= Self.neighbourSteps }
    }

    /// Records a step outside any save window; returns the saves whose cost it completes. With
    /// saves so frequent that quiet steps are rare, a save older than two later ones is costed
    /// with the neighbours it has.
    mutating func recordQuietStep(seconds: Double) -> [Window] {
        recentQuiet.append(seconds)
        if recentQuiet.count > Self.neighbourSteps { recentQuiet.removeFirst() }
        for index in waiting.indices { waiting[index].after.append(seconds) }
        return take { $0.after.count >= Self.neighbourSteps }
    }

    /// The saves still waiting (the end of the run), costed with the neighbours they have.
    mutating func drain() -> [Window] { take { _ in true } }

    private mutating func take(_ complete: (Window) -> Bool) -> [Window] {
        var done: [Window] = []
        while let first = waiting.first, complete(first) || waiting.count > 2 {
            done.append(waiting.removeFirst())
        }
        return done
    }

    /// boundary + max(0, Σ (window step − median neighbour)); nil without any quiet neighbour.
    /// Noise in single steps averages out over the window; only the total is clamped.
    static func seconds(_ window: Window) -> Double? {
        median(window.before + window.after).map { base in
            window.boundarySeconds + max(0, window.windowSeconds.reduce(0) { $0 + $1 - base })
        }
    }

    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
}
