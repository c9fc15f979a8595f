import Foundation
import Testing

@Suite struct EvaluationCLITests {
    @Test func evalFinetuneAndReportAreListedWithHelp() throws {
        let help = try runKaleido(["--help"])
        for command in ["eval", "finetune", "report"] { #expect(help.stdout.contains(command), "\(command) missing: \(help.stdout)") }
        let eval = try runKaleido(["eval", "--help"])
        #expect(eval.status == 0 && eval.stdout.contains("linear") && eval.stdout.contains("knn") && eval.stdout.contains("retrieval"))
    }

    @Test func missingCheckpointFailsNamingThePath() throws {
        for command in [["eval", "linear"], ["eval", "knn"], ["eval", "retrieval"], ["finetune"]] {
            let result = try runKaleido(command + ["--checkpoint", "/nonexistent/run-7"])
            #expect(result.status != 0)
            #expect(result.stderr.contains("/nonexistent/run-7: no checkpoint here"), "\(command): \(result.stderr)")
        }
    }

    @Test func badOptionsAreRejectedBeforeAnyWork() throws {
        let encoder = try runKaleido(["eval", "linear", "--checkpoint", "/x", "--encoder", "teacher"])
        #expect(encoder.status != 0 && encoder.stderr.contains("--encoder must be online or target"))
        let fractions = try runKaleido(["finetune", "--checkpoint", "/x", "--fractions", "0.01,2"])
        #expect(fractions.status != 0 && fractions.stderr.contains("--fractions: each must be a number in (0, 1], got \"2\""))
        let pairs = try runKaleido(["eval", "retrieval", "--checkpoint", "/x", "--pairs", "image:audio"])
        #expect(pairs.status != 0 && pairs.stderr.contains("image:audio"))
        // Modalities by name in help and errors, not the raw values.
        let help = try runKaleido(["eval", "linear", "--help"])
        #expect(help.stdout.contains("--modality <image|video|rgbd>") && help.stdout.contains("(values: image, video, rgbd)"), "\(help.stdout)")
        let modality = try runKaleido(["eval", "linear", "--checkpoint", "/x", "--modality", "audio"])
        #expect(modality.status != 0 && modality.stderr.contains("'image', 'video' or 'rgbd'"), "\(modality.stderr)")
    }

    /// A 2-step pretraining of a tiny model, then the eval commands on it through the CLI: the
    /// result lands in <run>/eval as JSON, and a missing dataset folder is named.
    @Test func evalCommandsRunOnAPretrainedCheckpoint() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-eval-cli-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let tiny = ["--set", "run.output_dir=\(root.path)", "--set", "run.name=tiny", "--set", "run.steps=2", "--set", "model.base_width=4",
                    "--set", "data.batch_size=8", "--set", "data.large_size=16", "--set", "data.small_crops=0", "--set", "data.small_size=16",
                    "--set", "data.synthetic_size=16", "--set", "data.synthetic_train_size=32", "--set", "data.synthetic_val_size=16",
                    "--set", "ssl.projector_hidden=16", "--set", "ssl.predictor_hidden=16", "--set", "eval.linear_probe=false",
                    "--set", "dist.threads=1"]
        let pretrain = try runKaleido(["pretrain"] + tiny)
        #expect(pretrain.status == 0, "\(pretrain.stderr)")
        let run = root.appendingPathComponent("tiny")
        let knn = try runKaleido(["eval", "knn", "--checkpoint", run.path, "--k", "5", "--threads", "1", "--json"])
        #expect(knn.status == 0, "\(knn.stderr)")
        let record = try JSONSerialization.jsonObject(with: Data(knn.stdout.utf8)) as? [String: Any]
        let metrics = record?["metrics"] as? [String: Double]
        #expect(record?["name"] as? String == "knn-image" && record?["step"] as? Int == 2)
        #expect(metrics?["val_samples"] == 16 && metrics?["chance"] == 0.1 && (0...1).contains(metrics?["top1"] ?? -1))
        #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("eval/knn-image.json").path))
        let missing = try runKaleido(["eval", "linear", "--checkpoint", run.path, "--data", "/nonexistent/images-3"])
        #expect(missing.status != 0 && missing.stderr.contains("/nonexistent/images-3: dataset folder does not exist"), "\(missing.stderr)")

        // The same weights exported with timm/torchvision names and evaluated with --init in the
        // same model and data: the same kNN result, from a step-0 run directory named after the file.
        let file = root.appendingPathComponent("encoder.safetensors")
        let export = try runKaleido(["checkpoint", "export", run.appendingPathComponent("checkpoints").path, "--output", file.path])
        #expect(export.status == 0, "\(export.stderr)")
        // The run directory names the same checkpoint, as it does for `kaleido eval`.
        let fromRun = root.appendingPathComponent("encoder-from-run.safetensors")
        let exportRun = try runKaleido(["checkpoint", "export", run.path, "--output", fromRun.path])
        #expect(exportRun.status == 0, "\(exportRun.stderr)")
        #expect(try Data(contentsOf: fromRun) == Data(contentsOf: file))
        let tinyWithoutName = tiny.filter { $0 != "--set" && $0 != "run.name=tiny" }.flatMap { ["--set", $0] }
        let fromFile = try runKaleido(["eval", "knn", "--init", file.path, "--k", "5", "--threads", "1", "--json"] + tinyWithoutName)
        #expect(fromFile.status == 0, "\(fromFile.stderr)")
        let fileRecord = try JSONSerialization.jsonObject(with: Data(fromFile.stdout.utf8)) as? [String: Any]
        #expect((fileRecord?["metrics"] as? [String: Double])?["top1"] == metrics?["top1"], "\(fromFile.stdout) vs \(knn.stdout)")
        #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent("encoder-init/eval/knn-image.json").path))
        let both = try runKaleido(["eval", "knn", "--init", file.path, "--checkpoint", run.path])
        #expect(both.status != 0 && both.stderr.contains("give --checkpoint or --init (one of them)"), "\(both.stderr)")
    }

