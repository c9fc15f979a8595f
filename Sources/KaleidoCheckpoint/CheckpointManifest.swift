import Foundation
import KaleidoNN

// MARK: - Directory layout

// A checkpoint is a directory, named after its step, with no absolute path inside (it loads
// from wherever it is copied):
//
//   step-00000100/
//     manifest.json                 written last; its presence under this name is the commit
//     shard-00000-of-00004.zst      rank 0's slice of every array, byte-shuffled, zstd chunks
//     …
//     shard-00003-of-00004.zst
//
// An array of n floats is split over W shards as the contiguous ranges [n·r/W, n·(r+1)/W).
// Shard r is the concatenation of rank r's range of each array, in the manifest's array order,
// cut into chunks of `chunk_bytes` raw bytes; each chunk is byte-shuffled (when `byte_shuffle`)
// and compressed as an independent zstd frame carrying its content size and XXH64 checksum. The
// shard file is those frames back to back, so `zstd -d` decodes it (to the shuffled bytes).

/// Names of a checkpoint's files.
public enum CheckpointNames {
    public static let manifest = "manifest.json"
    static let temporaryPrefix = ".tmp-"
    static let asidePrefix = ".old-"

    /// `step-00000100`.
    public static func directory(step: Int) -> String {
        "step-" + padded(step, 8)
    }

    /// `shard-00002-of-00004.zst`.
    public static func shard(rank: Int, worldSize: Int) -> String {
        "shard-\(padded(rank, 5))-of-\(padded(worldSize, 5)).zst"
    }

    /// The step of a committed checkpoint directory name, nil for anything else.
    public static func step(ofDirectory name: String) -> Int? {
        guard name.hasPrefix("step-") else { return nil }
        let digits = name.dropFirst(5)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }

