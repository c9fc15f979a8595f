import ArgumentParser
import Foundation
import KaleidoCheckpoint
import KaleidoTrain

extension Kaleido {
    struct Checkpoint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inspect, verify, reshard and export checkpoints.",
            discussion: """
            PATH is a checkpoint directory (step-00000100/) or a directory of checkpoints, in which case
            the newest valid one is used. Checkpoints are written by `kaleido pretrain` (see docs/checkpoints.md).
            """,
            subcommands: [Inspect.self, Verify.self, Reshard.self, Export.self])
    }
}

/// The checkpoint a PATH argument names: itself if it has a manifest, else the newest valid one
/// inside it or, for a run directory, inside its `checkpoints/` (as `kaleido eval` takes it).
struct CheckpointPath: ParsableArguments {
    @Argument(help: "A checkpoint directory, a directory of checkpoints or a run directory (the newest valid one is used).")
    var path: String

    func validate() throws {
        guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("\(path): no such directory") }
    }

    func resolve() throws -> URL {
        guard case .checkpoint(let url) = CheckpointStore.locate(path) else {
            throw ValidationError("\(path): neither a checkpoint (no manifest.json) nor a directory holding a valid one")
        }
        return url
    }
}

extension Kaleido.Checkpoint {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a checkpoint's step, world size, config summary, arrays, shard sizes and compression ratio.",
            discussion: "Reads only the manifest and file sizes; `verify` checks the data.")

        @OptionGroup var checkpoint: CheckpointPath

        @Flag(help: "Print the manifest as JSON instead.")
        var json = false

        @Flag(help: "Also print the full config YAML.")
        var config = false

        func run() throws {
            let url = try checkpoint.resolve()
            let manifest = try CheckpointManifest.read(from: url)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                encoder.keyEncodingStrategy = .convertToSnakeCase
                print(String(decoding: try encoder.encode(manifest), as: UTF8.self))
                return
            }
            print("checkpoint   \(url.path)")
            print("step         \(manifest.step)   epoch \(manifest.epoch)   saved \(manifest.created)")
            print("world size   \(manifest.worldSize)")
            print("config       \(summary(of: manifest.config))")
            if let optimizer = manifest.optimizer { print("optimizer    \(optimizer.kind), \(optimizer.stepCount) steps") }
            if let step = manifest.schedulerStep { print("scheduler    step \(step)") }
            if let size = manifest.queueSize { print("queue        \(size) negatives") }
            if !manifest.blobs.isEmpty { print("state        " + manifest.blobs.keys.sorted().joined(separator: ", ")) }
            print("compression  zstd level \(manifest.compression.level), byte shuffle \(manifest.compression.byteShuffle ? "on" : "off"), "
                  + "\(manifest.compression.chunkBytes >> 20) MiB chunks"
                  + ((manifest.compression.framesPerChunk ?? 1) == 2 ? " (mantissa and exponent frames)" : "") + ", CRC-32C")
            print("")
            print(pad("array", 26) + pad("floats", 14, right: true) + pad("MB", 10, right: true) + "  layout")
            for array in manifest.arrays {
                let layout = array.layout.map { key in "\(manifest.layouts[key]?.count ?? 0) parameters (\(key))" } ?? "-"
                print(pad(array.name, 26) + pad(String(array.count), 14, right: true)
                      + pad(String(format: "%.2f", Double(array.count * 4) / 1e6), 10, right: true) + "  " + layout)
            }
            print("")
            print(pad("shard", 28) + pad("bytes", 14, right: true) + pad("raw", 14, right: true) + pad("ratio", 8, right: true) + "  crc32c")
            for shard in manifest.shards {
                let ratio = Double(shard.uncompressedBytes) / Double(max(1, shard.bytes))
                print(pad(shard.file, 28) + pad(String(shard.bytes), 14, right: true) + pad(String(shard.uncompressedBytes), 14, right: true)
                      + pad(String(format: "%.3f", ratio), 8, right: true) + "  " + shard.crc32c)
            }
            print(String(format: "total        %.2f MB on disk for %.2f MB raw, ratio %.3f",
                         Double(manifest.compressedBytes) / 1e6, Double(manifest.uncompressedBytes) / 1e6, manifest.compressionRatio))
            if config {
                print("")
                print(manifest.config)
            }
        }

        private func summary(of yaml: String) -> String {
            guard let resolved = try? ConfigLoader.load(yaml: yaml, name: "checkpoint") else {
                return yaml.isEmpty ? "(none)" : "(not a Kaleido config this version reads)"
            }
            let c = resolved.config
            return "run \(c.run.name), model \(c.model.arch.rawValue), \(c.run.steps) steps, batch \(c.data.batchSize), "
                + "\(c.optim.name.rawValue) lr \(c.optim.lr), dataset \(c.data.dataset.rawValue)"
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every shard's size and CRC-32C and decode every zstd frame; exit 1 naming each bad file.")

        @OptionGroup var checkpoint: CheckpointPath

        @Flag(help: "Check sizes and CRC-32C only, without decompressing.")
        var quick = false

        func run() throws {
            let url = try checkpoint.resolve()
            let problems = CheckpointStore.verify(url, decode: !quick)
            for problem in problems { printError("\(problem)") }
            guard problems.isEmpty else {
                printError("\(url.path): \(problems.count) problem\(problems.count == 1 ? "" : "s")")
                throw ExitCode(1)
            }
            let manifest = try CheckpointManifest.read(from: url)
            print("ok  \(url.path): \(manifest.shards.count) shard\(manifest.shards.count == 1 ? "" : "s"), "
                  + String(format: "%.2f MB", Double(manifest.compressedBytes) / 1e6)
                  + (quick ? ", checksums verified" : ", checksums verified and every frame decoded"))
        }
    }

    struct Reshard: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rewrite a checkpoint for another world size.",
            discussion: """
            Resuming already works from any world size (every rank reads all shards); resharding makes each rank
            read only its own, and is how to change the zstd level of an existing checkpoint.
            """)

        @OptionGroup var checkpoint: CheckpointPath

        @Option(name: .customLong("world-size"), help: "Ranks of the new checkpoint.")
        var worldSize: Int

        @Option(help: "Directory to write step-NNNNNNNN/ into (default: where the checkpoint is, replacing it).")
        var output: String?

        @Option(help: "zstd level of the new shards (default: the checkpoint's).")
        var level: Int?

        func validate() throws {
            guard worldSize >= 1 else { throw ValidationError("--world-size must be at least 1, got \(worldSize)") }
            if let level, !(1...22).contains(level) { throw ValidationError("--level must be between 1 and 22, got \(level)") }
        }

        func run() throws {
            let url = try checkpoint.resolve()
            let directory = output.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? url.deletingLastPathComponent()
            let written = try CheckpointStore.reshard(url, worldSize: worldSize, into: directory, zstdLevel: level)
            let manifest = try CheckpointManifest.read(from: written)
            print("wrote \(written.path): \(manifest.worldSize) shard\(manifest.worldSize == 1 ? "" : "s"), "
                  + String(format: "%.2f MB, ratio %.3f", Double(manifest.compressedBytes) / 1e6, manifest.compressionRatio))
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the online (or EMA target) encoder as safetensors with timm/torchvision names.",
            discussion: """
            The projector and predictor heads are left out; convolution weights are permuted to PyTorch's layout,
            so the file loads with `model.load_state_dict(safetensors.torch.load_file(...))` on the matching
            timm/torchvision backbone (without its classifier: strict=False, or the classifier removed).
            """)

        @OptionGroup var checkpoint: CheckpointPath

        @Option(name: [.short, .long], help: "The .safetensors file to write.")
        var output: String

        @Flag(help: "Export the EMA target encoder instead of the online one.")
        var target = false

        func run() throws {
            let url = try checkpoint.resolve()
            let loaded = try LoadedCheckpoint(contentsOf: url)
            let array = target ? "target" : "online"
            let names = try loaded.exportEncoder(array, to: URL(fileURLWithPath: output), metadata: ["format": "pt"])
            print("wrote \(output): \(names.count) tensors of the \(array) encoder at step \(loaded.step)")
        }
    }
}

private func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - text.count))
    return right ? fill + text : text + fill
}
