import Foundation
import Testing

/// WebDataset shards from the command line: written by `data export-synthetic --format
/// webdataset` and `data pack`, trained on with `data.dataset=webdataset`, evaluated with `eval`.
@Suite(.serialized) struct WebDatasetCLITests {
    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-wds-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static let small = ["--set", "data.batch_size=12", "--set", "data.synthetic_train_size=48", "--set", "data.synthetic_val_size=16", "--set", "data.synthetic_frames=2"]

    @Test func exportedShardsTrainJointlyAndEvaluate() throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let shards = root.appendingPathComponent("shards").path
        let export = try runKaleido(["data", "export-synthetic", shards, "--format", "webdataset", "--shard-size", "24KB"] + Self.small)
        try #require(export.status == 0, "\(export.stderr)")
        #expect(export.stdout.contains("wrote 192 samples"), "\(export.stdout)")
        let trainShards = try FileManager.default.contentsOfDirectory(atPath: "\(shards)/image/train").filter { $0.hasSuffix(".tar") }
        #expect(trainShards.count > 1)

        let run = try runKaleido(["pretrain", "--set", "run.output_dir=\(root.path)/runs", "--set", "run.name=wds", "--set", "run.steps=2",
                                  "--set", "data.dataset=webdataset", "--set", "data.root=\(shards)/image",
                                  "--set", "data.video_root=\(shards)/video", "--set", "data.rgbd_root=\(shards)/rgbd",
                                  "--set", "data.mix.video=1", "--set", "data.mix.rgbd=1",
                                  "--set", "data.clip_frames=2", "--set", "model.arch=omnivore_swin_cifar", "--set", "model.base_width=8",
                                  "--set", "eval.linear_probe=false"] + Self.small)
        try #require(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("pretrained 2 steps"), "\(run.stdout)")
        let index = try FileManager.default.contentsOfDirectory(atPath: "\(root.path)/runs/.shard-index")
        #expect(index.count >= 6, "one cached listing per shard of every modality and split read: \(index)")

        let knn = try runKaleido(["eval", "knn", "--checkpoint", "\(root.path)/runs/wds", "--data", "\(shards)/video", "--modality", "video"])
        #expect(knn.status == 0, "\(knn.stderr)")
        #expect(knn.stdout.contains("train_samples 48   val_samples 16"), "read from the shards: \(knn.stdout)")

        // Without --data the run's own shards of the modality are read, not the embedded dataset
        // (whose sizes here are the same, so the record's data names the source).
        let own = try runKaleido(["eval", "knn", "--checkpoint", "\(root.path)/runs/wds", "--modality", "rgbd", "--json"])
        try #require(own.status == 0, "\(own.stderr)")
        let record = try JSONSerialization.jsonObject(with: Data(own.stdout.utf8)) as? [String: Any]
        #expect(record?["data"] as? String == "\(shards)/rgbd", "\(own.stdout)")
    }

    @Test func aPackedImageFolderTrains() throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let folders = root.appendingPathComponent("folders").path
        let export = try runKaleido(["data", "export-synthetic", folders, "--modalities", "image", "--format", "jpeg"] + Self.small)
        try #require(export.status == 0, "\(export.stderr)")
        let pack = try runKaleido(["data", "pack", "\(folders)/image", "\(root.path)/packed", "--shard-size", "16KB"])
        try #require(pack.status == 0, "\(pack.stderr)")
        #expect(pack.stdout.contains("train: 48 samples in") && pack.stdout.contains("val: 16 samples in"), "\(pack.stdout)")
        let run = try runKaleido(["pretrain", "--set", "run.output_dir=\(root.path)/runs", "--set", "run.name=packed", "--set", "run.steps=2",
                                  "--set", "data.dataset=webdataset", "--set", "data.root=\(root.path)/packed",
                                  "--set", "model.base_width=4", "--set", "eval.linear_probe=false"])
        #expect(run.status == 0, "\(run.stderr)")

        let missing = try runKaleido(["pretrain", "--set", "run.output_dir=\(root.path)/runs", "--set", "run.name=missing",
                                      "--set", "data.dataset=webdataset", "--set", "data.root=\(root.path)/packed/train-{000000..000003}.tar"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("\(root.path)/packed/train-000000.tar: no such shard"), "\(missing.stderr)")
    }
}
