import CMPI
import Foundation

/// A failed MPI call, with the operation and the rank that saw it.
public struct MPIError: Error, CustomStringConvertible {
    public let operation: String
    public let code: Int32
    public let rank: Int
    public let message: String

    public var description: String { "rank \(rank): \(operation) failed (MPI error \(code): \(message))" }
}

/// Communicator over OpenMPI's MPI_COMM_WORLD.
///
/// MPI is initialised with `MPI_THREAD_FUNNELED`: only the training thread calls MPI; helper threads
/// (data loading, checkpoint writing) never do. Errors return codes instead of aborting the job,
/// so a failure is reported with the rank that saw it.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let worldSize: Int
    let comm: MPI_Comm
    let stalls: StallDetector
    /// Duplicates of `comm` for the deterministic sums: one for `.immediate` sums (both of their
    /// collectives), and one per collective of the `.overlapped` ones.
    private var immediateSums: MPI_Comm?, overlappedExchange: MPI_Comm?, overlappedGather: MPI_Comm?
    private var finalized = false

    /// Initialises MPI (once per process) and joins MPI_COMM_WORLD.
    public init() throws {
        var initialised: Int32 = 0
        MPI_Initialized(&initialised)
        if initialised == 0 {
            var provided: Int32 = 0
            let code = MPI_Init_thread(nil, nil, kaleido_mpi_thread_funneled(), &provided)
            guard code == kaleido_mpi_success() else {
                throw MPIError(operation: "MPI_Init_thread", code: code, rank: -1, message: Self.errorString(code))
            }
        }
        comm = kaleido_mpi_comm_world()
        MPI_Comm_set_errhandler(comm, kaleido_mpi_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        worldSize = Int(s)
        stalls = try StallDetector(world: comm, rank: rank, worldSize: worldSize)
        for index in 0..<3 {
            var duplicate: MPI_Comm? = kaleido_mpi_comm_null()
            try check("MPI_Comm_dup", MPI_Comm_dup(comm, &duplicate))
            switch index {
            case 0: immediateSums = duplicate
            case 1: overlappedExchange = duplicate
            default: overlappedGather = duplicate
            }
        }
    }

    func reductionCommunicators(_ stream: ReductionStream) -> (exchange: MPI_Comm, gather: MPI_Comm) {
        switch stream {
        case .immediate: return (immediateSums!, immediateSums!)
        case .overlapped: return (overlappedExchange!, overlappedGather!)
        }
    }

    public func setTimeout(_ seconds: Double?) { stalls.timeout = seconds }
    public func enterStep(_ step: Int) { stalls.step = step }

    /// Ends MPI for this process. Later collectives are programming errors.
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        stalls.close()
        for index in 0..<3 {
            switch index {
            case 0: MPI_Comm_free(&immediateSums)
            case 1: MPI_Comm_free(&overlappedExchange)
            default: MPI_Comm_free(&overlappedGather)
            }
        }
        MPI_Finalize()
    }

    /// The MPI library's own version string (callable before MPI_Init).
    public static var libraryVersion: String {
        var buffer = [CChar](repeating: 0, count: Int(kaleido_mpi_max_library_version_string()) + 1)
        var length: Int32 = 0
        MPI_Get_library_version(&buffer, &length)
        // Open MPI counts the terminating NUL in `length`: the text ends at the first NUL.
        let text = String(decoding: buffer.prefix(Int(length)).prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let firstLine = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? text
        return firstLine.trimmingCharacters(in: .whitespaces)
    }

    /// The MPI standard version the library implements, e.g. (3, 1).
    public static var standardVersion: (major: Int, minor: Int) {
        var major: Int32 = 0, minor: Int32 = 0
        MPI_Get_version(&major, &minor)
        return (Int(major), Int(minor))
    }

    /// True when this process was started by an MPI launcher (mpirun, srun with PMIx).
    public static func launchedByMPI(environment: [String: String]) -> Bool {
        environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
            || environment["PMI_RANK"] != nil
    }

    // Blocking collectives are started non-blocking and waited for by the stall detector, so a
    // stuck rank ends the job (naming it) instead of hanging every other rank.

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try collective("MPI_Iallreduce(float)") { request in
            MPI_Iallreduce(kaleido_mpi_in_place(), buffer.baseAddress, Int32(buffer.count), kaleido_mpi_float(), kaleido_mpi_sum(),
                           comm, &request)
        }
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<UInt64>) throws {
        try collective("MPI_Iallreduce(uint64)") { request in
            MPI_Iallreduce(kaleido_mpi_in_place(), buffer.baseAddress, Int32(buffer.count), kaleido_mpi_uint64(), kaleido_mpi_sum(),
                           comm, &request)
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        try collective("MPI_Ibcast") { request in
            MPI_Ibcast(buffer.baseAddress, Int32(buffer.count), kaleido_mpi_byte(), Int32(root), comm, &request)
        }
    }

    public func barrier() throws {
        try collective("MPI_Ibarrier") { request in MPI_Ibarrier(comm, &request) }
    }

    /// Starts a non-blocking collective and waits for it under the stall detector's deadline.
    private func collective(_ operation: String, _ start: (inout MPI_Request?) -> Int32) throws {
        var request: MPI_Request? = kaleido_mpi_request_null()
        let number = stalls.nextCollective()
        try check(operation, start(&request))
        try stalls.wait(&request, collective: number, operation: operation, check: check)
    }

    func check(_ operation: String, _ code: Int32) throws {
        guard code != kaleido_mpi_success() else { return }
        throw MPIError(operation: operation, code: code, rank: rank, message: Self.errorString(code))
    }

    private static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        var length: Int32 = 0
        MPI_Error_string(code, &buffer, &length)
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
