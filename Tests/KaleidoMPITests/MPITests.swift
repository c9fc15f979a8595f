import Foundation
import Testing

/// Runs the built `kaleido` under `mpirun` with `ranks` processes on this machine.
func mpirun(ranks: Int, _ arguments: [String], environment extra: [String: String] = [:], timeout: TimeInterval = 600) throws
    -> (status: Int32, stdout: String, stderr: String) {
    let kaleido = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("kaleido")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    var environment = ProcessInfo.processInfo.environment
    environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"  // containers without CMA
    for (key, value) in extra { environment[key] = value }
    // --oversubscribe: more ranks than this machine's cores; --bind-to none: ranks share them;
    // -x exports the extra variables to every rank.
    process.arguments = ["mpirun", "-np", String(ranks), "--oversubscribe", "--bind-to", "none"]
        + extra.keys.sorted().flatMap { ["-x", $0] } + [kaleido.path] + arguments
    process.environment = environment
    // Output goes to files: pipes could fill up and block the ranks while we wait.
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-mpirun-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outURL = directory.appendingPathComponent("stdout"), errURL = directory.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    let stdoutData = try Data(contentsOf: outURL), stderrData = try Data(contentsOf: errURL)
    return (process.terminationStatus, String(decoding: stdoutData, as: UTF8.self), String(decoding: stderrData, as: UTF8.self))
}

