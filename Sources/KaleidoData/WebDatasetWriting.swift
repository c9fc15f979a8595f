import Foundation
import KaleidoTensor

/// Writes samples into numbered WebDataset shards (`shard-000000.tar`, …) in one folder,
/// starting a new shard when the current one would pass `shardBytes`. A sample is never split
/// over two shards.
public final class ShardSequenceWriter {
    public let directory: String
    public let shardBytes: Int
    public private(set) var shards: [String] = []
    public private(set) var samples = 0
    private var current: TarArchive.Writer?

    public init(directory: String, shardBytes: Int) throws {
        precondition(shardBytes > 0, "shard size must be positive")
        self.directory = directory
        self.shardBytes = shardBytes
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Appends one sample: its members as (extension, bytes), named `key.extension`.
    public func add(key: String, members: [(String, [UInt8])]) throws {
        let size = members.reduce(0) { $0 + TarArchive.archivedSize($1.1.count) }
        if let writer = current, writer.bytesWritten > 0, writer.bytesWritten + size > shardBytes {
            try writer.finish()
            current = nil
        }
        if current == nil {
            let path = String(format: "%@/shard-%06d.tar", directory, shards.count)
            current = try TarArchive.Writer(path: path)
            shards.append(path)
        }
        for (ext, bytes) in members { try current!.add(name: "\(key).\(ext)", bytes: bytes) }
        samples += 1
    }

    public func finish() throws {
        try current?.finish()
        current = nil
    }

    /// `1GB`, `256MB`, `64KB` or a number of bytes.
    public static func parseSize(_ text: String) -> Int? {
        let units: [(String, Int)] = [("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)]
        let upper = text.uppercased().trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in units where upper.hasSuffix(suffix) {
            guard let value = Double(upper.dropLast(suffix.count)), value > 0 else { return nil }
            return Int(value * Double(scale))
        }
        return Int(upper).flatMap { $0 > 0 ? $0 : nil }
    }
}

/// `kaleido data pack`: an ImageFolder (`root/<class>/<image>`, with `train/` and `val/` when
/// present) as WebDataset shards `out/train/shard-*.tar` and `out/val/…`, plus `out/classes.txt`.
/// Image files are stored as they are (no re-encoding); samples are shuffled once with `seed`
/// so that each shard holds every class, as a WebDataset reader expects.
public struct WebDatasetPack {
    public var shardBytes = 1 << 30
    public var seed: UInt64 = 0

    public init() {}

    public struct Summary: Sendable {
        public var samples: [Split: Int] = [:]
        public var shards: [Split: Int] = [:]
    }

    public func pack(folder: String, into output: String) throws -> Summary {
        var summary = Summary()
        var classes: [String]?
        for split in Split.allCases {
            let root: String
            do { root = try Listing.splitRoot(folder, split: split) } catch where split == .val { continue }
            let dataset = try ImageFolderDataset(root: root)
            if let classes, classes != dataset.classes {
                throw DataError.badShard(path: root, reason: "its class folders differ from the train split's")
            }
            classes = dataset.classes
            var order = Array(0..<dataset.count)
            var rng = SplitMix64(keys: seed, RandomStream.epochOrder.rawValue, UInt64(split == .train ? 0 : 1))
            rng.shuffle(&order)
            let writer = try ShardSequenceWriter(directory: "\(output)/\(split.rawValue)", shardBytes: shardBytes)
            for (position, index) in order.enumerated() {
                let file = dataset.path(of: index)
                let ext = (file as NSString).pathExtension.lowercased()
                try writer.add(key: SyntheticExport.fileName(position),
                               members: [(ext, try ImageCodec.readFile(file)), ("cls", Array("\(dataset.label(of: index))".utf8))])
            }
            try writer.finish()
            summary.samples[split] = writer.samples
            summary.shards[split] = writer.shards.count
        }
        try (classes ?? []).joined(separator: "\n").appending("\n").write(toFile: "\(output)/classes.txt", atomically: true, encoding: .utf8)
        return summary
    }
}
