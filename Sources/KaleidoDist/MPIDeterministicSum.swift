import CMPI
import KaleidoTensor

/// Deterministic non-blocking all-reduce over MPI, in two collectives:
///
/// 1. `MPI_Ialltoallv`: the buffer is cut into W parts; rank r receives part r of every rank.
/// 2. Rank r sums the W copies of its part in rank order (so every element is
///    ((g₀ + g₁) + g₂) + … whatever the bucket boundaries), then `MPI_Iallgatherv` shares the parts.
///
/// The traffic equals a ring all-reduce's (2·(W−1)/W of the buffer per rank). MPI's own
/// `MPI_Allreduce` may change its summation order with the message size, which would make
/// results depend on the bucket size.
final class MPIDeterministicSum: PendingReduction {
    private let communicator: MPICommunicator
    /// Communicators of the two collectives (per stream: see `ReductionStream`).
    private let exchange: MPI_Comm, gather: MPI_Comm
    private let buffer: UnsafeMutableBufferPointer<Float>
    private let scratch: UnsafeMutableBufferPointer<Float>
    private var partCounts: [Int32], partStarts: [Int32]
    private var receiveCounts: [Int32], receiveStarts: [Int32]
    private var request: MPI_Request?
    private var phase = 0
    /// The stall detector's number for this reduction.
    private let number: Int

    init(communicator: MPICommunicator, buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
         stream: ReductionStream) throws {
        self.communicator = communicator
        (exchange, gather) = communicator.reductionCommunicators(stream)
        self.buffer = buffer
        self.scratch = scratch
        let world = communicator.worldSize, count = buffer.count
        partStarts = (0..<world).map { Int32(count * $0 / world) }
        partCounts = (0..<world).map { Int32(count * ($0 + 1) / world - count * $0 / world) }
        let own = partCounts[communicator.rank]
        receiveCounts = Array(repeating: own, count: world)
        receiveStarts = (0..<world).map { Int32($0) * own }
        precondition(scratch.count >= Int(own) * world, "deterministic sum needs \(Int(own) * world) scratch floats")
        request = kaleido_mpi_request_null()
        number = communicator.stalls.nextCollective()
        try communicator.check("MPI_Ialltoallv", MPI_Ialltoallv(
            buffer.baseAddress, partCounts, partStarts, kaleido_mpi_float(),
            scratch.baseAddress, receiveCounts, receiveStarts, kaleido_mpi_float(), exchange, &request))
    }

    func progress() throws -> Bool {
        while phase < 2 {
            var done: Int32 = 0
            try communicator.check("MPI_Test", MPI_Test(&request, &done, kaleido_mpi_status_ignore()))
            guard done != 0 else { return false }
            try advance()
        }
        return true
    }

    func wait() throws {
        while phase < 2 {
            try communicator.stalls.wait(&request, collective: number, operation: phase == 0 ? "MPI_Ialltoallv" : "MPI_Iallgatherv",
                                         check: communicator.check)
            try advance()
        }
    }

    /// After the exchange: sum the copies of this rank's part in rank order and share it.
    private func advance() throws {
        if phase == 0 {
            let rank = communicator.rank, own = Int(partCounts[rank]), start = Int(partStarts[rank])
            let target = buffer.baseAddress! + start, copies = scratch.baseAddress!
            target.update(from: copies, count: own)
            for q in 1..<communicator.worldSize {
                let copy = copies + q * own
                for i in 0..<own { target[i] += copy[i] }
            }
            try communicator.check("MPI_Iallgatherv", MPI_Iallgatherv(
                kaleido_mpi_in_place(), 0, kaleido_mpi_float(),
                buffer.baseAddress, partCounts, partStarts, kaleido_mpi_float(), gather, &request))
        }
        phase += 1
    }
}

extension MPICommunicator {
    public func startDeterministicSum(_ buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
                                      stream: ReductionStream) throws -> PendingReduction {
        guard worldSize > 1 else { return CompletedReduction() }
        return try MPIDeterministicSum(communicator: self, buffer: buffer, scratch: scratch, stream: stream)
    }
}
