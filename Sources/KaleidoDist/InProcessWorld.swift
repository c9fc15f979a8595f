import Foundation
import KaleidoTensor

/// Several ranks as threads of one process, so distributed code (bucketed gradient reduction,
/// replica checks, a whole training step) can be unit-tested without mpirun.
///
/// The world is the only thing the ranks share. It is created by `run(ranks:_:)`, owned by that
/// call and handed to each rank's communicator; there is no process-wide state, so tests can run
/// worlds in parallel.
///
/// Matching follows MPI's rule rather than anything smarter: each rank numbers the collectives
/// it starts on a channel (the analogue of an MPI communicator), and the n-th collective of a
/// channel on every rank is one collective. A program that starts collectives in different
/// orders on different ranks is wrong under MPI, and is caught here when the calls disagree
/// (different operations or sizes) instead of being silently paired.
///
/// Failure is fail-stop, as under mpirun: the first error (a rank's body throwing, a stall
/// deadline passing, mismatched calls) stops the world, every rank waiting in a collective
/// throws, and `run` rethrows that first error. Unlike MPI, the world knows when a rank has
/// returned, so waiting for a rank that can no longer arrive fails at once rather than hanging
/// even with no timeout set.
public final class InProcessWorld: @unchecked Sendable {
    // @unchecked: every mutable property below is guarded by `condition`.

    /// Number of ranks (threads).
    public let worldSize: Int
    private let condition = NSCondition()
    private var slots: [SlotKey: Slot] = [:]
    private var departed: [Bool]
    private var failure: (any Error)?

    private init(worldSize: Int) {
        precondition(worldSize >= 1, "a world needs at least one rank")
        self.worldSize = worldSize
        departed = Array(repeating: false, count: worldSize)
    }

    /// Runs `body` once per rank, each on a thread of its own with that rank's communicator, and
    /// returns the ranks' results in rank order once every thread has returned.
    /// - Throws: the first error any rank raised (in time, not rank order); later errors of
    ///   other ranks are usually consequences of it (`InProcessCollectiveError.Cause.worldStopped`).
    public static func run<Result: Sendable>(ranks: Int, _ body: @escaping @Sendable (InProcessCommunicator) throws -> Result)
        throws -> [Result] {
        let world = InProcessWorld(worldSize: ranks)
        let results = RankResults<Result>(count: ranks)
        for rank in 0..<ranks {
            let thread = Thread {
                let communicator = InProcessCommunicator(world: world, rank: rank)
                do {
                    results.store(try body(communicator), rank: rank)
                    world.depart(rank: rank)
                } catch {
                    world.stop(with: error)
                    world.depart(rank: rank)
                }
            }
            thread.name = "kaleido.rank\(rank)"
            thread.start()
        }
        try world.waitForEveryRank()
        return results.values.map { $0! }
    }

    // MARK: - Rendezvous (used by the communicator and its pending sums)

    /// What one rank brings to a collective.
    enum Payload {
        case floats([Float])
        case words([UInt64])
        case bytes([UInt8])
        case nothing
    }

    /// Ranks' independent streams of collectives, as MPI communicators are.
    enum Channel: Hashable {
        case blocking, immediateSums, overlappedExchange, overlappedGather
    }

    struct SlotKey: Hashable {
        let channel: Channel
        /// 1-based position of the collective in its channel.
        let number: Int
    }

    /// Who waits, for naming in errors, and how long it may wait.
    struct Waiter {
        let rank: Int
        let step: Int
        let timeout: Double?
    }

    private struct Slot {
        /// Operation and size, which every rank's call must agree on.
        var signature: String
        var contributions: [Payload?]
        var collectedBy = 0
    }

