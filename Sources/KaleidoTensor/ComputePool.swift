import Foundation
import Synchronization

/// Splits loops that do not go through BLAS (depthwise convolution, normalisation, softmax,
/// im2col) over a fixed number of threads.
///
/// The thread count is explicit and owned by whoever creates the pool; kernels receive the pool
/// as an argument. With several MPI ranks on one node, each rank's pool gets its share of cores.
public struct ComputePool: Sendable {
    public let threads: Int
    /// When true, the kernels' large matrix products are cut into pieces that the pool's threads
    /// take in turn (`BLAS.sgemm(…, pool:)`), each piece a single-threaded OpenBLAS call; the
    /// owner then sets `BLAS.threadCount = 1`. When false, each product is one OpenBLAS call on
    /// OpenBLAS's own threads.
    public let splitsMatrixProducts: Bool
    /// The `threads − 1` threads besides the caller's, shared by copies of this pool and stopped
    /// when the last copy goes.
    let team: WorkerTeam?

    public init(threads: Int) {
        self.init(threads: threads, splitsMatrixProducts: false)
    }

    public init(threads: Int, splitsMatrixProducts: Bool) {
        precondition(threads >= 1, "a compute pool needs at least one thread, got \(threads)")
        self.threads = threads
        self.splitsMatrixProducts = splitsMatrixProducts
        team = threads > 1 ? WorkerTeam(workers: threads - 1) : nil
    }

    /// One thread: for tests and for callers already inside a parallel loop.
    public static let serial = ComputePool(threads: 1)

    /// Calls `body` on disjoint contiguous ranges covering `0..<count`, in parallel.
    /// Work below `minimumPerThread` items per thread stays on fewer threads, because waking a
    /// thread costs microseconds.
    public func forEachRange(_ count: Int, minimumPerThread: Int = 1, _ body: (Range<Int>) -> Void) {
        forEachPart(count, minimumPerThread: minimumPerThread) { _, range in body(range) }
    }

    /// Like `forEachRange`, also passing the part's index (< `threads`), so a kernel can give
    /// each part its own slice of a scratch buffer.
    public func forEachPart(_ count: Int, minimumPerThread: Int = 1, _ body: (_ part: Int, Range<Int>) -> Void) {
        forEachPart(count, parts: min(threads, max(1, count / max(1, minimumPerThread))), body)
    }

    /// Calls `body` on `parts` (at most `threads`) disjoint contiguous ranges covering
    /// `0..<count`, in parallel.
    public func forEachPart(_ count: Int, parts: Int, _ body: (_ part: Int, Range<Int>) -> Void) {
        guard count > 0 else { return }
        precondition(parts >= 1 && parts <= threads, "\(parts) parts on \(threads) threads")
        let parts = min(parts, count)
        if parts == 1 {
            body(0, 0..<count)
            return
        }
        func run(_ part: Int) { body(part, (count * part / parts)..<(count * (part + 1) / parts)) }
        // Kernels capture raw pointers to disjoint ranges; the ranges never overlap. A loop
        // inside a loop of the same pool runs its parts here, one after the other.
        if team?.run(participants: parts, run) != true {
            for part in 0..<parts { run(part) }
        }
    }
}

extension ComputePool {
    /// Calls `body(piece)` for every piece in `0..<pieces`, the pool's threads taking the next
    /// untaken piece until none are left. Unlike `forEachRange`'s fixed split, a thread that
    /// was descheduled (a shared machine) just takes fewer pieces; the caller's thread never
    /// waits idle while pieces remain.
    public func forEachPiece(_ pieces: Int, _ body: (Int) -> Void) {
        forEachPiece(pieces, lanes: threads) { _, piece in body(piece) }
    }

    /// The same on at most `lanes` threads, also passing the lane (< `lanes`) that runs the
    /// piece, so a piece can use that lane's slice of a scratch buffer.
    public func forEachPiece(_ pieces: Int, lanes: Int, _ body: (_ lane: Int, _ piece: Int) -> Void) {
        let workers = min(threads, lanes, pieces)
        if workers <= 1 {
            for piece in 0..<pieces { body(0, piece) }
            return
        }
        let next = Atomic<Int>(0)
        let ran = team?.run(participants: workers) { lane in
            while true {
                let piece = next.add(1, ordering: .relaxed).oldValue
                guard piece < pieces else { break }
                body(lane, piece)
            }
        }
        if ran != true {
            for piece in 0..<pieces { body(0, piece) }
        }
    }
}

