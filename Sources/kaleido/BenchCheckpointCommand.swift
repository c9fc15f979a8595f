import ArgumentParser
import Foundation
import KaleidoCheckpoint
import KaleidoNN
import KaleidoTrain

extension Kaleido.Bench {
    struct Checkpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Checkpoint compression ratio and save/load MB/s on trained-looking fp32 weights and AdamW state.",
            discussion: """
            Builds a model's arena, takes a few AdamW steps on synthetic gradients (so weights, EMA target,
            BN statistics and both Adam moments look trained rather than freshly initialised), then
            measures in memory each zstd level with and without byte shuffle (ratio, compress and
            decompress MB/s of raw bytes, CRC-32C included), and finally full checkpoint saves (with
            fsync) and loads through the file system at the default level, next to writing the same
            compressed bytes alone, and a background save (its staging copy, then staging to commit
            on an idle machine). The fastest of --repetitions counts. Build with -c release.
            """)

        @Option(help: "Model whose arena is measured (see `kaleido model list`).")
        var model: String = "resnet18"

        @Option(help: "Comma-separated zstd levels to compare.")
        var levels: String = "1,3,9"

        @Option(help: "Threads compressing (default: all cores; each rank gets its share in a run).")
        var threads: Int = ProcessInfo.processInfo.activeProcessorCount

        @Option(help: "Repetitions per setting; the fastest counts.")
        var repetitions: Int = 2

        @Option(help: "Directory for the save/load measurement (default: a temporary directory, removed after).")
        var directory: String?

        @Flag(help: "Print JSON lines instead of a table.")
        var json = false

        func validate() throws {
            guard ModelZoo.names.contains(model) else {
                throw ValidationError("--model: unknown model '\(model)'; see `kaleido model list`")
            }
            guard !parsedLevels.isEmpty, parsedLevels.allSatisfy({ (1...22).contains($0) }) else {
                throw ValidationError("--levels: comma-separated zstd levels between 1 and 22, got '\(levels)'")
            }
            guard threads >= 1, repetitions >= 1 else { throw ValidationError("--threads and --repetitions must be positive") }
        }

        private var parsedLevels: [Int] { levels.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

        func run() throws {
            let state = try TrainedLookingState(model: model, threads: threads)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            func emit<T: Encodable>(_ value: T) throws { print(String(decoding: try encoder.encode(value), as: UTF8.self)) }

            if !json {
                print("\(model): \(state.online.count) floats per arena; online, target, exp_avg, exp_avg_sq = "
                      + String(format: "%.1f MB raw", Double(state.online.count * 16) / 1e6) + ", \(threads) thread(s)")
                print(pad("level", 7) + pad("shuffle", 9) + pad("ratio", 8, right: true) + pad("compress MB/s", 16, right: true)
                      + pad("decompress MB/s", 18, right: true))
            }
            for level in parsedLevels {
                for shuffle in [true, false] {
                    let result = try CheckpointBench.codec(state.arrays, level: level, byteShuffle: shuffle, threads: threads,
                                                           repetitions: repetitions)
                    if json {
                        try emit(result)
                    } else {
                        print(pad(String(level), 7) + pad(shuffle ? "yes" : "no", 9) + pad(String(format: "%.3f", result.ratio), 8, right: true)
                              + pad(String(format: "%.0f", result.compressMBps), 16, right: true)
                              + pad(String(format: "%.0f", result.decompressMBps), 18, right: true))
                    }
                    fflush(nil)
                }
            }

            let temporary = directory == nil
            let root = directory.map { URL(fileURLWithPath: $0) }
                ?? FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-bench-checkpoint-\(ProcessInfo.processInfo.processIdentifier)")
            defer { if temporary { try? FileManager.default.removeItem(at: root) } }
            let stored = try CheckpointBench.store(state.arrays, directory: root, level: CheckpointStore.defaultZstdLevel, threads: threads,
                                                   repetitions: repetitions)
            if json {
                try emit(stored)
            } else {
                print("")
                print(String(format: "checkpoint save (level %d, shuffle, fsync):  %.0f MB/s raw per rank  (bar ≥ 600)", stored.level, stored.saveMBps))
                print(String(format: "background save (checkpoint.async):       %.0f MB/s raw to the shard fsynced (bar ≥ 1000), "
                             + "staging copy %.0f ms (bar ≤ 100), commit %.0f ms", stored.backgroundSaveMBps, stored.stagingMs, stored.commitMs))
                print(String(format: "checkpoint load (verify + decode):         %.0f MB/s", stored.loadMBps))
                print(String(format: "compression ratio:                         %.3f  (bar ≥ 1.15)", stored.ratio))
                print(String(format: "write + fsync of the shard alone:          %.0f MB/s raw (the file system's limit)", stored.writeMBps))
                print((stored.crcInstruction ? "CRC-32C (CPU instruction), one thread:     " : "CRC-32C (slicing-by-8), one thread:        ")
                      + String(format: "%.0f MB/s", stored.crcMBps))
                print("directory: \(root.path)\(temporary ? " (removed)" : "")")
            }
        }

        private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - text.count))
            return right ? fill + text : text + fill
        }
    }
}