    /// Adds `rank`'s contribution to collective `key`; never blocks.
    func contribute(_ payload: Payload, to key: SlotKey, signature: String, rank: Int, step: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        try throwIfStopped(rank: rank, operation: signature, step: step)
        var slot = slots[key] ?? Slot(signature: signature, contributions: Array(repeating: nil, count: worldSize))
        guard slot.signature == signature else {
            let first = slot.contributions.firstIndex { $0 != nil } ?? rank
            let error = InProcessCollectiveError(
                cause: .mismatched, rank: rank, operation: signature, step: step, missingRanks: [],
                detail: "collective \(key.number) of \(key.channel): rank \(rank) started \(signature), rank \(first) \(slot.signature)")
            stopLocked(with: error)
            throw error
        }
        precondition(slot.contributions[rank] == nil, "rank \(rank) contributed twice to collective \(key.number)")
        slot.contributions[rank] = payload
        slots[key] = slot
        condition.broadcast()
    }

    /// Every rank's contribution to `key` once all have arrived; nil if some have not and
    /// `waiting` is false. Each rank collects a collective once.
    func collect(_ key: SlotKey, operation: String, waiter: Waiter, waiting: Bool) throws -> [Payload]? {
        condition.lock()
        defer { condition.unlock() }
        // No timeout waits without a deadline: NSCondition traps on `.distantFuture` on Linux.
        let deadline = waiter.timeout.map { Date().addingTimeInterval($0) }
        while true {
            try throwIfStopped(rank: waiter.rank, operation: operation, step: waiter.step)
            let slot = slots[key]
            let missing = (0..<worldSize).filter { slot?.contributions[$0] == nil }
            if missing.isEmpty, var slot {
                let payloads = slot.contributions.map { $0! }
                slot.collectedBy += 1
                slots[key] = slot.collectedBy == worldSize ? nil : slot
                return payloads
            }
            guard waiting else { return nil }
            let left = missing.filter { departed[$0] }
            if !left.isEmpty {
                throw stopLocked(.ranksLeft, missing: left, key: key, operation: operation, waiter: waiter,
                                 detail: "returned or finalized without joining it")
            }
            guard let deadline else { condition.wait(); continue }
            if !condition.wait(until: deadline) && Date() >= deadline {
                let seconds = String(format: "%g", waiter.timeout ?? 0)
                throw stopLocked(.timedOut, missing: missing, key: key, operation: operation, waiter: waiter,
                                 detail: "did not reach it within \(seconds) s")
            }
        }
    }

    /// Marks `rank` as gone: it will start no more collectives. Idempotent.
    func depart(rank: Int) {
        condition.lock()
        departed[rank] = true
        condition.broadcast()
        condition.unlock()
    }

    /// Stops the world with `error` unless an earlier error already did.
    func stop(with error: any Error) {
        condition.lock()
        stopLocked(with: error)
        condition.unlock()
    }

    // MARK: - Private

    private func stopLocked(with error: any Error) {
        if failure == nil { failure = error }
        condition.broadcast()
    }

    private func stopLocked(_ cause: InProcessCollectiveError.Cause, missing: [Int], key: SlotKey, operation: String,
                            waiter: Waiter, detail: String) -> InProcessCollectiveError {
        let names = missing.map(String.init).joined(separator: ",")
        let error = InProcessCollectiveError(
            cause: cause, rank: waiter.rank, operation: operation, step: waiter.step, missingRanks: missing,
            detail: "rank(s) \(names) of step \(waiter.step) \(detail) (collective \(key.number) of \(key.channel), \(operation))")
        stopLocked(with: error)
        return error
    }

    private func throwIfStopped(rank: Int, operation: String, step: Int) throws {
        guard let failure else { return }
        throw InProcessCollectiveError(cause: .worldStopped, rank: rank, operation: operation, step: step, missingRanks: [],
                                       detail: "the world stopped after an earlier error: \(failure)")
    }

    private func waitForEveryRank() throws {
        condition.lock()
        defer { condition.unlock() }
        while departed.contains(false) { condition.wait() }
        if let failure { throw failure }
    }
}

/// The ranks' return values; each thread writes its own slot once, `run` reads after joining.
private final class RankResults<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Value?]

    init(count: Int) { stored = Array(repeating: nil, count: count) }

    func store(_ value: Value, rank: Int) { lock.withLock { stored[rank] = value } }
    var values: [Value?] { lock.withLock { stored } }
}