    /// Fine-tuning an Omnivore checkpoint on each modality: the classifier is one dataset head,
    /// named after the modality, with the dataset's classes (it once stopped: no head selected).
    @Test func finetuneRunsOnAnOmnivoreCheckpointForEveryModality() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-finetune-omnivore-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let run = root.appendingPathComponent("omnivore")
        let pretrain = try runKaleido(["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.name=omnivore", "--set", "run.steps=1",
                                       "--set", "model.arch=omnivore_swin_cifar", "--set", "model.base_width=8", "--set", "data.batch_size=12",
                                       "--set", "data.mix.video=1", "--set", "data.mix.rgbd=1", "--set", "data.clip_frames=2",
                                       "--set", "data.small_crops=0", "--set", "data.synthetic_train_size=24", "--set", "data.synthetic_val_size=8",
                                       "--set", "ssl.projector_hidden=16", "--set", "ssl.predictor_hidden=16",
                                       "--set", "eval.linear_probe=false", "--set", "dist.threads=1"])
        #expect(pretrain.status == 0, "\(pretrain.stderr)")
        for modality in ["image", "video", "rgbd"] {
            let finetune = try runKaleido(["finetune", "--checkpoint", run.path, "--modality", modality, "--steps", "2",
                                           "--fractions", "0.5", "--threads", "1", "--json"])
            #expect(finetune.status == 0, "\(modality): \(finetune.stderr)")
            let records = finetune.stdout.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            #expect(!records.isEmpty && records.allSatisfy { ($0["metrics"] as? [String: Double])?["top1"] != nil },
                    "\(modality): \(finetune.stdout)")
        }
    }

    @Test func reportOnAMissingRunNamesIt() throws {
        let result = try runKaleido(["report", "/nonexistent/run-9"])
        #expect(result.status != 0 && result.stderr.contains("/nonexistent/run-9: no metrics.jsonl"), "\(result.stderr)")
    }

    /// A run directory with hand-written metrics and one result: the page has one path per curve
    /// with one point per logged step, and the result's row.
    @Test func reportWritesThePageAndPNGs() throws {
        let run = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-report-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: run) }
        try FileManager.default.createDirectory(at: run.appendingPathComponent("eval"), withIntermediateDirectories: true)
        var lines: [String] = []
        for step in stride(from: 10, through: 60, by: 10) {
            lines.append("{\"kind\":\"train\",\"step\":\(step),\"loss\":\(5.0 - Double(step) / 20),\"lr\":0.001,\"ema_momentum\":0.99,\"images_per_second\":100}")
            lines.append("{\"kind\":\"train\",\"step\":\(step),\"online_probe_acc\":\(Double(step) / 100),\"online_probe_loss\":1.5}")
        }
        lines.append("{\"kind\":\"probe\",\"step\":60,\"top1\":0.61,\"top5\":0.97,\"knn_top1\":0.55}")
        try lines.joined(separator: "\n").write(to: run.appendingPathComponent("metrics.jsonl"), atomically: true, encoding: .utf8)
        let record = """
        {"checkpoint":"/r/checkpoints/step-00000060","data":"synthetic","date":"2026-01-01T00:00:00Z","encoder":"online","kind":"knn",
         "metrics":{"top1":0.42,"top5":0.9},"name":"knn-image","seconds":1.5,"settings":{"k":"20"},"step":60}
        """
        try record.write(to: run.appendingPathComponent("eval/knn-image.json"), atomically: true, encoding: .utf8)

        let result = try runKaleido(["report", run.path])
        #expect(result.status == 0, "\(result.stderr)")
        let html = try String(contentsOf: run.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(html.components(separatedBy: "data-points=\"6\"").count - 1 == 6, "six curves of six points")
        #expect(html.contains("knn-image") && html.contains("42.0%") && html.contains("61.0%"))
        for png in ["loss", "lr", "ema_momentum", "images_per_second", "online_probe_acc", "online_probe_loss"] {
            #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("report/\(png).png").path), "\(png).png")
        }
        try "{\"step\": 1}\n".write(to: run.appendingPathComponent("metrics.jsonl"), atomically: true, encoding: .utf8)
        let broken = try runKaleido(["report", run.path])
        #expect(broken.status != 0 && broken.stderr.contains("metrics.jsonl:1: needs integer \"step\" and string \"kind\""))
    }
}
