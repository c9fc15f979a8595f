import Foundation
import Testing

/// The release binary — what users run; its targets are built with -O, which keeps every
/// precondition — on inputs that break what the libraries require, reached from the command
/// line: each stops with an error naming the file, key or parameter at fault and a non-zero
/// exit status, never a signal. scripts/test.sh builds it before the tests.
@Suite(.serialized) struct ReleaseBuildInputTests {
    static let kaleido = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("release/kaleido")

    struct Outcome {
        var exited: Bool
        var status: Int32
        var output: String
    }

    /// Runs the release kaleido (under `mpirun -np ranks` when ranks > 1); stdout and stderr together.
    static func run(_ arguments: [String], ranks: Int = 1) throws -> Outcome {
        let process = Process()
        if ranks > 1 {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["mpirun", "-np", "\(ranks)", "--oversubscribe", "--bind-to", "none", kaleido.path] + arguments
            process.environment = ProcessInfo.processInfo.environment.merging(
                ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_btl_vader_single_copy_mechanism": "none"]) { _, new in new }
        } else {
            process.executableURL = kaleido
            process.arguments = arguments
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-release-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        process.waitUntilExit()
        return Outcome(exited: process.terminationReason == .exit, status: process.terminationStatus,
                       output: try String(contentsOf: output, encoding: .utf8))
    }

    static func settings(_ root: URL, name: String, omnivore: Bool = false) -> [String] {
        ["--set", "run.output_dir=\(root.path)/runs", "--set", "run.name=\(name)", "--set", "run.steps=1",
         "--set", "data.batch_size=4", "--set", "eval.linear_probe=false", "--set", "ssl.projector_hidden=32",
         "--set", "ssl.projector_dim=16", "--set", "ssl.predictor_hidden=32"]
            + (omnivore ? ["--set", "model.arch=omnivore_swin_cifar", "--set", "model.base_width=8", "--set", "data.clip_frames=2"]
                        : ["--set", "model.base_width=4"])
    }

    /// The embedded dataset written as folders (images, RGB-D) under `root/data`.
    static func exportData(_ root: URL) throws {
        let export = try run(["data", "export-synthetic", root.appendingPathComponent("data").path, "--set", "data.batch_size=4",
                              "--set", "data.synthetic_train_size=16", "--set", "data.synthetic_val_size=4", "--modalities", "image,rgbd"])
        #expect(export.exited && export.status == 0, "\(export.output)")
    }

    func expectStopped(_ outcome: Outcome, naming needles: [String]) {
        #expect(outcome.exited, "ended by a signal, not an error:\n\(outcome.output)")
        #expect(outcome.status != 0)
        // Lines holding the error, not starting with it: under mpirun each is prefixed with its rank.
        let errorLines = outcome.output.split(separator: "\n").filter { $0.contains("Error: ") }.joined(separator: "\n")
        for needle in needles { #expect(errorLines.contains(needle), "no error naming \(needle):\n\(outcome.output)") }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: kaleido.path)))
    func badInputsStopWithAnErrorNotASignal() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-release-inputs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try Self.exportData(root)
        let data = root.appendingPathComponent("data")

        // Malformed PNGs (a PNG signature, then junk) and JPEGs (an SOI marker, then junk): each is
        // skipped and named; with nothing readable left, the run stops naming the dataset.
        let train = data.appendingPathComponent("image/train")
        let images = FileManager.default.enumerator(atPath: train.path)!.compactMap { $0 as? String }.filter { $0.hasSuffix(".png") }.sorted()
        for (index, image) in images.enumerated() {
            let file = train.appendingPathComponent(image)
            try FileManager.default.removeItem(at: file)
            if index.isMultiple(of: 2) {
                try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + Array("junk".utf8)).write(to: file)
            } else {
                try Data([0xFF, 0xD8, 0xFF, 0xE0] + Array("junk".utf8)).write(to: file.deletingPathExtension().appendingPathExtension("jpg"))
            }
        }
        let broken = try Self.run(["pretrain"] + Self.settings(root, name: "broken")
                                  + ["--set", "data.dataset=image_folder", "--set", "data.root=\(data.path)/image"])
        expectStopped(broken, naming: [train.path, "unreadable samples in a row"])
        #expect(broken.output.contains("not a readable PNG") && broken.output.contains("not a readable JPEG"), "\(broken.output)")

        // A depth map that is an 8-bit RGB PNG.
        let rgbd = data.appendingPathComponent("rgbd")
        let depth = try #require(FileManager.default.enumerator(atPath: rgbd.path)?.compactMap { $0 as? String }
            .filter { $0.contains("/depth/") && $0.hasSuffix(".png") }.sorted().first)
        let colour = try #require(FileManager.default.enumerator(atPath: rgbd.path)?.compactMap { $0 as? String }
            .filter { $0.contains("/image/") && $0.hasSuffix(".png") }.sorted().first)
        try FileManager.default.removeItem(at: rgbd.appendingPathComponent(depth))
        try FileManager.default.copyItem(at: rgbd.appendingPathComponent(colour), to: rgbd.appendingPathComponent(depth))
        let badDepth = try Self.run(["pretrain"] + Self.settings(root, name: "depth", omnivore: true)
                                    + ["--set", "data.dataset=rgbd", "--set", "data.root=\(rgbd.path)",
                                       "--set", "data.mix.image=0", "--set", "data.mix.rgbd=1"])
        expectStopped(badDepth, naming: [rgbd.appendingPathComponent(depth).path, "16-bit grayscale"])

        // Batches that cannot be split: a joint step with one video sample; 5 images over 3 ranks.
        let oneVideo = try Self.run(["pretrain"] + Self.settings(root, name: "split", omnivore: true)
                                    + ["--set", "data.mix.video=1", "--set", "data.mix.rgbd=1"])
        expectStopped(oneVideo, naming: ["data.batch_size", "video group 1 samples"])
        let threeRanks = try Self.run(["pretrain"] + Self.settings(root, name: "split3", omnivore: true) + ["--set", "data.batch_size=5"],
                                      ranks: 3)
        expectStopped(threeRanks, naming: ["data.batch_size", "1 on some of 3 ranks", "/3] Error: "])

        // Mismatched shapes: a checkpoint of a 4-wide network evaluated as an 8-wide one.
        let trained = try Self.run(["pretrain"] + Self.settings(root, name: "narrow"))
        #expect(trained.exited && trained.status == 0, "\(trained.output)")
        let wider = try Self.run(["eval", "linear", "--checkpoint", "\(root.path)/runs/narrow", "--set", "model.base_width=8"])
        expectStopped(wider, naming: ["narrow/checkpoints/step-00000001", "'conv1.weight' is [4, 3, 3, 3]", "[8, 3, 3, 3]"])
    }
}
