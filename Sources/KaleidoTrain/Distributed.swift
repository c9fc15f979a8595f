import Foundation
import Logging
import KaleidoDist

/// The communicator for this process: MPI when a launcher (mpirun, srun) started it, otherwise
/// the single-process one, so `kaleido pretrain` runs on a laptop without an MPI runtime.
public enum Distributed {
    public static func communicator(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Communicator {
        try checkSlurmLaunch(environment: environment, mpiWorldSize: nil)
        guard MPICommunicator.launchedByMPI(environment: environment) else { return LocalCommunicator() }
        let communicator = try MPICommunicator()
        try checkSlurmLaunch(environment: environment, mpiWorldSize: communicator.worldSize)
        return communicator
    }

    /// A Slurm job step of several tasks where MPI does not connect them.
    public struct SlurmLaunchError: Error, CustomStringConvertible {
        public var tasks: Int
        public var mpiWorldSize: Int?

        public var description: String {
            let seen = mpiWorldSize.map { "MPI started with a world of \($0)" }
                ?? "no MPI launcher reached this process (no PMIX_RANK, PMI_RANK or OMPI_COMM_WORLD_SIZE)"
            return "Slurm started \(tasks) tasks (SLURM_STEP_NUM_TASKS=\(tasks)) but \(seen): each task would train alone "
                + "and all would write the same run directory. Launch with `srun --mpi=pmix kaleido …` (`srun --mpi=list` "
                + "shows the plugins this cluster has), or with `mpirun kaleido …` inside the allocation (cluster/slurm-pretrain.sbatch does either)."
        }
    }

    /// Refuses a Slurm job step of several tasks where each task is an MPI world of its own.
    /// `mpiWorldSize` nil: checked before MPI starts (no launcher variables at all). Only a world
    /// of one is refused once MPI runs: mpirun in an allocation starts its daemons as a step of one
    /// task per node, so its ranks see SLURM_STEP_NUM_TASKS = nodes, not ranks.
    static func checkSlurmLaunch(environment: [String: String], mpiWorldSize: Int?) throws {
        guard let tasks = environment["SLURM_STEP_NUM_TASKS"].flatMap({ Int($0) }), tasks > 1 else { return }
        if let mpiWorldSize {
            if mpiWorldSize == 1 { throw SlurmLaunchError(tasks: tasks, mpiWorldSize: mpiWorldSize) }
        } else if !MPICommunicator.launchedByMPI(environment: environment) {
            throw SlurmLaunchError(tasks: tasks, mpiWorldSize: nil)
        }
    }

    /// Compute threads per rank: the configured count, or this node's cores divided by the
    /// ranks on it (so co-located ranks do not fight over cores).
    public static func threads(configured: Int, environment: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        if configured > 0 { return configured }
        return max(1, ProcessInfo.processInfo.activeProcessorCount / localRanks(environment))
    }

    /// How many ranks share this node, as the launcher (mpirun, srun) wrote it; nil without one.
    private static func launcherLocalRanks(_ environment: [String: String]) -> String? {
        environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? environment["SLURM_NTASKS_PER_NODE"]
    }

    /// Ranks on this node, as the launcher says (1 without one).
    static func localRanks(_ environment: [String: String]) -> Int {
        max(1, Int(launcherLocalRanks(environment) ?? "1") ?? 1)
    }

    /// Whether a launcher (mpirun, srun) started this process and said how many ranks share its node.
    static func launched(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        launcherLocalRanks(environment) != nil
    }

    /// How a rank's compute threads sit on its node, and what is wrong with it.
    public struct ThreadPlan: Equatable, Sendable {
        public var threads: Int
        public var localRanks: Int
        /// Cores of the node (online processors).
        public var nodeCores: Int
        /// Cores this process may run on (its affinity mask: a launcher's binding narrows it).
        public var allowedCores: Int

        /// Problems worth a warning: more threads on the node than cores, or more threads than
        /// this rank's binding (a mask narrower than the node) allows. Threads then time-share a
        /// core, and BLAS slows down by more than the ratio.
        public var problems: [String] {
            var problems: [String] = []
            if localRanks * threads > nodeCores {
                problems.append("\(localRanks) ranks × \(threads) threads = \(localRanks * threads) on \(nodeCores) cores: "
                                + "the node is oversubscribed; lower dist.threads to \(max(1, nodeCores / localRanks)) or run fewer ranks per node")
            }
            if allowedCores < nodeCores && threads > allowedCores {
                problems.append("\(threads) threads but this rank is bound to \(allowedCores) core(s): "
                                + "bind each rank to dist.threads cores (mpirun --map-by slot:PE=\(threads) --bind-to core, srun --cpus-per-task=\(threads))")
            }
            return problems
        }

        /// Whether this rank's cores are its own: the only rank on its node, or bound by its
        /// launcher to a mask narrower than the node, and not oversubscribed. Only then may a
        /// thread of the rank be kept to one of them (`checkpoint.pin_writer`).
        public var ownsItsCores: Bool {
            problems.isEmpty && (localRanks == 1 || allowedCores < nodeCores)
        }
    }

    /// Logs the compute threads chosen for this rank and any problem with the plan.
    public static func logThreadPlan(threads: Int, configured: Int, logger: Logger,
                                     environment: [String: String] = ProcessInfo.processInfo.environment) {
        let plan = threadPlan(threads: threads, environment: environment)
        logger.info("compute threads", metadata: ["threads": "\(threads)", "dist.threads": "\(configured)",
                                                  "ranks_on_node": "\(plan.localRanks)", "node_cores": "\(plan.nodeCores)",
                                                  "bound_to_cores": "\(plan.allowedCores)"])
        for problem in plan.problems { logger.warning("\(problem)") }
    }

    public static func threadPlan(threads: Int, environment: [String: String] = ProcessInfo.processInfo.environment) -> ThreadPlan {
        ThreadPlan(threads: threads, localRanks: localRanks(environment), nodeCores: ProcessInfo.processInfo.processorCount,
                   allowedCores: allowedCores() ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Cores in this process's affinity mask (nil where it cannot be read). Linux prints the
    /// mask in /proc/self/status as comma-separated 32-bit hex words ("Cpus_allowed:\tff,ffffffff");
    /// glibc's sched_getaffinity is hidden from Swift behind _GNU_SOURCE.
    static func allowedCores(status: String? = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) -> Int? {
        guard let line = status?.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) else { return nil }
        let words = line.dropFirst("Cpus_allowed:".count).trimmingCharacters(in: .whitespaces).split(separator: ",")
        var count = 0
        for word in words {
            guard let bits = UInt32(word, radix: 16) else { return nil }
            count += bits.nonzeroBitCount
        }
        return count > 0 ? count : nil
    }
}