@Suite(.serialized) struct MPITests {
    /// Every bucket cap (one tensor per bucket, 1 MiB, 4 MiB, 25 MiB, unbounded) gives
    /// bit-identical averaged gradients, on 2 and on 4 ranks, and runs repeat bit for bit.
    @Test(arguments: [2, 4])
    func bucketedAllReduceIsDeterministic(ranks: Int) throws {
        let arguments = ["bench", "allreduce", "--floats", "300007", "--tensor-floats", "7001", "--repetitions", "1", "--json"]
        let first = try mpirun(ranks: ranks, arguments)
        #expect(first.status == 0, "\(first.stderr)")
        let rows = first.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let checksums = rows.compactMap { $0["checksum"] as? String }.filter { $0 != "-" }
        #expect(checksums.count == 5 && Set(checksums).count == 1, "\(first.stdout)")
        #expect(rows.allSatisfy { ($0["world_size"] as? Int) == ranks })
        let second = try mpirun(ranks: ranks, arguments)
        let again = second.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["checksum"] as? String
        }.filter { $0 != "-" }
        #expect(again == checksums, "run to run")
    }

    /// The same global batch, seed and config on 1, 2 and 4 ranks (SyncBN on, drop path off)
    /// gives the same loss curve within float-summation tolerance: 1e-4 relative per step. Ranks
    /// see different shards; the loss gathers the global batch; gradients are averaged in 16 KiB
    /// buckets (about a dozen), so reductions overlap backward and each other, with SyncBN sums
    /// in between — every rank must still start its collectives in the same order.
    @Test func lossCurveDoesNotDependOnTheWorldSize() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-worldsize-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        var curves: [Int: [Int: Double]] = [:]
        for ranks in [1, 2, 4] {
            let arguments = ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=w\(ranks)",
                             "--set", "run.steps=4", "--set", "run.log_every=1", "--set", "model.base_width=4",
                             "--set", "data.batch_size=8", "--set", "data.synthetic_train_size=64", "--set", "data.synthetic_val_size=16",
                             "--set", "eval.linear_probe=false", "--set", "checkpoint.every_steps=0", "--set", "dist.sync_bn=true",
                             "--set", "dist.threads=1", "--set", "dist.bucket_mb=0.015625", "--set", "ssl.projector_hidden=32",
                             "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32", "--set", "ssl.queue_size=16"]
            let result = try mpirun(ranks: ranks, arguments)
            #expect(result.status == 0, "\(ranks) ranks: \(result.stderr)")
            // One thread per rank: the node is oversubscribed exactly when ranks exceed cores, and says so.
            let oversubscribed = ranks > ProcessInfo.processInfo.processorCount
            #expect(result.stderr.contains("the node is oversubscribed") == oversubscribed, "\(ranks) ranks: \(result.stderr)")
            #expect(result.stderr.contains("compute threads") && result.stderr.contains("ranks_on_node=\(ranks)"), "\(result.stderr)")
            curves[ranks] = try lossCurve(root.appendingPathComponent("w\(ranks)"))
            let metrics = try String(contentsOf: root.appendingPathComponent("w\(ranks)/metrics.jsonl"), encoding: .utf8)
            let buckets = try metrics.split(separator: "\n").compactMap {
                (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["buckets"] as? Double
            }
            #expect(buckets.count == 4 && buckets.allSatisfy { $0 >= 8 }, "buckets per step: \(buckets)")
        }
        let reference = try #require(curves[1])
        #expect(reference.count == 4)
        for ranks in [2, 4] {
            for (step, loss) in reference.sorted(by: { $0.key < $1.key }) {
                let other = try #require(curves[ranks]?[step], "\(ranks) ranks logged no loss at step \(step)")
                #expect(abs(other - loss) <= 1e-4 * abs(loss), "step \(step): 1 rank \(loss), \(ranks) ranks \(other)")
            }
        }
    }

    /// Resume at world size 2: 3 steps, save, stop; resume to 6 — the loss curve equals the
    /// uninterrupted 2-rank run's bit for bit. Resuming the same checkpoint on 1 rank (SyncBN,
    /// so the computation is the same) stays within 1e-4.
    @Test func resumeIsExactOnTwoRanksAndReshardsToOne() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-resume2-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        func settings(_ name: String) -> [String] {
            ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=\(name)", "--set", "run.steps=6",
             "--set", "run.log_every=1", "--set", "model.base_width=4", "--set", "data.batch_size=8",
             "--set", "data.synthetic_train_size=64", "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false",
             "--set", "checkpoint.every_steps=0", "--set", "dist.sync_bn=true", "--set", "dist.threads=1",
             "--set", "ssl.projector_hidden=32", "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32",
             "--set", "ssl.queue_size=16"]
        }
        func curve(_ name: String) throws -> [Int: Double] {
            let text = try String(contentsOf: root.appendingPathComponent("\(name)/metrics.jsonl"), encoding: .utf8)
            var result: [Int: Double] = [:]
            for line in text.split(separator: "\n") {
                let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                if row["kind"] as? String == "train" { result[row["step"] as! Int] = row["loss"] as? Double }
            }
            return result
        }
        #expect(try mpirun(ranks: 2, settings("straight")).status == 0)
        #expect(try mpirun(ranks: 2, settings("sliced") + ["--stop-after", "3"]).status == 0)
        // A copy of the 3-step checkpoint, to resume on one rank as well.
        let checkpoints = root.appendingPathComponent("sliced/checkpoints")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("single"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: checkpoints, to: root.appendingPathComponent("single/checkpoints"))
        let resumed = try mpirun(ranks: 2, settings("sliced") + ["--resume", "auto"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let single = try mpirun(ranks: 1, settings("single") + ["--resume", "auto"])
        #expect(single.status == 0, "\(single.stderr)")

        let expected = try curve("straight"), got = try curve("sliced"), resharded = try curve("single")
        #expect(expected.count == 6)
        for step in 1...6 {
            #expect(got[step].map(\.bitPattern) == expected[step].map(\.bitPattern), "step \(step): \(String(describing: got[step])) vs \(String(describing: expected[step]))")
        }
        for step in 4...6 {
            let a = try #require(resharded[step]), b = try #require(expected[step])
            #expect(abs(a - b) <= 1e-4 * abs(b), "step \(step) on 1 rank: \(a) vs \(b)")
        }
    }

    /// Omnivore joint steps (image, video and RGB-D groups of 5, 5 and 4: ranks hold 2 or 3 of
    /// each) on 2 ranks with SyncBN give the 1-rank losses of the same global batch, every
    /// modality's too, within 1e-6 relative (on configs/omnivore-debug.yaml's batch the losses of
    /// 6 steps were equal or one float32 ulp apart; the in-process ranks of StepWorldSizeTests,
    /// threads of one debug-built test process, differ by up to 1.5e-5 and are held to 1e-4);
    /// stopped after 2 steps and resumed with --resume auto, the 2-rank run repeats its
    /// uninterrupted loss curve bit for bit. So does a 2-rank run with drop path (0.2: each rank
    /// draws its own masks from a stream keyed by step and rank); both resumed runs also end with
    /// the uninterrupted run's online and target encoders, byte for byte.
    @Test func jointStepsOnTwoRanksMatchOneAndResumeExactly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-joint-mpi-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        func settings(_ name: String, dropPath: Bool = false) -> [String] {
            ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=\(name)", "--set", "run.steps=4",
             "--set", "run.log_every=1", "--set", "model.arch=omnivore_swin_cifar", "--set", "model.base_width=8",
             "--set", "data.mix.video=1", "--set", "data.mix.rgbd=1", "--set", "data.batch_size=14", "--set", "data.clip_frames=2",
             "--set", "data.large_size=16", "--set", "data.small_size=8", "--set", "data.synthetic_train_size=64",
             "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false", "--set", "checkpoint.every_steps=0",
             "--set", "dist.threads=1", "--set", "ssl.projector_hidden=32",
             "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32", "--set", "ssl.queue_size=12"]
            + (dropPath ? ["--set", "model.drop_path=0.2", "--set", "dist.sync_bn=false"] : ["--set", "dist.sync_bn=true"])
        }
        /// The run's final online and target encoders as exported safetensors bytes.
        func encoders(_ name: String) throws -> [Data] {
            try [false, true].map { target in
                let file = root.appendingPathComponent("\(name)-\(target ? "target" : "online").safetensors")
                let export = try runKaleidoCLI(["checkpoint", "export", root.appendingPathComponent("\(name)/checkpoints").path,
                                                "-o", file.path] + (target ? ["--target"] : []))
                #expect(export.status == 0, "\(export.stderr)")
                return try Data(contentsOf: file)
            }
        }
        func curves(_ name: String) throws -> [String: [Int: Double]] {
            let text = try String(contentsOf: root.appendingPathComponent("\(name)/metrics.jsonl"), encoding: .utf8)
            var result: [String: [Int: Double]] = [:]
            for line in text.split(separator: "\n") {
                let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                guard row["kind"] as? String == "train" else { continue }
                for key in ["loss", "loss_image", "loss_video", "loss_rgbd"] {
                    if let value = row[key] as? Double { result[key, default: [:]][row["step"] as! Int] = value }
                }
            }
            return result
        }
        let one = try mpirun(ranks: 1, settings("one"))
        #expect(one.status == 0, "\(one.stderr)")
        let two = try mpirun(ranks: 2, settings("two"))
        #expect(two.status == 0, "\(two.stderr)")
        #expect(try mpirun(ranks: 2, settings("sliced") + ["--stop-after", "2"]).status == 0)
        let resumed = try mpirun(ranks: 2, settings("sliced") + ["--resume", "auto"])
        #expect(resumed.status == 0, "\(resumed.stderr)")

        #expect(try mpirun(ranks: 2, settings("dropping", dropPath: true)).status == 0)
        #expect(try mpirun(ranks: 2, settings("dropping-sliced", dropPath: true) + ["--stop-after", "2"]).status == 0)
        let droppingResumed = try mpirun(ranks: 2, settings("dropping-sliced", dropPath: true) + ["--resume", "auto"])
        #expect(droppingResumed.status == 0, "\(droppingResumed.stderr)")
        let dropping = try curves("dropping"), droppingSliced = try curves("dropping-sliced")
        #expect(dropping["loss"]?.count == 4)
        #expect(dropping.mapValues { $0.mapValues(\.bitPattern) } == droppingSliced.mapValues { $0.mapValues(\.bitPattern) },
                "drop path: resumed \(droppingSliced), uninterrupted \(dropping)")
        #expect(try encoders("dropping") == encoders("dropping-sliced"))
        #expect(try encoders("two") == encoders("sliced"))

        let reference = try curves("one"), distributed = try curves("two"), sliced = try curves("sliced")
        #expect(reference.count == 4 && reference.values.allSatisfy { $0.count == 4 }, "\(reference)")
        for (key, curve) in reference {
            for (step, loss) in curve {
                let other = try #require(distributed[key]?[step], "2 ranks logged no \(key) at step \(step)")
                #expect(abs(other - loss) <= 1e-6 * abs(loss), "\(key) step \(step): 1 rank \(loss), 2 ranks \(other)")
                #expect(sliced[key]?[step]?.bitPattern == other.bitPattern, "\(key) step \(step) resumed: \(String(describing: sliced[key]?[step])) vs \(other)")
            }
        }
    }

    /// A rank whose target network drifts (injected fault) is found by the coordinator's
    /// periodic check, named in the log, and given rank 0's copy; the run completes.
    @Test func aDriftedTargetNetworkIsRepairedAndReported() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-ema-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let arguments = ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.steps=4",
                         "--set", "model.base_width=4", "--set", "data.batch_size=8", "--set", "data.synthetic_train_size=64",
                         "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false", "--set", "checkpoint.every_steps=0",
                         "--set", "dist.threads=1", "--set", "dist.ema_check_every=2", "--set", "ssl.projector_hidden=32",
                         "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32"]
        let faulty = try mpirun(ranks: 2, arguments, environment: ["KALEIDO_FAULT_PERTURB_TARGET": "1:2"])
        #expect(faulty.status == 0, "\(faulty.stderr)")
        #expect(faulty.stderr.contains("target networks differed; re-broadcast rank 0's") && faulty.stderr.contains("ranks=1"),
                "\(faulty.stderr)")
        let clean = try mpirun(ranks: 2, arguments)
        #expect(clean.status == 0 && !clean.stderr.contains("target networks differed"))
    }

    /// Fail-stop: kill -9 of rank 1 in a running 2-rank job ends the whole job within a minute
    /// with a message naming rank 1, the last checkpoint written before stays valid, and
    /// `--resume auto` continues from it bit for bit.
    @Test func aKilledRankEndsTheJobNamingItAndKeepsTheLastCheckpoint() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-kill-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let marker = "kill-\(UUID().uuidString.prefix(8))"
        let arguments = ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=\(marker)", "--set", "run.steps=100000",
                         "--set", "model.base_width=4", "--set", "data.batch_size=8", "--set", "data.synthetic_train_size=64",
                         "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false", "--set", "checkpoint.every_steps=2",
                         "--set", "dist.threads=1", "--set", "ssl.projector_hidden=32", "--set", "ssl.projector_dim=16",
                         "--set", "ssl.predictor_hidden=32"]
        let checkpoints = root.appendingPathComponent("\(marker)/checkpoints")
        // Kill rank 1 once a checkpoint exists (found by its command line and its MPI rank).
        let killer = Thread {
            let deadline = Date().addingTimeInterval(300)
            while Date() < deadline {
                let saved = (try? FileManager.default.contentsOfDirectory(atPath: checkpoints.path))?.filter { $0.hasPrefix("step-") } ?? []
                if !saved.isEmpty, let pid = rankProcess(marker: marker, rank: 1) {
                    kill(pid, SIGKILL)
                    return
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        killer.start()
        let started = Date()
        let result = try mpirun(ranks: 2, arguments, timeout: 400)
        #expect(result.status != 0)
        #expect(Date().timeIntervalSince(started) < 360)
        // Named by a survivor or by mpirun ("process rank 1 with PID … exited on signal 9"), not
        // merely present in rank 1's own log prefix.
        let naming = (result.stderr + result.stdout).split(separator: "\n").filter { $0.contains("rank 1") && !$0.contains("[rank 1/") }
        #expect(!naming.isEmpty, "\(result.stderr)")
        // The newest complete checkpoint still verifies, and the job continues from it exactly:
        // two more steps after a resume give the losses of an uninterrupted run to that step.
        let newest = try #require(try newestCheckpointVerifies(checkpoints))
        let saved = try #require(Int(newest.dropFirst("step-".count)))
        let resumed = try mpirun(ranks: 2, arguments + ["--set", "run.log_every=1", "--resume", "auto", "--stop-after", "2"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let straightArguments = arguments.map { $0 == "run.name=\(marker)" ? "run.name=straight" : $0 }
        let straight = try mpirun(ranks: 2, straightArguments + ["--set", "run.log_every=1", "--stop-after", "\(saved + 2)"])
        #expect(straight.status == 0, "\(straight.stderr)")
        let expected = try lossCurve(root.appendingPathComponent("straight")), got = try lossCurve(root.appendingPathComponent(marker))
        for step in (saved + 1)...(saved + 2) {
            #expect(got[step] != nil && got[step]?.bitPattern == expected[step]?.bitPattern,
                    "step \(step): resumed \(String(describing: got[step])), uninterrupted \(String(describing: expected[step]))")
        }
    }

    /// A rank that stays alive but stops taking part (stalled in a sleep before step 3) does not
    /// hang the others: within dist.timeout_seconds (5 s) rank 0 names rank 1 and aborts the job,
    /// and the checkpoint of step 2 still verifies (saved blocking: a background save of step 2
    /// would be committed only after step 3, which the stall never lets finish).
    @Test func aStalledRankEndsTheJobWithinTheTimeoutNamingIt() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-stall-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let arguments = ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=stall", "--set", "run.steps=100",
                         "--set", "model.base_width=4", "--set", "data.batch_size=8", "--set", "data.synthetic_train_size=64",
                         "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false", "--set", "checkpoint.every_steps=2",
                         "--set", "checkpoint.async=false",
                         "--set", "dist.threads=1", "--set", "dist.timeout_seconds=5", "--set", "ssl.projector_hidden=32",
                         "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32"]
        let started = Date()
        // The stalled rank sleeps for an hour: only the abort can end the job within the test's limit.
        let result = try mpirun(ranks: 2, arguments, environment: ["KALEIDO_FAULT_STALL": "1:3"], timeout: 120)
        let seconds = Date().timeIntervalSince(started)
        #expect(result.status != 0)
        let stallBegan = try #require(logTime(of: "fault injection: stalling", in: result.stderr), "\(result.stderr)")
        let aborted = try #require(logTime(of: "stalled rank: aborting the job", in: result.stderr), "\(result.stderr)")
        // 5 s deadline from when rank 0 began to wait, which is about when rank 1 logged its stall
        // (both leave step 2's checkpoint commit together); slack for a loaded machine both ways.
        let delay = aborted.timeIntervalSince(stallBegan)
        #expect(delay >= 4 && delay < 10, "stall at \(stallBegan), abort at \(aborted)")
        #expect(seconds < 60, "the job took \(seconds) s")
        #expect(result.stderr.contains("missing_ranks=1") && result.stderr.contains("rank(s) 1 did not reach step 3"), "\(result.stderr)")
        let newest = try newestCheckpointVerifies(root.appendingPathComponent("stall/checkpoints"))
        #expect(newest == "step-00000002")
    }
}

