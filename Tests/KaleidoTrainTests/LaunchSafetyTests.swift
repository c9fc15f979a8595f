import Foundation
import Testing
import KaleidoDist
@testable import KaleidoTrain

/// Launches that cannot go wrong silently: one run per run directory, and no Slurm step whose
/// tasks each train alone.
@Suite struct LaunchSafetyTests {
    func temporaryDirectory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-lock-\(UUID().uuidString)")
    }

    @Test func aHeldRunDirectoryIsRefusedNamingTheHolder() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try RunDirectoryLock(directory: directory)
        #expect(first.staleHolder == nil && !first.unsupported)
        do {
            _ = try RunDirectoryLock(directory: directory)
            Issue.record("a second lock of a held run directory succeeded")
        } catch let error as RunDirectoryLock.LockError {
            let message = "\(error)"
            #expect(message.contains("kaleido pid \(getpid()) on host \(ProcessInfo.processInfo.hostName)")
                    && message.contains(directory.path), "\(message)")
        }
        first.release()
        // Released cleanly: the next run finds it free, with no stale holder to warn about.
        let next = try RunDirectoryLock(directory: directory)
        #expect(next.staleHolder == nil)
    }

    /// A lock file still naming a holder that no longer holds the flock (its process died) is
    /// taken over, and the holder is reported for the warning.
    @Test func aStaleLockIsTakenOver() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let left = "kaleido pid 999999 on host gone-node since 2026-01-01T00:00:00Z"
        try left.write(to: directory.appendingPathComponent(".kaleido.lock"), atomically: true, encoding: .utf8)
        let lock = try RunDirectoryLock(directory: directory)
        #expect(lock.staleHolder == left)
        let now = try String(contentsOf: directory.appendingPathComponent(".kaleido.lock"), encoding: .utf8)
        #expect(now.hasPrefix("kaleido pid \(getpid()) "), "\(now)")
    }

    /// `kaleido pretrain` into a run directory another run holds stops before touching it.
    @Test func aSecondRunInTheSameDirectoryIsRefused() throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        var config = KaleidoConfig()
        config.run.outputDir = root.path
        config.run.name = "busy"
        config.run.steps = 1
        config.eval.linearProbe = false
        let holder = try RunDirectoryLock(directory: root.appendingPathComponent("busy"))
        defer { holder.release() }
        #expect(throws: RunDirectoryLock.LockError.self) {
            _ = try PretrainingRun(config: config).run(communicator: LocalCommunicator(), threads: 1)
        }
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("busy/metrics.jsonl").path))
    }

    @Test func slurmTasksThatAreNotOneMPIWorldAreRefused() throws {
        // srun without a PMI plugin: several tasks, no MPI variables.
        #expect(throws: Distributed.SlurmLaunchError.self) {
            try Distributed.checkSlurmLaunch(environment: ["SLURM_STEP_NUM_TASKS": "4"], mpiWorldSize: nil)
        }
        // A PMI plugin that did not wire them up: each task a world of one.
        #expect(throws: Distributed.SlurmLaunchError.self) {
            try Distributed.checkSlurmLaunch(environment: ["SLURM_STEP_NUM_TASKS": "4", "PMIX_RANK": "0"], mpiWorldSize: 1)
        }
        // Accepted: srun --mpi=pmix (4 tasks, world 4); mpirun in an allocation (its daemons are
        // a step of one task per node: 2 tasks, world 8); one task; no Slurm at all.
        try Distributed.checkSlurmLaunch(environment: ["SLURM_STEP_NUM_TASKS": "4", "PMIX_RANK": "2"], mpiWorldSize: nil)
        try Distributed.checkSlurmLaunch(environment: ["SLURM_STEP_NUM_TASKS": "4", "PMIX_RANK": "2"], mpiWorldSize: 4)
        try Distributed.checkSlurmLaunch(environment: ["SLURM_STEP_NUM_TASKS": "2", "OMPI_COMM_WORLD_SIZE": "8"], mpiWorldSize: 8)
        try Distributed.checkSlurmLaunch(environment: ["SLURM_STEP_NUM_TASKS": "1"], mpiWorldSize: nil)
        try Distributed.checkSlurmLaunch(environment: [:], mpiWorldSize: nil)
        let message = "\(Distributed.SlurmLaunchError(tasks: 4, mpiWorldSize: nil))"
        #expect(message.contains("srun --mpi=pmix") && message.contains("mpirun"))
    }
}
