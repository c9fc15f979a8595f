import Foundation
import KaleidoData
import Logging

/// One loader measurement: images (source samples, each turned into every view) per second.
public struct DataBenchResult: Codable, Sendable {
    /// `image_folder` or `webdataset`.
    public let format: String
    public let threads: Int
    public let images: Int
    public let seconds: Double
    public let imagesPerSecond: Double
    public let imagesPerSecondPerThread: Double
}

/// What `kaleido bench data` concludes.
public struct DataBenchSummary: Codable, Sendable {
    /// Images/s of one decode thread (the threads = 1 run).
    public let imagesPerSecondPerThread: Double
    /// The bar of issue 5, and what torchvision's ImageFolder + DataLoader makes per worker on
    /// the reference machine for the same views.
    public let bar: Double
    public let torchvisionPerWorker: Double
    /// Images/s a ReLICv2 training step consumes (given by the caller until the trainer can be
    /// timed here), and how many times over the loader covers it with `threads` decode threads.
    public let stepConsumption: Double?
    public let headroom: Double?
    public let threads: Int
    public let skipped: Int
    /// With `format: webdataset`: its best images/s over the ImageFolder's on the same images.
    public let webDatasetOverFolder: Double?
}

/// Measures the data loader on a 32-px PNG ImageFolder with the 4-view ReLICv2 recipe of the
/// debug config (2 × 32 px + 2 × 16 px, BYOL augmentations, saliency removal p = 0.1): the
/// whole path a trainer sees, from `open`/`read` of the files through PNG decoding and
/// augmentation to normalised channels-last tensors, made by the prefetching `DataLoader`.
public struct DataBench {
    /// An ImageFolder to read; nil writes the synthetic images as PNG to a temporary folder.
    public var root: String?
    /// Images in the generated folder.
    public var images: Int
    public var threadCounts: [Int]
    public var batch: Int
    /// Seconds of loading per thread count (after a warm-up batch per thread).
    public var seconds: Double
    public var stepConsumption: Double?
    /// `.webdataset` also packs the folder into shards (`WebDatasetPack`, `shardBytes` each) and
    /// times both, the folder first; the summary is the shards'.
    public var format = DatasetKind.imageFolder
    public var shardBytes = 1 << 20

    public init(root: String? = nil, images: Int = 2000, threadCounts: [Int] = [1, 2], batch: Int = 64,
                seconds: Double = 3, stepConsumption: Double? = nil) {
        self.root = root
        self.images = images
        self.threadCounts = threadCounts
        self.batch = batch
        self.seconds = seconds
        self.stepConsumption = stepConsumption
    }

    public func run(report: (DataBenchResult) -> Void) throws -> DataBenchSummary {
        var folder = root
        var temporary: String? = nil
        if folder == nil {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-bench-data-\(UUID().uuidString)").path
            var spec = SyntheticSpec()
            spec.size = 32
            spec.trainSize = images
            spec.valSize = 10
            var export = SyntheticExport(spec: spec)
            export.modalities = [.image]
            export.threads = max(1, threadCounts.max() ?? 1)
            try export.write(to: path)
            folder = path + "/image"
            temporary = path
        }
        defer { if let temporary { try? FileManager.default.removeItem(atPath: temporary) } }

        var sources: [(DatasetKind, String)] = [(.imageFolder, folder!)]
        if format == .webdataset {
            let shards = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-bench-shards-\(UUID().uuidString)").path
            var pack = WebDatasetPack()
            pack.shardBytes = shardBytes
            _ = try pack.pack(folder: folder!, into: shards)
            sources.append((.webdataset, shards))
        }
        defer { for (kind, path) in sources where kind == .webdataset { try? FileManager.default.removeItem(atPath: path) } }
        var results: [DataBenchResult] = []
        var skipped = 0
        for (kind, path) in sources {
            var config = KaleidoConfig()
            config.data.dataset = kind
            config.data.root = path
            config.data.batchSize = batch
            config.run.outputDir = ""
            let pipeline = try DataPipeline(config.dataConfiguration, split: .train, logger: Logger(label: "kaleido.bench.data"))
            results += try measure(pipeline, format: kind.rawValue, report: report)
            if kind == format { skipped = pipeline.health.skipped }
        }
        let measured = results.filter { $0.format == format.rawValue }
        let single = measured.first { $0.threads == 1 } ?? measured[0]
        let best = measured.max { $0.imagesPerSecond < $1.imagesPerSecond }!
        let folderBest = results.filter { $0.format == DatasetKind.imageFolder.rawValue }.map(\.imagesPerSecond).max()!
        return DataBenchSummary(imagesPerSecondPerThread: single.imagesPerSecondPerThread, bar: 600, torchvisionPerWorker: 307,
                                stepConsumption: stepConsumption, headroom: stepConsumption.map { best.imagesPerSecond / $0 },
                                threads: best.threads, skipped: skipped,
                                webDatasetOverFolder: format == .webdataset ? best.imagesPerSecond / folderBest : nil)
    }

    /// Images/s of `pipeline` through the prefetching loader, per thread count.
    func measure(_ pipeline: DataPipeline, format: String, report: (DataBenchResult) -> Void) throws -> [DataBenchResult] {
        var results: [DataBenchResult] = []
        for threads in threadCounts {
            let loader = try DataLoader(pipeline: pipeline, workers: threads, depth: 2 * threads)
            for _ in 0..<threads { _ = try loader.next() }
            var count = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed = 0.0
            repeat {
                count += try loader.next().sampleCount
                elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            } while elapsed < seconds
            loader.stop()
            let result = DataBenchResult(format: format, threads: threads, images: count, seconds: elapsed,
                                         imagesPerSecond: Double(count) / elapsed,
                                         imagesPerSecondPerThread: Double(count) / elapsed / Double(threads))
            results.append(result)
            report(result)
        }
        return results
    }
}