/// Whether this process may create network namespaces (root with CAP_NET_ADMIN, `ip` installed).
let networkNamespacesPermitted: Bool = {
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/bin/sh")
    probe.arguments = ["-c", "ip netns add kaleido-probe-$$ && ip netns del kaleido-probe-$$"]
    probe.standardOutput = FileHandle.nullDevice
    probe.standardError = FileHandle.nullDevice
    guard (try? probe.run()) != nil else { return false }
    probe.waitUntilExit()
    return probe.terminationStatus == 0
}()

@Suite(.serialized) struct TwoHostTests {
    /// cluster/netns-two-hosts.sh: one rank in each of two network namespaces joined by a veth
    /// pair, TCP only, the remote daemon started through the rsh agent as on a real cluster.
    /// Four steps of a small debug run give bit for bit the loss curve of the same run on two
    /// ranks of one host, and the coordinator's per-step check finds the target networks equal.
    @Test(.enabled(if: networkNamespacesPermitted, "creating network namespaces needs root with CAP_NET_ADMIN"))
    func twoNamespacesTrainLikeOneHost() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-netns-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        func arguments(_ name: String) -> [String] {
            ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=\(name)", "--set", "run.steps=4",
             "--set", "run.log_every=1", "--set", "model.base_width=4", "--set", "data.batch_size=8",
             "--set", "data.synthetic_train_size=64", "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false",
             "--set", "checkpoint.every_steps=0", "--set", "dist.threads=1", "--set", "dist.ema_check_every=1",
             "--set", "ssl.projector_hidden=32", "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32"]
        }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let kaleido = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("kaleido")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [repository.appendingPathComponent("cluster/netns-two-hosts.sh").path, "--kaleido", kaleido.path, "--"]
            + arguments("netns")
        var environment = ProcessInfo.processInfo.environment
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        process.environment = environment
        let log = root.appendingPathComponent("netns.log")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: log)
        process.standardError = process.standardOutput
        try process.run()
        let deadline = Date().addingTimeInterval(180)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        let output = try String(contentsOf: log, encoding: .utf8)
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(output.contains("daemon of host 10.77.0.2 in network namespace kaleido-b-"), "\(output)")
        #expect(!output.contains("target networks differed"), "\(output)")

        let loopback = try mpirun(ranks: 2, arguments("loopback"))
        #expect(loopback.status == 0, "\(loopback.stderr)")
        let twoHosts = try lossCurve(root.appendingPathComponent("netns")), oneHost = try lossCurve(root.appendingPathComponent("loopback"))
        #expect(oneHost.count == 4)
        #expect(twoHosts.mapValues(\.bitPattern) == oneHost.mapValues(\.bitPattern), "two hosts \(twoHosts), one host \(oneHost)")
        // No namespace of this run is left behind.
        let namespaces = Process()
        namespaces.executableURL = URL(fileURLWithPath: "/bin/sh")
        namespaces.arguments = ["-c", "ip netns list | grep -c kaleido-a-\(process.processIdentifier) || true"]
        let pipe = Pipe()
        namespaces.standardOutput = pipe
        try namespaces.run()
        namespaces.waitUntilExit()
        #expect(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }
}

