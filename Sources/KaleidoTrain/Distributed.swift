import Foundation
import KaleidoDist

/// The communicator for this process: MPI when a launcher (mpirun, srun) started it, otherwise
/// the single-process one, so `kaleido pretrain` runs on a laptop without an MPI runtime.
public enum Distributed {
    public static func communicator(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Communicator {
        MPICommunicator.launchedByMPI(environment: environment) ? try MPICommunicator() : LocalCommunicator()
    }

    /// Compute threads per rank: the configured count, or this node's cores divided by the
    /// ranks on it (so co-located ranks do not fight over cores).
    public static func threads(configured: Int, environment: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        if configured > 0 { return configured }
        let localRanks = Int(environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? environment["SLURM_NTASKS_PER_NODE"] ?? "1") ?? 1
        return max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, localRanks))
    }
}
