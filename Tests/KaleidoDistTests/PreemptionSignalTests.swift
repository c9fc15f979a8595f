import Foundation
import Testing
@testable import KaleidoDist
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite(.serialized) struct PreemptionTests {
    @Test func raisingSIGUSR1InProcessSetsTheFlag() async throws {
        let preemption = PreemptionSignal()
        #expect(!preemption.requested)
        #expect(try !preemption.agreed(LocalCommunicator()))
        kill(getpid(), SIGUSR1)   // process-directed, as `kill -USR1` from Slurm or a shell
        for _ in 0..<200 where !preemption.requested { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(preemption.requested && preemption.signalName == "SIGUSR1")
        #expect(try preemption.agreed(LocalCommunicator()))
    }

    /// cluster/test-slurm-pretrain.sh: the batch script with stub srun/scontrol/kaleido.
    @Test func slurmScriptForwardsTheSignalAndRequeuesOnce() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("cluster/test-slurm-pretrain.sh")
        guard FileManager.default.fileExists(atPath: script.path), FileManager.default.fileExists(atPath: "/bin/bash") else { return }
        // The test runner's threads may block SIGUSR1/SIGTERM, and a child inherits the mask (bash
        // cannot trap a blocked signal): spawn with them unblocked, as sbatch would.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGUSR1)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text)")
    }

    @Test func oneSignalledRankStopsEveryRank() throws {
        let agreed = try InProcessWorld.run(ranks: 3) { communicator -> Bool in
            let preemption = PreemptionSignal(signals: [])   // one per rank, as in separate processes
            if communicator.rank == 2 { preemption.request() }
            return try preemption.agreed(communicator)
        }
        #expect(agreed == [true, true, true])
    }
}