/// kill -9 of `kaleido pretrain` (one process, or every rank of a 2-rank job, as a lost node
/// would) in the middle of a checkpoint save, stopped at a chosen point by KALEIDO_FAULT_PAUSE_AT
/// so the kill lands there every time.
@Suite(.serialized) struct KilledDuringSaveTests {
    /// (a) during the shard write, (b) after every shard and the manifest are durable but
    /// before the commit rename: either way the checkpoint of step 2 stays the newest valid one,
    /// `--resume auto` continues from it (over the leftover temporary directory), and the
    /// resumed losses equal an uninterrupted run's bit for bit.
    @Test(arguments: [("shard-write", 1), ("before-rename", 1), ("shard-write", 2), ("before-rename", 2)])
    func theLastCheckpointSurvivesAndResumeAutoContinues(point: String, ranks: Int) throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-kill9-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let crashedName = "crashed-\(UUID().uuidString.prefix(8))"
        func arguments(_ name: String) -> [String] {
            ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=\(name)", "--set", "run.steps=6",
             "--set", "run.log_every=1", "--set", "model.base_width=4", "--set", "data.batch_size=8",
             "--set", "data.synthetic_train_size=64", "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false",
             "--set", "checkpoint.every_steps=2", "--set", "dist.threads=1", "--set", "ssl.projector_hidden=32",
             "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32"]
        }
        /// Runs to the end: one process, or `ranks` ranks under mpirun; returns the exit status and stderr.
        func run(_ extra: [String], name: String) throws -> (status: Int32, log: String) {
            if ranks > 1 {
                let result = try mpirun(ranks: ranks, arguments(name) + extra)
                return (result.status, result.stderr)
            }
            let process = try startKaleido(arguments(name) + extra, in: root)
            process.waitUntilExit()
            return (process.terminationStatus, try String(contentsOf: root.appendingPathComponent("kaleido.stderr"), encoding: .utf8))
        }
        let marker = root.appendingPathComponent("paused")
        let fault = ["KALEIDO_FAULT_PAUSE_AT": "\(point)@4", "KALEIDO_FAULT_PAUSE_MARKER": marker.path]
        var crashed: Process?
        let crashedArguments = arguments(crashedName)
        let launcher = Thread {
            if ranks > 1 { _ = try? mpirun(ranks: ranks, crashedArguments, environment: fault, timeout: 300) }
        }
        if ranks > 1 { launcher.start() } else { crashed = try startKaleido(arguments(crashedName), in: root, environment: fault) }
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: marker.path) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        #expect(FileManager.default.fileExists(atPath: marker.path), "the save of step 4 never reached \(point)")
        if let crashed {
            kill(crashed.processIdentifier, SIGKILL)
            crashed.waitUntilExit()
            #expect(crashed.terminationReason == .uncaughtSignal && crashed.terminationStatus == SIGKILL)
        } else {
            // Every rank at once, as when the node goes: found by the run's name and their MPI rank.
            let pids = (0..<ranks).compactMap { rankProcess(marker: crashedName, rank: $0) }
            #expect(pids.count == ranks)
            for pid in pids { kill(pid, SIGKILL) }
            while launcher.isExecuting || !launcher.isFinished { Thread.sleep(forTimeInterval: 0.05) }
        }

        let checkpoints = root.appendingPathComponent("\(crashedName)/checkpoints")
        let names = try FileManager.default.contentsOfDirectory(atPath: checkpoints.path)
        #expect(names.contains(".tmp-step-00000004") && !names.contains("step-00000004"), "\(names)")
        #expect(try newestCheckpointVerifies(checkpoints) == "step-00000002")

        let resumed = try run(["--resume", "auto"], name: crashedName)
        #expect(resumed.status == 0, "\(resumed.log)")
        #expect(resumed.log.contains("step-00000002") && resumed.log.contains("resumed"), "\(resumed.log)")
        #expect(try newestCheckpointVerifies(checkpoints) == "step-00000006")
        #expect(!FileManager.default.fileExists(atPath: checkpoints.appendingPathComponent(".tmp-step-00000004").path))

        #expect(try run([], name: "straight").status == 0)
        let expected = try lossCurve(root.appendingPathComponent("straight")), got = try lossCurve(root.appendingPathComponent(crashedName))
        #expect(expected.count == 6)
        #expect(got.mapValues(\.bitPattern) == expected.mapValues(\.bitPattern), "resumed \(got), uninterrupted \(expected)")
    }
}

