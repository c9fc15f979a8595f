import Foundation
import Synchronization

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
