import Foundation
import Testing
import KaleidoCheckpoint
import KaleidoDist
@testable import KaleidoTrain

/// Omnivore joint-modality pretraining through `PretrainingRun`, as `kaleido pretrain` runs it:
/// the 32-px Omnivore Swin on the synthetic images, clips and RGB-D scenes.
@Suite(.serialized) struct JointPretrainingTests {
    static func config(_ root: URL, name: String, steps: Int = 4, overrides: [String] = []) throws -> ResolvedConfig {
        try ConfigLoader.load(overrides: [
            "run.output_dir=\(root.path)", "run.name=\(name)", "run.steps=\(steps)", "run.log_every=1",
            "model.arch=omnivore_swin_cifar", "model.base_width=8",
            "data.mix.image=1", "data.mix.video=1", "data.mix.rgbd=1", "data.batch_size=14",
            "data.clip_frames=2", "data.synthetic_train_size=64", "data.synthetic_val_size=16", "data.large_size=16",
            "data.small_size=8", "ssl.projector_hidden=32", "ssl.projector_dim=16", "ssl.predictor_hidden=32",
            "ssl.queue_size=12", "optim.warmup_steps=1", "checkpoint.every_steps=0", "eval.linear_probe=false",
        ] + overrides)
    }

    static func rows(_ directory: URL, kind: String = "train") throws -> [[String: Any]] {
        let text = try String(contentsOf: directory.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").compactMap {
            let row = try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            return row["kind"] as? String == kind ? row : nil
        }
    }

    static func losses(_ directory: URL) throws -> [Int: Double] {
        var result: [Int: Double] = [:]
        for row in try rows(directory) { if let loss = row["loss"] as? Double { result[row["step"] as! Int] = loss } }
        return result
    }

    /// Every step holds an image, a video and an RGB-D group (5/5/4 samples); each has its own
    /// loss in the metrics, its own queue in the checkpoint, and, with the supervised objective,
    /// its own head under one set of `heads.*` names.
    @Test func jointStepsTrainEveryModalityWithItsOwnQueueAndHead() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-joint-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let resolved = try Self.config(root, name: "joint", overrides: ["ssl.objective=relicv2_supervised"])
        let (summary, directory) = try PretrainingRun(resolved: resolved).run(communicator: LocalCommunicator(), threads: 2)
        #expect(summary.stepsRun == 4 && summary.finalLoss.isFinite)
        let rows = try Self.rows(directory)
        #expect(rows.count == 4)
        for row in rows {
            let parts = ["image", "video", "rgbd"].map { row["loss_\($0)"] as? Double }
            #expect(parts.allSatisfy { $0 != nil && $0!.isFinite && $0! > 0 }, "\(row)")
            // The step's loss is the mix-weighted sum of the groups' losses (equal shares here).
            let weighted = parts.compactMap { $0 }.reduce(0, +) / 3
            #expect(abs(weighted - (row["loss"] as! Double)) <= 1e-5 * weighted, "\(row)")
        }
        // The run report charts each modality's loss.
        let chart = try #require(try RunReport(runDirectory: directory).charts.first { $0.title == "Loss per modality" })
        #expect(chart.series.map(\.label) == ["image", "video", "rgbd"] && chart.series.allSatisfy { $0.points.count == 4 })
        let checkpoint = try LoadedCheckpoint(contentsOf: URL(fileURLWithPath: summary.lastCheckpoint!), threads: 1)
        #expect(Set(checkpoint.arrayNames).isSuperset(of: ["queue", "queue.video", "queue.rgbd"]), "\(checkpoint.arrayNames)")
        let names = (checkpoint.layout(of: "online") ?? []).map(\.name)
        #expect(Set(names).count == names.count, "duplicate parameter names")
        #expect(names.filter { $0.hasPrefix("heads.") }.sorted()
                == ["heads.image.bias", "heads.image.weight", "heads.rgbd.bias", "heads.rgbd.weight", "heads.video.bias", "heads.video.weight"])
        #expect(names.contains("depth_patch_embed.proj.weight"))
        // Exported with Omnivore's names: the trunk and the heads, not the SSL projector/predictor.
        let exported = try checkpoint.exportEncoder(to: root.appendingPathComponent("encoder.safetensors"))
        #expect(exported.contains("heads.video.weight") && exported.contains("features.0.0.attn.qkv.weight"))
        #expect(!exported.contains { $0.hasPrefix("projector.") || $0.hasPrefix("predictor.") })
    }

    /// A joint run stopped after 2 of 4 steps and resumed with `--resume auto` reproduces the
    /// uninterrupted loss curve bit for bit (queues per modality, schedule position, RNG).
    @Test(arguments: ["joint", "alternate"])
    func resumedJointRunMatchesTheUninterruptedOneExactly(mode: String) throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-joint-resume-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let straight = try Self.config(root, name: "straight", overrides: ["data.mix_mode=\(mode)"])
        _ = try PretrainingRun(resolved: straight).run(communicator: LocalCommunicator(), threads: 2)
        let sliced = try Self.config(root, name: "sliced", overrides: ["data.mix_mode=\(mode)"])
        let first = try PretrainingRun(resolved: sliced, stopAfter: 2).run(communicator: LocalCommunicator(), threads: 2)
        #expect(first.summary.preempted && first.summary.stepsRun == 2)
        let second = try PretrainingRun(resolved: sliced, resume: "auto").run(communicator: LocalCommunicator(), threads: 2)
        #expect(second.summary.stepsRun == 2)
        let expected = try Self.losses(root.appendingPathComponent("straight")), got = try Self.losses(second.runDirectory)
        #expect(expected.count == 4)
        for step in 1...4 {
            #expect(got[step].map(\.bitPattern) == expected[step].map(\.bitPattern), "step \(step): \(String(describing: got[step])) vs \(String(describing: expected[step]))")
        }
    }

    /// Resuming with another modality mix is refused with the key, old → new, and the flag that
    /// accepts it; with `--resume-allow data.mix.video` the run continues (from the step, on the
    /// new stream). A longer `run.steps` is accepted either way.
    @Test func resumingWithAnotherMixIsRefusedUnlessAllowed() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-joint-mix-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let first = try Self.config(root, name: "run", steps: 2)
        _ = try PretrainingRun(resolved: first).run(communicator: LocalCommunicator(), threads: 2)
        let changed = try Self.config(root, name: "run", steps: 4, overrides: ["data.mix.video=2"])
        do {
            _ = try PretrainingRun(resolved: changed, resume: "auto").run(communicator: LocalCommunicator(), threads: 2)
            Issue.record("a resume with another data.mix.video was accepted")
        } catch let error as ConfigError {
            guard case .resumeChanged(_, let changes) = error else { Issue.record("\(error)"); return }
            #expect(changes.map(\.description) == ["data.mix.video: 1.0 → 2.0"])
            #expect(error.description.contains("--resume-allow data.mix.video"), "\(error)")
        }
        let allowed = try PretrainingRun(resolved: changed, resume: "auto", resumeAllowed: ["data.mix.video"])
            .run(communicator: LocalCommunicator(), threads: 2)
        #expect(allowed.summary.stepsRun == 2)
    }
}
