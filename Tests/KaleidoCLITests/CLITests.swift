import Foundation
import Testing
@testable import kaleido

/// Runs the built `kaleido` executable, which sits next to the test bundle in the build folder.
/// `environment` is added to this process's own, without the variables in `unsetting`.
func runKaleido(_ arguments: [String], environment: [String: String] = [:], unsetting: Set<String> = [])
    throws -> (status: Int32, stdout: String, stderr: String) {
    let buildDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    let process = Process()
    process.executableURL = buildDirectory.appendingPathComponent("kaleido")
    process.arguments = arguments
    if !environment.isEmpty || !unsetting.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
            .filter { !unsetting.contains($0.key) }
    }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

@Suite struct CLITests {
    @Test func helpListsTheSubcommandsThatExist() throws {
        let result = try runKaleido(["--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("version") && result.stdout.contains("config"))
    }

    @Test func versionReportsTheLinkedLibraries() throws {
        let result = try runKaleido(["version"])
        #expect(result.status == 0)
        for needle in ["OpenBLAS", "Open MPI", "zstd", "libpng", "openblas threads"] {
            #expect(result.stdout.contains(needle), "missing \(needle) in \(result.stdout)")
        }
        let json = try runKaleido(["version", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect((object?["zstd"] as? String)?.hasPrefix("1.") == true)
    }

    @Test func theCPUCapabilityCapReachesEveryKernelFamilyAndRefusesUnknownValues() throws {
        let unknown = try runKaleido(["version"], environment: ["KALEIDO_CPU_CAPABILITY": "sse9"])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("KALEIDO_CPU_CAPABILITY=sse9") && unknown.stderr.contains("avx2"), "\(unknown.stderr)")

        // scripts/test.sh hands the tests OpenBLAS's core type, which a user's choice would
        // keep over the cap: the child chooses its own here.
        func versionObject(_ environment: [String: String]) throws -> [String: Any] {
            let result = try runKaleido(["version", "--json"], environment: environment, unsetting: ["OPENBLAS_CORETYPE"])
            #expect(result.status == 0, "\(result.stderr)")
            return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
        }
        let plain = try versionObject(["KALEIDO_CPU_CAPABILITY": "default"])
        #expect(plain["kernels"] as? String == "plain loops" || (plain["kernels"] as? String)?.hasPrefix("plain loops (capped") == true)
        let flags = BLASCoreSelection.cpuFlags()
        guard flags.contains("avx2") && flags.contains("fma") else { return }
        let capped = try versionObject(["KALEIDO_CPU_CAPABILITY": "avx2"])
        #expect((capped["kernels"] as? String)?.hasPrefix("AVX2 + FMA") == true, "\(capped)")
        // OpenBLAS is capped with the kernels: no AVX-512 core under avx2, no AVX2 one under default.
        let cappedCore = (capped["openblas_config"] as? String) ?? ""
        #expect(!["SkylakeX", "Cooperlake", "SapphireRapids"].contains { cappedCore.contains($0) }, "\(cappedCore)")
        #expect(!["Haswell", "Zen", "SkylakeX"].contains { ((plain["openblas_config"] as? String) ?? "").contains($0) }, "\(plain)")
        if flags.contains("avx512f") {
            #expect((capped["kernels"] as? String)?.contains("the CPU has AVX-512F") == true, "\(capped)")
            #expect((try versionObject([:])["kernels"] as? String) == "AVX-512F")
        }
    }

    @Test func configShowPrintsTheResolvedConfig() throws {
        let result = try runKaleido(["config", "show", "--set", "optim.lr=0.5"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("lr: 0.5"))
    }

    @Test func badConfigValueFailsNamingTheKey() throws {
        let result = try runKaleido(["config", "show", "--set", "optim.lr=fast"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("optim.lr: expected a number, got \"fast\""))
    }

    @Test func benchKernelsPrintsJSONLinesAndASummary() throws {
        let result = try runKaleido(["bench", "kernels", "--only", "sgemm", "--seconds", "0.01", "--threads", "1", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let objects = try result.stdout.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let kernels = objects.compactMap { $0?["kernel"] as? String }
        #expect(kernels.contains("fma_peak") && kernels.contains("sgemm") && !kernels.contains("conv3x3"))
        #expect(objects.allSatisfy { ($0?["gflops"] as? Double).map { $0 > 0 } ?? ($0?["kernel"] == nil) })
    }

    @Test func benchRejectsAnUnknownKernelFamily() throws {
        let result = try runKaleido(["bench", "kernels", "--only", "convolution"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("unknown kernel family convolution"))
    }

    @Test func benchStepRefusesViewsTooSmallForTheModel() throws {
        let result = try runKaleido(["bench", "step", "--models", "convnext-atto", "--small", "8", "--steps", "1"])
        #expect(result.status != 0 && result.stderr.contains("--small 8: convnext-atto needs at least 16 pixels (a 2×2 stem, then 3 downsamplings by 2)"),
                "\(result.stderr)")
    }

    @Test func modelSummaryPrintsTheReferenceParameterCount() throws {
        let result = try runKaleido(["model", "summary", "resnet50"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("25,557,032 (25.56 M)"))
        #expect(result.stdout.contains("layer4.2"))
        let unknown = try runKaleido(["model", "summary", "resnet51"])
        #expect(unknown.status != 0 && unknown.stderr.contains("unknown model \"resnet51\""))
        // Too small for ConvNeXt's stem and downsamplings: an error, not a stop inside a layer.
        let tiny = try runKaleido(["model", "summary", "convnext-atto", "--input-size", "16"])
        #expect(tiny.status != 0 && tiny.stderr.contains("--input-size 16: convnext-atto needs at least 32 pixels (a 4×4 stem, then 3 downsamplings by 2)"),
                "\(tiny.stderr)")
        #expect(try runKaleido(["model", "summary", "convnext-atto", "--input-size", "32"]).status == 0)
    }
}

@Suite struct PreemptionCLITests {
    func settings(_ root: URL, steps: Int = 60, every: Int = 0) -> [String] {
        ["--set", "run.output_dir=\(root.path)", "--set", "run.steps=\(steps)", "--set", "model.base_width=4",
         "--set", "data.batch_size=8", "--set", "data.synthetic_train_size=64", "--set", "data.synthetic_val_size=16",
         "--set", "eval.linear_probe=false", "--set", "checkpoint.every_steps=\(every)", "--set", "ssl.projector_hidden=32",
         "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32", "--set", "run.log_every=1"]
    }

    /// Starts `kaleido pretrain` with stdout to `<root>/stdout` and returns once `ready` holds.
    func startPretraining(_ root: URL, settings: [String], environment: [String: String] = [:], until ready: () -> Bool) throws -> Process {
        let process = Process()
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("kaleido")
        process.arguments = ["pretrain"] + settings
        let output = root.appendingPathComponent("stdout")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, !ready() { Thread.sleep(forTimeInterval: 0.05) }
        return process
    }

    func checkpoints(_ root: URL) throws -> [URL] {
        let directory = root.appendingPathComponent("debug/checkpoints")
        return try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("step-") }.sorted()
            .map { directory.appendingPathComponent($0) }
    }

    /// SIGTERM (preemption) or SIGINT (Ctrl-C) to a running `kaleido pretrain`: it finishes the
    /// step, saves a checkpoint that verifies, exits 0 (SIGTERM: the job may be requeued) or 130
    /// (SIGINT, as a shell reports an interrupted command), and `--resume auto` continues from it
    /// to the end.
    @Test(arguments: [(SIGTERM, Int32(0)), (SIGINT, Int32(130))])
    func aSignalSavesAndExitsThenResumeFinishes(signal: Int32, status: Int32) throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-signal-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let metrics = root.appendingPathComponent("debug/metrics.jsonl")
        // Wait until it is training (metrics appear), then ask it to stop.
        let process = try startPretraining(root, settings: settings(root)) {
            ((try? String(contentsOf: metrics, encoding: .utf8))?.count ?? 0) > 0
        }
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == status)
        let printed = try String(contentsOf: root.appendingPathComponent("stdout"), encoding: .utf8)
        #expect(printed.contains("preempted: checkpoint"), "\(printed)")

        let saved = try checkpoints(root)
        #expect(saved.count == 1)
        let verify = try runKaleido(["checkpoint", "verify", saved[0].path])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")

        let resumed = try runKaleido(["pretrain", "--resume", "auto"] + settings(root))
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resumed") && resumed.stdout.contains("pretrained 60 steps"))
    }

    /// Ctrl-C twice: the second ends the process at once (exit 130) without waiting for the step
    /// or the save in flight, and the checkpoint committed before still verifies and resumes. The
    /// save of step 10 is held mid-shard (fault injection), so the first Ctrl-C cannot finish it.
    @Test func aSecondInterruptAbortsAtOnceAndKeepsTheLastCheckpoint() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-sigint2-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let settings = settings(root, steps: 20, every: 5)
        let marker = root.appendingPathComponent("paused")
        let process = try startPretraining(root, settings: settings,
                                           environment: ["KALEIDO_FAULT_PAUSE_AT": "shard-write@10", "KALEIDO_FAULT_PAUSE_MARKER": marker.path]) {
            FileManager.default.fileExists(atPath: marker.path)
        }
        #expect(FileManager.default.fileExists(atPath: marker.path))
        kill(process.processIdentifier, SIGINT)
        Thread.sleep(forTimeInterval: 0.5)   // two signals sent together would arrive as one
        #expect(process.isRunning, "one Ctrl-C during a save must let the save finish, not end the process")
        kill(process.processIdentifier, SIGINT)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            Issue.record("the second Ctrl-C did not end the process within 10 s")
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 130)
        let saved = try checkpoints(root)
        #expect(saved.map(\.lastPathComponent) == ["step-00000005"])
        let verify = try runKaleido(["checkpoint", "verify", saved[0].path])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let resumed = try runKaleido(["pretrain", "--resume", "auto", "--stop-after", "1"] + settings)
        #expect(resumed.status == 0 && resumed.stderr.contains("step-00000005"), "\(resumed.stderr)")
    }
}
