import ArgumentParser
import Foundation
import KaleidoData
import KaleidoTrain

extension Kaleido.Bench {
    /// `kaleido bench data`. Named DataLoading, not Data, so that Foundation's `Data` stays
    /// visible inside `extension Kaleido.Bench`.
    struct DataLoading: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "data",
            abstract: "Images/s of the data loader per decode thread (32-px PNG ImageFolder, 2 × 32 px + 2 × 16 px views).",
            discussion: """
            Writes the synthetic images as a 32-px PNG ImageFolder to a temporary folder (or reads --root),
            then times the prefetching loader with the debug config's ReLICv2 recipe for each thread count.
            The bar is 600 images/s per decode thread (torchvision's ImageFolder + DataLoader makes 307 per
            worker process on the reference machine). With --step-images-per-second (what a ReLICv2 step
            consumes, e.g. from `kaleido bench step`) it also prints how many times over the loader covers
            the trainer (bar: 2×). Build with -c release.
            """)

        @Option(help: "ImageFolder to read instead of the generated one.")
        var root: String?

        @Option(help: "image_folder, or webdataset: the same images packed into tar shards, timed after the folder.")
        var format = DatasetKind.imageFolder

        @Option(name: .customLong("shard-size"), help: "With --format webdataset: the largest shard, e.g. 1MB, 64MB.")
        var shardSize = "1MB"

        @Option(help: "Images in the generated ImageFolder.")
        var images: Int = 2000

        @Option(help: "Comma-separated decode thread counts to measure.")
        var threads: String = "1,2"

        @Option(help: "Samples per batch.")
        var batch: Int = 64

        @Option(help: "Seconds of loading per thread count.")
        var seconds: Double = 3

        @Option(name: .customLong("step-images-per-second"),
                help: "Images/s one ReLICv2 training step consumes, to report the loader's headroom over it.")
        var stepImagesPerSecond: Double?

        @Flag(help: "Print JSON lines (one per thread count, then a summary) instead of a table.")
        var json = false

        @OptionGroup var logging: LoggingOptions

        var threadCounts: [Int] { threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

        func validate() throws {
            guard !threadCounts.isEmpty, threadCounts.allSatisfy({ $0 >= 1 }),
                  threadCounts.count == threads.split(separator: ",").count else {
                throw ValidationError("--threads must be a comma-separated list of positive counts, got \(threads)")
            }
            guard images >= batch else { throw ValidationError("--images (\(images)) must be at least --batch (\(batch))") }
            guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
            guard seconds > 0 else { throw ValidationError("--seconds must be positive, got \(seconds)") }
            guard format == .imageFolder || format == .webdataset else {
                throw ValidationError("--format must be image_folder or webdataset, got \(format.rawValue)")
            }
            guard ShardSequenceWriter.parseSize(shardSize) != nil else {
                throw ValidationError("--shard-size must be a size such as 1MB or 65536, got \(shardSize)")
            }
            if let s = stepImagesPerSecond, s <= 0 {
                throw ValidationError("--step-images-per-second must be positive, got \(s)")
            }
        }

        func run() throws {
            logging.bootstrap()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            func line<T: Encodable>(_ value: T) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
            if !json { print("format        threads   images   seconds   images/s   images/s/thread") }
            var bench = DataBench(root: root, images: images, threadCounts: threadCounts, batch: batch, seconds: seconds,
                                  stepConsumption: stepImagesPerSecond)
            bench.format = format
            bench.shardBytes = ShardSequenceWriter.parseSize(shardSize)!
            let summary = try bench.run { result in
                if json {
                    print((try? line(result)) ?? "")
                } else {
                    print(String(format: "%-12@ %7d %8d %9.2f %10.0f %17.0f", result.format, result.threads, result.images, result.seconds,
                                 result.imagesPerSecond, result.imagesPerSecondPerThread))
                }
                fflush(nil)
            }
            if json {
                print(try line(summary))
                return
            }
            print("")
            print(String(format: "loader, 1 decode thread:  %.0f images/s  (bar ≥ %.0f; torchvision %.0f per worker; %.1f× torchvision)",
                         summary.imagesPerSecondPerThread, summary.bar, summary.torchvisionPerWorker,
                         summary.imagesPerSecondPerThread / summary.torchvisionPerWorker))
            if let headroom = summary.headroom, let consumption = summary.stepConsumption {
                print(String(format: "vs ReLICv2 step (%.0f images/s): %.1f× with %d thread(s)  (bar ≥ 2×)",
                             consumption, headroom, summary.threads))
            } else {
                print("pass --step-images-per-second to compare with what a ReLICv2 step consumes")
            }
            if let ratio = summary.webDatasetOverFolder {
                print(String(format: "webdataset / image_folder on the same images: %.2f× (best thread count of each)", ratio))
            }
            if summary.skipped > 0 { print("unreadable files skipped: \(summary.skipped)") }
        }
    }
}

extension DatasetKind: ExpressibleByArgument {}