    static func padded(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

// MARK: - Manifest

/// One named array of a parameter arena, as recorded in the manifest: enough to rebuild the
/// arena for export and to refuse restoring into a different model.
public struct LayoutEntry: Codable, Sendable, Equatable {
    public var name: String
    /// Float offset inside the array.
    public var offset: Int
    /// Shape in Kaleido's layout.
    public var shape: [Int]
    public var layout: TorchLayout
    public var role: ParameterRole

    public var count: Int { shape.reduce(1, *) }

    public init(name: String, offset: Int, shape: [Int], layout: TorchLayout, role: ParameterRole) {
        self.name = name; self.offset = offset; self.shape = shape; self.layout = layout; self.role = role
    }

    /// The entries of `arena`, in arena order.
    public static func of(_ arena: ParameterArena) -> [LayoutEntry] {
        arena.entries.map { LayoutEntry(name: $0.spec.name, offset: $0.offset, shape: $0.spec.shape, layout: $0.spec.layout, role: $0.spec.role) }
    }
}

/// Optimiser identity and progress; its state arrays are saved as `optimizer.<name>` arrays.
public struct OptimizerRecord: Codable, Sendable, Equatable {
    /// `sgd`, `adamw`, `lars`.
    public var kind: String
    /// Steps taken (Adam's bias correction depends on it).
    public var stepCount: Int

    public init(kind: String, stepCount: Int) {
        self.kind = kind
        self.stepCount = stepCount
    }
}

/// The `manifest.json` of a checkpoint. Keys are snake_case in the file.
public struct CheckpointManifest: Codable, Sendable, Equatable {
    /// The version this Kaleido writes; it reads this and older ones.
    /// 2: with byte shuffle, two zstd frames per chunk (mantissa planes, sign/exponent plane),
    /// recorded as `compression.frames_per_chunk`. Version 1 checkpoints (one frame per chunk)
    /// still load.
    public static let currentFormatVersion = 2

    public struct ArrayRecord: Codable, Sendable, Equatable {
        public var name: String
        /// Always "F32" for now.
        public var dtype: String
        public var count: Int
        /// Key into `layouts` when the array is a parameter arena.
        public var layout: String?
    }

    public struct CompressionRecord: Codable, Sendable, Equatable {
        public var codec: String
        public var level: Int
        public var byteShuffle: Bool
        /// Raw bytes per zstd frame (the last one of a shard may be shorter).
        public var chunkBytes: Int
        /// "crc32c" of each shard file's bytes.
        public var checksum: String
        /// zstd frames per chunk (absent before format version 2: one).
        public var framesPerChunk: Int?
    }

    public struct ShardRecord: Codable, Sendable, Equatable {
        public var file: String
        /// Compressed size on disk.
        public var bytes: Int
        /// Size of the rank's raw float slices.
        public var uncompressedBytes: Int
        /// CRC-32C of the file, eight hex digits.
        public var crc32c: String
    }

    public var format: String
    public var formatVersion: Int
    public var step: Int
    public var epoch: Int
    /// ISO 8601, UTC.
    public var created: String
    /// The resolved config as YAML text.
    public var config: String
    public var worldSize: Int
    public var arrays: [ArrayRecord]
    public var layouts: [String: [LayoutEntry]]
    public var optimizer: OptimizerRecord?
    public var schedulerStep: Int?
    public var queueSize: Int?
    /// Opaque JSON texts (RNG state, data-loader position, …) stored verbatim.
    public var blobs: [String: String]
    public var compression: CompressionRecord
    public var shards: [ShardRecord]

    /// Raw bytes of all arrays.
    public var uncompressedBytes: Int { shards.reduce(0) { $0 + $1.uncompressedBytes } }
    /// Bytes of all shard files.
    public var compressedBytes: Int { shards.reduce(0) { $0 + $1.bytes } }
    /// Raw over compressed size.
    public var compressionRatio: Double { compressedBytes > 0 ? Double(uncompressedBytes) / Double(compressedBytes) : 1 }

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    func encoded() throws -> Data {
        var data = try Self.encoder().encode(self)
        data.append(UInt8(ascii: "\n"))
        return data
    }

    /// Reads and validates `directory/manifest.json`: a future format version is refused before
    /// anything else is decoded, and a missing key is named.
    public static func read(from directory: URL) throws -> CheckpointManifest {
        let url = directory.appendingPathComponent(CheckpointNames.manifest)
        let path = url.path
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw CheckpointError.manifest(path: path, message: FileManager.default.fileExists(atPath: path)
                                           ? "cannot read manifest: \(error.localizedDescription)" : "manifest missing")
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        struct Version: Decodable { var format: String; var formatVersion: Int }
        let version: Version
        do {
            version = try decoder.decode(Version.self, from: data)
        } catch {
            throw CheckpointError.manifest(path: path, message: describe(error))
        }
        guard version.format == "kaleido-checkpoint" else {
            throw CheckpointError.manifest(path: path, message: "not a Kaleido checkpoint manifest (format '\(version.format)')")
        }
        guard version.formatVersion <= currentFormatVersion else {
            throw CheckpointError.futureFormat(path: path, version: version.formatVersion, supported: currentFormatVersion)
        }
        let manifest: CheckpointManifest
        do {
            manifest = try decoder.decode(CheckpointManifest.self, from: data)
        } catch {
            throw CheckpointError.manifest(path: path, message: describe(error))
        }
        try manifest.validate(path: path)
        return manifest
    }

    /// Internal consistency: one shard per rank, named as expected, sizes adding up.
    func validate(path: String) throws {
        func fail(_ message: String) -> CheckpointError { .manifest(path: path, message: message) }
        guard worldSize >= 1, shards.count == worldSize else {
            throw fail("world_size \(worldSize) but \(shards.count) shards listed")
        }
        for (rank, shard) in shards.enumerated() {
            guard shard.file == CheckpointNames.shard(rank: rank, worldSize: worldSize) else {
                throw fail("shard \(rank) is named '\(shard.file)', expected '\(CheckpointNames.shard(rank: rank, worldSize: worldSize))'")
            }
            let expected = arrays.reduce(0) { $0 + ShardPlan.range(count: $1.count, rank: rank, worldSize: worldSize).count } * 4
            guard shard.uncompressedBytes == expected else {
                throw fail("shard \(shard.file) declares \(shard.uncompressedBytes) raw bytes, its array slices hold \(expected)")
            }
        }
        for array in arrays {
            guard array.dtype == "F32" else { throw fail("array '\(array.name)': dtype \(array.dtype) is not supported") }
            if let key = array.layout {
                guard let entries = layouts[key] else { throw fail("array '\(array.name)': layout '\(key)' missing") }
                guard let last = entries.last, last.offset + last.count == array.count else {
                    throw fail("array '\(array.name)': layout '\(key)' does not cover its \(array.count) floats")
                }
            }
        }
        guard compression.codec == "zstd", compression.checksum == "crc32c", compression.chunkBytes > 0,
              compression.chunkBytes % 4 == 0 else {
            throw fail("unsupported compression \(compression.codec)/\(compression.checksum), chunk \(compression.chunkBytes)")
        }
        let frames = compression.framesPerChunk ?? 1
        guard frames == 1 || (frames == 2 && compression.byteShuffle) else {
            throw fail("compression.frames_per_chunk is \(frames); 1, or 2 with byte shuffle, are supported")
        }
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "manifest lacks key '\(path(context.codingPath + [key]))'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "manifest key '\(path(context.codingPath))': \(context.debugDescription)"
        case DecodingError.dataCorrupted(let context):
            return "manifest is not valid JSON\(context.codingPath.isEmpty ? "" : " at '\(path(context.codingPath))'"): "
                + context.debugDescription
        default:
            return "manifest unreadable: \(error)"
        }
    }

    /// `shards[2].crc32c`, in the file's snake_case spelling.
    static func path(_ keys: [CodingKey]) -> String {
        var text = ""
        for key in keys {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += (text.isEmpty ? "" : ".") + snakeCase(key.stringValue)
            }
        }
        return text
    }

    static func snakeCase(_ name: String) -> String {
        var out = ""
        for character in name {
            if character.isUppercase {
                out += "_" + character.lowercased()
            } else {
                out.append(character)
            }
        }
        return out
    }
}

/// Which floats of each array a rank holds.
public enum ShardPlan {
    /// [n·r/W, n·(r+1)/W): contiguous, sizes differing by at most one, covering 0..<n.
    public static func range(count: Int, rank: Int, worldSize: Int) -> Range<Int> {
        (count * rank / worldSize)..<(count * (rank + 1) / worldSize)
    }
}
