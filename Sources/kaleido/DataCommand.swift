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
            abstract: "Look at what the model sees, and export the synthetic dataset.",
            subcommands: [Inspect.self, ExportSynthetic.self])
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
            abstract: "Write the synthetic dataset to DIR as ImageFolder, video-frame and RGB-D folders.",
            discussion: """
            Layout: DIR/image/{train,val}/<NN-class>/<index>.png, DIR/video/{train,val}/<NN-class>/<index>/000001.png …,
            DIR/rgbd/{train,val}/<NN-class>/<index>/{image/<index>.png, depth/<index>.png (16-bit, mm)}.
            Sizes, classes and seed come from the data.synthetic_* keys of the config. Point data.root
            (and data.video_root, data.rgbd_root) at these folders to train from files.
            """)

        @Argument(help: "Folder to write into (created if missing).")
        var directory: String

        @OptionGroup var options: ConfigOptions
        @OptionGroup var logging: LoggingOptions

        @Option(help: "Image format: png (lossless) or jpeg.")
        var format = "png"

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
            guard SyntheticExport.Format(rawValue: format) != nil else { throw ValidationError("--format must be png or jpeg, got \(format)") }
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
            let start = Date()
            let files = try export.write(to: directory)
            print(String(format: "wrote %d files to %@ in %.1f s", files, directory, Date().timeIntervalSince(start)))
        }
    }
}
