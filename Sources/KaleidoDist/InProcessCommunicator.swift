import KaleidoTensor

/// One rank of an `InProcessWorld`, used only by the thread `InProcessWorld.run` gives it to
/// (as `MPICommunicator` is used only by the training thread).
///
/// Semantics follow `MPICommunicator` where code could tell the difference:
/// - `startDeterministicSum` runs the same two collectives (exchange, then this rank sums its
///   part in rank order into the same scratch layout, then gather), each completing only when
///   every rank has started it, and only advancing inside `progress()`/`wait()`. So the result
///   is bit-identical to MPI's, scratch-size mistakes trip the same precondition, and a caller
///   that advances overlapped sums out of order is caught (see `InProcessWorld`).
/// - `.immediate` and `.overlapped` sums run on channels of their own, as on MPI's duplicate
///   communicators; blocking collectives on a third.
/// - The blocking collectives wait for every rank, broadcast included (MPI may let non-roots
///   return early; nothing may rely on that).
/// - `allReduceSum(Float)` sums in rank order. MPI picks its own order; only the deterministic
///   sum promises one, so tests must not rely on this one's rounding.
/// - `setTimeout` bounds each wait like `dist.timeout_seconds`, but throws
///   `InProcessCollectiveError` naming the missing ranks instead of aborting the process.
public final class InProcessCommunicator: Communicator {
    public let rank: Int
    public var worldSize: Int { world.worldSize }
    let world: InProcessWorld
    private(set) var timeout: Double?
    private(set) var step = 0
    /// Collectives this rank has started, per channel (MPI's matching order).
    private var started: [InProcessWorld.Channel: Int] = [:]
    private var finalized = false

    init(world: InProcessWorld, rank: Int) {
        self.world = world
        self.rank = rank
    }

    public func setTimeout(_ seconds: Double?) { timeout = seconds }
    public func enterStep(_ step: Int) { self.step = step }

    /// Leaves the world: ranks still waiting for this one fail instead of hanging.
    public func finalize() {
        finalized = true
        world.depart(rank: rank)
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        let copies = try exchange(.floats(Array(buffer)), operation: "allReduceSum(Float × \(buffer.count))")
        let floats = copies.map(Self.floats)
        for i in buffer.indices {
            var sum = floats[0][i]
            for q in 1..<floats.count { sum += floats[q][i] }
            buffer[i] = sum
        }
    }

    /// Wraps on overflow like MPI_SUM over MPI_UINT64_T (hashes are summed with it).
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<UInt64>) throws {
        let copies = try exchange(.words(Array(buffer)), operation: "allReduceSum(UInt64 × \(buffer.count))")
        for i in buffer.indices {
            buffer[i] = copies.reduce(0) { sum, copy in
                guard case .words(let words) = copy else { preconditionFailure("mismatched payload") }
                return sum &+ words[i]
            }
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        precondition((0..<worldSize).contains(root), "rank \(root) does not exist in a world of \(worldSize)")
        let payload: InProcessWorld.Payload = rank == root ? .bytes(Array(buffer)) : .nothing
        let copies = try exchange(payload, operation: "broadcast(\(buffer.count) bytes from rank \(root))")
        guard case .bytes(let bytes) = copies[root] else { preconditionFailure("the root sent nothing") }
        if rank != root { buffer.copyBytes(from: bytes) }
    }

    public func barrier() throws {
        _ = try exchange(.nothing, operation: "barrier")
    }

    public func startDeterministicSum(_ buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
                                      stream: ReductionStream) throws -> PendingReduction {
        guard worldSize > 1 else { return CompletedReduction() }
        return try InProcessDeterministicSum(communicator: self, buffer: buffer, scratch: scratch, stream: stream)
    }

    // MARK: - Used by the world's collectives

    /// The position of the next collective this rank starts on `channel`.
    func nextCollective(on channel: InProcessWorld.Channel) -> InProcessWorld.SlotKey {
        precondition(!finalized, "rank \(rank) started a collective after finalize()")
        let number = (started[channel] ?? 0) + 1
        started[channel] = number
        return InProcessWorld.SlotKey(channel: channel, number: number)
    }

    var waiter: InProcessWorld.Waiter { InProcessWorld.Waiter(rank: rank, step: step, timeout: timeout) }

    /// A blocking collective: contributes, waits for every rank, returns all contributions in rank order.
    private func exchange(_ payload: InProcessWorld.Payload, operation: String) throws -> [InProcessWorld.Payload] {
        let key = nextCollective(on: .blocking)
        try world.contribute(payload, to: key, signature: operation, rank: rank, step: step)
        return try world.collect(key, operation: operation, waiter: waiter, waiting: true)!
    }

    private static func floats(_ payload: InProcessWorld.Payload) -> [Float] {
        guard case .floats(let floats) = payload else { preconditionFailure("mismatched payload") }
        return floats
    }
}
