import KaleidoTensor

/// `MPIDeterministicSum` between threads: the same parts, the same scratch layout and the same
/// rank-order additions, so a test passing here says the arithmetic under MPI is the same.
///
/// It is two collectives, each complete once every rank has started it:
/// 1. exchange: every rank deposits its buffer; rank r copies part r of every rank's copy into
///    `scratch` (rank q's at q · part size, as `MPI_Ialltoallv` lays it out) and sums them in
///    rank order into part r of its buffer;
/// 2. gather: every rank deposits its summed part and copies the others' into its buffer.
/// The gather starts only when this rank advances past the exchange, inside `progress()` or
/// `wait()`, because that is when MPI's `Iallgatherv` starts; so overlapped sums must be
/// advanced in the same order on every rank here too.
final class InProcessDeterministicSum: PendingReduction {
    private let communicator: InProcessCommunicator
    private let buffer: UnsafeMutableBufferPointer<Float>
    private let scratch: UnsafeMutableBufferPointer<Float>
    private let gatherChannel: InProcessWorld.Channel
    /// Part q of the buffer is `partStarts[q]..<partStarts[q + 1]`, as in the MPI split.
    private let partStarts: [Int]
    private var phase: Phase
    /// Operation names the ranks' calls must agree on; a different size means a different bucket.
    private let exchangeSignature: String, gatherSignature: String

    private enum Phase {
        case exchanging(InProcessWorld.SlotKey)
        case gathering(InProcessWorld.SlotKey)
        case done
    }

    init(communicator: InProcessCommunicator, buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
         stream: ReductionStream) throws {
        self.communicator = communicator
        self.buffer = buffer
        self.scratch = scratch
        let world = communicator.worldSize, count = buffer.count
        partStarts = (0...world).map { count * $0 / world }
        let own = partStarts[communicator.rank + 1] - partStarts[communicator.rank]
        precondition(scratch.count >= own * world, "deterministic sum needs \(own * world) scratch floats")
        exchangeSignature = "deterministic sum exchange (\(count) floats)"
        gatherSignature = "deterministic sum gather (\(count) floats)"
        let exchangeChannel: InProcessWorld.Channel
        switch stream {
        case .immediate: (exchangeChannel, gatherChannel) = (.immediateSums, .immediateSums)
        case .overlapped: (exchangeChannel, gatherChannel) = (.overlappedExchange, .overlappedGather)
        }
        let key = communicator.nextCollective(on: exchangeChannel)
        try communicator.world.contribute(.floats(Array(buffer)), to: key, signature: exchangeSignature,
                                          rank: communicator.rank, step: communicator.step)
        phase = .exchanging(key)
    }

    func progress() throws -> Bool {
        while try advance(waiting: false) {}
        if case .done = phase { return true }
        return false
    }

    func wait() throws {
        while try advance(waiting: true) {}
    }

    /// Completes the current phase if every rank has joined it (or, `waiting`, once they have);
    /// false when there was nothing to do.
    private func advance(waiting: Bool) throws -> Bool {
        switch phase {
        case .done:
            return false
        case .exchanging(let key):
            guard let copies = try communicator.world.collect(key, operation: exchangeSignature, waiter: communicator.waiter,
                                                             waiting: waiting) else { return false }
            let ownPart = sumOwnPart(of: copies)
            let gatherKey = communicator.nextCollective(on: gatherChannel)
            try communicator.world.contribute(.floats(ownPart), to: gatherKey, signature: gatherSignature,
                                              rank: communicator.rank, step: communicator.step)
            phase = .gathering(gatherKey)
            return true
        case .gathering(let key):
            guard let parts = try communicator.world.collect(key, operation: gatherSignature, waiter: communicator.waiter,
                                                            waiting: waiting) else { return false }
            for (q, part) in parts.enumerated() where q != communicator.rank {
                guard case .floats(let floats) = part else { preconditionFailure("mismatched payload") }
                _ = UnsafeMutableBufferPointer(rebasing: buffer[partStarts[q]..<partStarts[q + 1]]).update(fromContentsOf: floats)
            }
            phase = .done
            return true
        }
    }

    /// Receives part `rank` of every copy into scratch, then sums it in rank order into the buffer.
    private func sumOwnPart(of copies: [InProcessWorld.Payload]) -> [Float] {
        let rank = communicator.rank, start = partStarts[rank], own = partStarts[rank + 1] - start
        for (q, copy) in copies.enumerated() {
            guard case .floats(let floats) = copy else { preconditionFailure("mismatched payload") }
            for i in 0..<own { scratch[q * own + i] = floats[start + i] }
        }
        for i in 0..<own {
            var sum = scratch[i]
            for q in 1..<copies.count { sum += scratch[q * own + i] }
            buffer[start + i] = sum
        }
        return Array(buffer[start..<(start + own)])
    }
}
