import ArgumentParser
import Foundation
import KaleidoData
import KaleidoTrain

extension Kaleido {
    /// `kaleido data …`. Named DataCommand, not Data, so that Foundation's `Data` stays visible
    /// inside `extension Kaleido`.
    struct DataCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "data",
            abstract: "Look at what the model sees, export the synthetic dataset, pack folders into WebDataset shards.",
            subcommands: [Inspect.self, ExportSynthetic.self, Pack.self])
    }
}

extension Kaleido.DataCommand {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a PNG grid of samples and their augmented views.",
            discussion: """
            One row per sample (the first --samples of epoch 0 of every modality in data.mix): the source
            image, the large views, the small views (enlarged), a large view with background removal
            forced on, then the depth of each large view (RGB-D) or the rest of the first view's clip
            (video). Views are drawn exactly as the trainer draws them for step 0.
            """)

        @OptionGroup var options: ConfigOptions
        @OptionGroup var logging: LoggingOptions

        @Option(name: .shortAndLong, help: "PNG file to write.")
        var output = "data-inspect.png"

        @Option(help: "Samples per modality.")
        var samples = 4

        @Option(help: "Enlargement of every cell (nearest neighbour).")
        var scale = 4

        @Option(help: "Split to draw from: train or val.")
        var split = "train"

        func validate() throws {
            guard samples >= 1 else { throw ValidationError("--samples must be at least 1, got \(samples)") }
            guard (1...16).contains(scale) else { throw ValidationError("--scale must be in 1…16, got \(scale)") }
            guard Split(rawValue: split) != nil else { throw ValidationError("--split must be train or val, got \(split)") }
        }

        func run() throws {
            logging.bootstrap()
            let config = try options.resolve().config
            let pipeline = try DataPipeline(config.dataConfiguration, split: Split(rawValue: split)!)
            let grid = try InspectGrid.render(pipeline, samples: samples, scale: scale)
            try ImageCodec.writePNG(grid, to: output)
            let counts = pipeline.datasets.sorted { $0.key.rawValue < $1.key.rawValue }
                .map { "\($0.key) \($0.value.count)" }.joined(separator: ", ")
            print("wrote \(output) (\(grid.width)×\(grid.height)): \(pipeline.classes.count) classes; \(counts) samples")
        }
    }

    struct ExportSynthetic: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export-synthetic",
            abstract: "Write the synthetic dataset to DIR as ImageFolder, video-frame and RGB-D folders, or as WebDataset shards.",
            discussion: """
            Layout: DIR/image/{train,val}/<NN-class>/<index>.png, DIR/video/{train,val}/<NN-class>/<index>/000001.png …,
            DIR/rgbd/{train,val}/<NN-class>/<index>/{image/<index>.png, depth/<index>.png (16-bit, mm)}.
            With --format webdataset: DIR/<modality>/{train,val}/shard-000000.tar … holding <index>.png (video:
            <index>.000.png …; RGB-D: <index>.png + <index>.depth.png) and <index>.cls, and DIR/<modality>/classes.txt.
            Sizes, classes and seed come from the data.synthetic_* keys of the config. Point data.root
            (and data.video_root, data.rgbd_root) at these folders to train from files (with
            data.dataset=webdataset for shards).
            """)

        @Argument(help: "Folder to write into (created if missing).")
        var directory: String

        @OptionGroup var options: ConfigOptions
        @OptionGroup var logging: LoggingOptions

        @Option(help: "png (lossless) or jpeg files in folders, or webdataset (tar shards of PNG members).")
        var format = "png"

        @Option(name: .customLong("shard-size"), help: "With --format webdataset: the largest shard, e.g. 1GB, 64MB.")
        var shardSize = "1GB"

        @Option(help: "JPEG quality (1–100).")
        var quality = 95

        @Option(help: "Comma-separated modalities to write: image, video, rgbd.")
        var modalities = "image,video,rgbd"

        @Flag(help: "Also write each image's true object mask beside it as <index>.mask.png.")
        var masks = false

        @Option(help: "Threads rendering and encoding.")
        var threads = ProcessInfo.processInfo.activeProcessorCount

        var chosen: [Modality] {
            modalities.split(separator: ",").compactMap { name in Modality.allCases.first { "\($0)" == name.trimmingCharacters(in: .whitespaces) } }
        }

        func validate() throws {
            guard SyntheticExport.Format(rawValue: format) != nil else {
                throw ValidationError("--format must be png, jpeg or webdataset, got \(format)")
            }
            guard ShardSequenceWriter.parseSize(shardSize) != nil else {
                throw ValidationError("--shard-size must be a size such as 1GB, 64MB or 65536, got \(shardSize)")
            }
            guard (1...100).contains(quality) else { throw ValidationError("--quality must be in 1…100, got \(quality)") }
            guard !chosen.isEmpty, chosen.count == modalities.split(separator: ",").count else {
                throw ValidationError("--modalities must list image, video and/or rgbd, got \(modalities)")
            }
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
        }

        func run() throws {
            logging.bootstrap()
            let config = try options.resolve().config
            var export = SyntheticExport(spec: config.data.syntheticSpec)
            export.format = SyntheticExport.Format(rawValue: format)!
            export.quality = quality
            export.modalities = chosen
            export.masks = masks
            export.threads = threads
            export.shardBytes = ShardSequenceWriter.parseSize(shardSize)!
            let start = Date()
            let files = try export.write(to: directory)
            print(String(format: "wrote %d %@ to %@ in %.1f s", files, export.format == .webdataset ? "samples" : "files", directory,
                         Date().timeIntervalSince(start)))
        }
    }

    struct Pack: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pack an ImageFolder into WebDataset shards.",
            discussion: """
            FOLDER is root/<class>/<image>.jpg|png, with train/ and val/ split folders when present (as data.root
            takes it). Writes OUT/train/shard-000000.tar … (and OUT/val/…), each sample <key>.jpg|png + <key>.cls
            (the class number), and OUT/classes.txt. Images are stored as they are, in an order shuffled once
            (--seed) so that every shard holds every class. Train from them with data.dataset=webdataset
            data.root=OUT.
            """)

        @Argument(help: "The ImageFolder to pack.")
        var folder: String

        @Argument(help: "Folder to write the shards into (created if missing).")
        var output: String

        @Option(name: .customLong("shard-size"), help: "The largest shard, e.g. 1GB, 256MB.")
        var shardSize = "1GB"

        @Option(help: "Seed of the order samples are packed in.")
        var seed = 0

        func validate() throws {
            guard ShardSequenceWriter.parseSize(shardSize) != nil else {
                throw ValidationError("--shard-size must be a size such as 1GB, 64MB or 65536, got \(shardSize)")
            }
            guard seed >= 0 else { throw ValidationError("--seed must be ≥ 0, got \(seed)") }
        }

        func run() throws {
            var pack = WebDatasetPack()
            pack.shardBytes = ShardSequenceWriter.parseSize(shardSize)!
            pack.seed = UInt64(seed)
            let start = Date()
            let summary = try pack.pack(folder: folder, into: output)
            for split in Split.allCases {
                guard let samples = summary.samples[split] else { continue }
                print("\(split.rawValue): \(samples) samples in \(summary.shards[split] ?? 0) shards")
            }
            print(String(format: "wrote %@ in %.1f s", output, Date().timeIntervalSince(start)))
        }
    }
}