/// `--resume auto` with a config whose model differs from the checkpoint's (another width) is
/// refused before training, naming the key (old → new) and the flag that accepts it; accepted
/// with `--resume-allow model.base_width`, it fails on the checkpoint's arrays instead, naming
/// the checkpoint and the first parameter that does not fit.
@Test func resumingWithAnotherModelFailsNamingTheKeyThenTheParameter() throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-mismatch-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: root) }
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    let settings = ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=m", "--set", "data.batch_size=8",
                    "--set", "data.synthetic_train_size=64", "--set", "data.synthetic_val_size=16", "--set", "eval.linear_probe=false",
                    "--set", "dist.threads=1", "--set", "ssl.projector_hidden=32", "--set", "ssl.projector_dim=16",
                    "--set", "ssl.predictor_hidden=32"]
    let first = try startKaleido(settings + ["--set", "run.steps=2", "--set", "model.base_width=4"], in: root)
    first.waitUntilExit()
    #expect(first.terminationStatus == 0)
    func resume(_ extra: [String]) throws -> (status: Int32, log: String) {
        let wider = try startKaleido(settings + ["--set", "run.steps=4", "--set", "model.base_width=8", "--resume", "auto"] + extra, in: root)
        wider.waitUntilExit()
        return (wider.terminationStatus, try String(contentsOf: root.appendingPathComponent("kaleido.stderr"), encoding: .utf8))
    }
    let refused = try resume([])
    #expect(refused.status != 0)
    #expect(refused.log.contains("m/checkpoints/step-00000002") && refused.log.contains("model.base_width: 4 → 8")
            && refused.log.contains("--resume-allow model.base_width") && !refused.log.contains("run.steps: 2 → 4"), "\(refused.log)")
    let allowed = try resume(["--resume-allow", "model.base_width"])
    #expect(allowed.status != 0)
    #expect(allowed.log.contains("m/checkpoints/step-00000002") && allowed.log.contains("'conv1.weight' is [4, 3, 3, 3]")
            && allowed.log.contains("[8, 3, 3, 3]"), "\(allowed.log)")
}

