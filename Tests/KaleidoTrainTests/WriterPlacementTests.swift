import Foundation
import KaleidoCheckpoint
import KaleidoDist
import KaleidoTensor
import Synchronization
import Testing
@testable import KaleidoTrain

/// `checkpoint.pin_writer`: during a background save the training loop's thread keeps to its
/// core and the writer to the rank's other cores, and the loop thread gets its cores back at the
/// commit. Each test runs on a thread of its own, so no affinity change reaches the test runner.
@Suite struct WriterPlacementTests {
    /// Runs `body` on a fresh thread and waits for it.
    static func onOwnThread(_ body: @escaping @Sendable () throws -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        let failure = Mutex<Error?>(nil)
        let thread = Thread {
            do { try body() } catch { failure.withLock { $0 = error } }
            done.signal()
        }
        thread.start()
        done.wait()
        if let error = failure.withLock({ $0 }) { throw error }
    }

    @Test func aThreadIsKeptToTheCoresItIsGivenAndGetsThemBack() throws {
        try Self.onOwnThread {
            #if os(Linux)
            let cores = try #require(ThreadAffinity.currentThreadCores())
            let core = try #require(ThreadAffinity.currentCore())
            #expect(cores.contains(core))
            #expect(ThreadAffinity.restrictCurrentThread(to: [core]))
            #expect(ThreadAffinity.currentThreadCores() == [core])
            #expect(ThreadAffinity.currentCore() == core)
            #expect(!ThreadAffinity.restrictCurrentThread(to: []), "an empty set is refused")
            #expect(!ThreadAffinity.restrictCurrentThread(to: [1 << 20]), "a core beyond the mask's room is refused")
            #expect(ThreadAffinity.currentThreadCores() == [core], "a refused change leaves the cores as they were")
            #expect(ThreadAffinity.restrictCurrentThread(to: cores))
            #expect(ThreadAffinity.currentThreadCores() == cores)
            #endif
        }
    }

    @Test func onlyARankThatOwnsItsCoresPinsThreads() {
        let plan = { (threads: Int, ranks: Int, node: Int, allowed: Int) in
            Distributed.ThreadPlan(threads: threads, localRanks: ranks, nodeCores: node, allowedCores: allowed).ownsItsCores
        }
        #expect(plan(2, 1, 2, 2), "the only rank on its node")
        #expect(plan(4, 2, 8, 4), "bound by its launcher to half the node")
        #expect(!plan(4, 2, 8, 8), "two ranks, neither bound: their masks overlap")
        #expect(!plan(4, 1, 2, 2), "oversubscribed")
        #expect(!plan(4, 2, 8, 2), "bound to fewer cores than its threads")
        #expect(Distributed.launched(["OMPI_COMM_WORLD_LOCAL_SIZE": "2"]) && Distributed.launched(["SLURM_NTASKS_PER_NODE": "4"]))
        #expect(!Distributed.launched([:]))
    }

    @Test func aBackgroundSaveKeepsTheLoopThreadToItsCoreUntilTheCommit() throws {
        try Self.onOwnThread {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-pin-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let cores = ThreadAffinity.currentThreadCores()
            let store = CheckpointStore(directory: directory)
            let saver = CheckpointSaver(store: store, communicator: LocalCommunicator(), background: true,
                                        metrics: nil, copyPool: .serial, pinsWriter: true)
            let content = CheckpointContent(step: 1, config: "", arrays: [SavedArray(name: "w", values: (0..<10_000).map(Float.init))])
            try saver.save(content, step: 1, wait: false)
            #expect(saver.isWriting)
            if let cores, cores.count >= 2 {
                let during = try #require(ThreadAffinity.currentThreadCores())
                #expect(during.count == 1 && cores.contains(during[0]), "the loop thread keeps to one of its cores: \(during)")
            } else {
                #expect(ThreadAffinity.currentThreadCores() == cores, "one core: nothing to separate")
            }
            try saver.commitPending()
            #expect(ThreadAffinity.currentThreadCores() == cores, "the commit gives the loop thread its cores back")
            let loaded = try LoadedCheckpoint(contentsOf: try #require(saver.lastCommitted), threads: 1)
            #expect(try loaded.array("w") == (0..<10_000).map(Float.init))

            // pin_writer off: the loop thread is never narrowed.
            let unpinned = CheckpointSaver(store: store, communicator: LocalCommunicator(), background: true,
                                           metrics: nil, copyPool: .serial, pinsWriter: false)
            var second = content
            second.step = 2
            try unpinned.save(second, step: 2, wait: false)
            #expect(ThreadAffinity.currentThreadCores() == cores)
            // A waiting save commits the one in flight, then waits for its background pruning
            // before it prunes itself: nothing is left running when the directory is removed.
            second.step = 3
            try unpinned.save(second, step: 3, wait: true)
            #expect(ThreadAffinity.currentThreadCores() == cores)
        }
    }
}