/// Carries a value into a concurrent closure whose accesses the caller keeps disjoint.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}

/// The threads behind a `ComputePool`: they stay awake for a short while after each parallel
/// loop, so the next loop starts without a wake-up.
///
/// A training step runs thousands of short parallel loops (ResNet-18's convolutions alone are
/// ≈ 15 000 im2col and matrix-product pieces per step); handing each to sleeping threads (as
/// `DispatchQueue.concurrentPerform` does) costs a futex wake-up and a context switch per loop
/// and left a third of two cores idle. Workers here spin on a generation counter for about
/// `spinIterations` polls after their last loop, then sleep on a condition variable, so an idle
/// pool costs nothing and a busy one hands work over in well under a microsecond — OpenMP's
/// `OMP_WAIT_POLICY` compromise, with a bounded spin so that oversubscribed ranks are not starved.
///
/// The caller is participant 0 and runs its share too. A loop started while another runs on the
/// same team (a kernel called from inside a parallel loop, or a second thread using the same
/// pool) runs on the calling thread alone rather than waiting.
final class WorkerTeam: @unchecked Sendable {
    /// Threads besides the caller's.
    let workers: Int
    private let state: State

    init(workers: Int) {
        precondition(workers >= 1, "a worker team needs at least one worker")
        self.workers = workers
        state = State()
        for index in 1...workers {
            let state = self.state
            let thread = Thread { state.serve(as: index) }
            thread.name = "kaleido-compute-\(index)"
            thread.start()
        }
    }

    deinit { state.shutDown() }

    /// Calls `body(p)` for every participant p in `0..<participants` (at most `workers + 1`),
    /// p = 0 on the calling thread, and returns when all have returned. Returns false, without
    /// calling anything, when the team is already running a loop.
    func run(participants: Int, _ body: (Int) -> Void) -> Bool {
        precondition(participants >= 1 && participants <= min(workers + 1, 0xFFFF), "\(participants) participants for \(workers) workers + caller")
        guard state.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { state.busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            state.job = body
            state.remaining.store(participants - 1, ordering: .relaxed)
            // One word carries the loop's ticket and its participant count, so a worker reads
            // both at once; a slow worker never pairs one loop's count with another's.
            // Only the caller holding `busy` writes the word.
            let ticket = (state.generation.load(ordering: .relaxed) >> 16) + 1
            state.generation.store(ticket << 16 | participants, ordering: .sequentiallyConsistent)
            if state.sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                state.condition.lock()
                state.condition.broadcast()
                state.condition.unlock()
            }
            body(0)
            var polls = 0
            while state.remaining.load(ordering: .acquiring) > 0 {
                polls += 1
                // A worker that was descheduled needs this core more than our polling does.
                if polls > 4096 { sched_yield() }
            }
            state.job = nil
        }
        return true
    }

    /// What the caller and the workers share; the workers hold it, not the team, so the team's
    /// deinit can tell them to stop.
    private final class State: @unchecked Sendable {
        let generation = Atomic<Int>(0)
        let remaining = Atomic<Int>(0)
        let busy = Atomic<Bool>(false)
        let sleepers = Atomic<Int>(0)
        let stopping = Atomic<Bool>(false)
        let condition = NSCondition()
        /// Written by the caller before it bumps `generation`, read by workers after they see the
        /// new generation (release/acquire through the counter).
        var job: ((Int) -> Void)?

        /// About 50–100 µs of polling: longer than the gap between a step's parallel loops.
        static let spinIterations = 20_000

        func serve(as index: Int) {
            var seen = 0
            while true {
                var current = generation.load(ordering: .acquiring)
                var polls = 0
                while current == seen && !stopping.load(ordering: .relaxed) {
                    polls += 1
                    if polls < Self.spinIterations {
                        current = generation.load(ordering: .acquiring)
                        continue
                    }
                    // Counted as a sleeper before the last look, so a caller that bumps the
                    // generation after that look sees the count and wakes us.
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    condition.lock()
                    while generation.load(ordering: .sequentiallyConsistent) == seen && !stopping.load(ordering: .relaxed) {
                        condition.wait()
                    }
                    condition.unlock()
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    current = generation.load(ordering: .acquiring)
                    polls = 0
                }
                if stopping.load(ordering: .relaxed) { return }
                seen = current
                if index < current & 0xFFFF {
                    job?(index)
                    remaining.subtract(1, ordering: .releasing)
                }
            }
        }

        func shutDown() {
            stopping.store(true, ordering: .sequentiallyConsistent)
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
    }
}