/// Runs the built `kaleido` as one process to the end; its output as text.
func runKaleidoCLI(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("kaleido")
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

/// Starts the built `kaleido` as one process (no MPI launcher), stdout and stderr going to
/// `kaleido.stdout` / `kaleido.stderr` in `directory` (files: a full pipe would block it).
func startKaleido(_ arguments: [String], in directory: URL, environment extra: [String: String] = [:]) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("kaleido")
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(extra) { _, new in new }
    let out = directory.appendingPathComponent("kaleido.stdout"), err = directory.appendingPathComponent("kaleido.stderr")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    return process
}

/// step → training loss from a run directory's metrics.jsonl.
func lossCurve(_ run: URL) throws -> [Int: Double] {
    let text = try String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    var curve: [Int: Double] = [:]
    for line in text.split(separator: "\n") {
        let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        if row["kind"] as? String == "train", let loss = row["loss"] as? Double { curve[row["step"] as! Int] = loss }
    }
    return curve
}

/// The newest `step-*` checkpoint in `directory` if `kaleido checkpoint verify` accepts it.
func newestCheckpointVerifies(_ directory: URL) throws -> String? {
    let saved = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("step-") }.sorted()
    guard let newest = saved.last else { return nil }
    let kaleido = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("kaleido")
    let verify = Process()
    verify.executableURL = kaleido
    verify.arguments = ["checkpoint", "verify", directory.appendingPathComponent(newest).path]
    verify.standardOutput = FileHandle.nullDevice
    verify.standardError = FileHandle.nullDevice
    try verify.run()
    verify.waitUntilExit()
    return verify.terminationStatus == 0 ? newest : nil
}

/// The timestamp of the first log line containing `message` (RankLogHandler's ISO 8601 prefix).
func logTime(of message: String, in log: String) -> Date? {
    guard let line = log.split(separator: "\n").first(where: { $0.contains(message) }),
          let stamp = line.split(separator: " ").first else { return nil }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: String(stamp))
}

/// The PID of the `kaleido` rank whose command line contains `marker` and whose MPI rank is `rank`.
func rankProcess(marker: String, rank: Int) -> Int32? {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
    for entry in entries {
        guard let pid = Int32(entry),
              let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")),
              String(decoding: command, as: UTF8.self).contains(marker),
              String(decoding: command, as: UTF8.self).hasPrefix("/"),
              let environment = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")) else { continue }
        let variables = String(decoding: environment, as: UTF8.self).split(separator: "\0")
        if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
    }
    return nil
}
