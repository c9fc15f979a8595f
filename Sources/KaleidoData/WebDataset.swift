import Foundation
import KaleidoTensor
import Logging
import Synchronization

/// A split stored as WebDataset tar shards: consecutive members sharing a key (the name up to
/// the first dot of its file name) form a sample, `key.cls` holding its class number.
///
///     image:  key.jpg | key.jpeg | key.png                + key.cls
///     video:  key.000.jpg, key.001.jpg, …  (or .png)      + key.cls
///     rgbd:   key.jpg | key.png  +  key.depth.png (16-bit) + key.cls
///
/// The shards are `root/<split>/*.tar` (or `root/*.tar` for training when there are no split
/// folders), or a brace pattern such as `/data/in1k/train-{000000..001023}.tar`, whose val
/// shards are the same pattern with `train` replaced by `val`. Class names come from
/// `classes.txt` (one per line) beside the split folders or the pattern's shards when present;
/// otherwise they are the class numbers.
///
/// Listing reads one 512-byte header per member, and each shard's listing is kept in
/// `indexCache` (keyed by path, size and modification time), so a restart does not list a
/// million members again. Samples are then read with `pread` at their offsets: any order is
/// possible, and `readBlocks` tells the pipeline that each shard's samples are best read
/// together (the epoch order visits shards in turn, each shard's samples shuffled within it).
/// A shard is hinted to the kernel (`POSIX_FADV_WILLNEED`) when its first sample is read, so
/// the rest of it is read ahead sequentially. No descriptor is held between reads.
public struct WebDataset: Dataset {
    public let modality: Modality
    public let classes: [String]
    public let shards: [String]
    let samples: [Sample]
    /// Sample index ranges of each shard.
    public let readBlocks: [Range<Int>]?
    public let depthScale: Float
    private let files: ShardFiles

    struct Sample: Sendable {
        var shard: Int32
        var label: Int32
        var key: String
        /// The image, or the frames in order; RGB-D's depth map last.
        var members: [TarMember]
    }

    /// - Parameters:
    ///   - location: a folder with `train/` and `val/` shards, or a brace pattern of shards.
    ///   - indexCache: folder for the shards' listings (nil: list every time).
    public init(location: String, split: Split, modality: Modality, depthScale: Float = 1000, indexCache: String? = nil) throws {
        self.modality = modality
        self.depthScale = depthScale
        let (shards, classFile) = try Self.shardPaths(location, split: split)
        self.shards = shards
        let logger = Logger(label: "kaleido.data")
        var samples: [Sample] = [], blocks: [Range<Int>] = []
        var labelsSeen = Set<Int32>()
        for (shardIndex, shard) in shards.enumerated() {
            let listing = try ShardListing.load(shard, cache: indexCache)
            if let damage = listing.damage { logger.warning("\(damage)") }
            let first = samples.count
            for group in Self.groupByKey(listing.members) {
                let sample = try Self.sample(group, shard: shard, shardIndex: Int32(shardIndex), modality: modality, labels: listing.labels)
                labelsSeen.insert(sample.label)
                samples.append(sample)
            }
            blocks.append(first..<samples.count)
        }
        guard let highest = labelsSeen.max() else {
            throw DataError.badShard(path: location, reason: "no \(modality) samples in \(shards.count) shards")
        }
        if let classFile, let text = try? String(contentsOfFile: classFile, encoding: .utf8) {
            classes = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        } else {
            classes = (0...Int(highest)).map(String.init)
        }
        if Int(highest) >= classes.count {
            throw DataError.badShard(path: classFile ?? location, reason: "class \(highest) in the shards, but \(classes.count) class names")
        }
        self.samples = samples
        self.readBlocks = blocks
        files = ShardFiles(paths: shards)
    }

    public var count: Int { samples.count }
    public func label(of index: Int) -> Int { Int(samples[index].label) }
    public func frameCount(of index: Int) -> Int { modality == .video ? samples[index].members.count : 1 }
    public func path(of index: Int) -> String {
        let sample = samples[index]
        return "\(shards[Int(sample.shard)])/\(sample.key)"
    }

    public func load(_ index: Int, frames: [Int], context: DecodeContext) throws -> DecodedSample {
        let sample = samples[index]
        let shard = Int(sample.shard)
        func bytes(_ member: TarMember) throws -> [UInt8] { try files.read(member, of: shard) }
        func name(_ member: TarMember) -> String { "\(shards[shard])/\(member.name)" }
        switch modality {
        case .image:
            let member = sample.members[0]
            return DecodedSample(frames: [try context.decodeImage(bytes(member), path: name(member))], label: Int(sample.label))
        case .video:
            let decoded = try frames.map { t in try context.decodeImage(bytes(sample.members[t]), path: name(sample.members[t])) }
            return DecodedSample(frames: decoded, label: Int(sample.label))
        case .rgbd:
            let image = try context.decodeImage(bytes(sample.members[0]), path: name(sample.members[0]))
            let depthMember = sample.members[1]
            let depth = try ImageCodec.decodePNG16(bytes(depthMember), path: name(depthMember))
            guard depth.width == image.width, depth.height == image.height else {
                throw ImageDecodeError(path: name(depthMember), reason: "depth is \(depth.width)×\(depth.height), "
                                       + "the RGB image \(image.width)×\(image.height)")
            }
            return DecodedSample(frames: [image], depth: depth, depthScale: depthScale, label: Int(sample.label))
        }
    }

    // MARK: - Listing

    /// Whether `location` is a WebDataset: a brace pattern, a `.tar` file, or a folder whose
    /// split folder (or itself) holds `.tar` shards.
    public static func isShardLocation(_ location: String) -> Bool {
        if namesShards(location) { return true }
        for folder in [location + "/train", location] where Listing.isDirectory(folder) {
            if Listing.entries(folder).contains(where: { $0.hasSuffix(".tar") }) { return true }
        }
        return false
    }

    /// A brace pattern or a single `.tar`: shard files named directly rather than a folder of them.
    public static func namesShards(_ location: String) -> Bool { location.contains("{") || location.hasSuffix(".tar") }

    /// The shard files of one split, and where `classes.txt` would be.
    static func shardPaths(_ location: String, split: Split) throws -> (shards: [String], classes: String?) {
        let trimmed = location.hasSuffix("/") && location.count > 1 ? String(location.dropLast()) : location
        if namesShards(trimmed) {
            var pattern = trimmed
            if split == .val {
                let directory = (pattern as NSString).deletingLastPathComponent, file = (pattern as NSString).lastPathComponent
                guard let range = file.range(of: "train") else {
                    throw DataError.badShard(path: pattern, reason: "the val shards are the pattern with `train` replaced by `val`, "
                                             + "and this pattern has no `train`")
                }
                pattern = directory + "/" + file.replacingCharacters(in: range, with: "val")
            }
            let shards = try BracePattern.expand(pattern)
            for shard in shards where !FileManager.default.fileExists(atPath: shard) { throw DataError.badShard(path: shard, reason: "no such shard") }
            return (shards, (pattern as NSString).deletingLastPathComponent + "/classes.txt")
        }
        let folder = try Listing.splitRoot(trimmed, split: split)
        let shards = Listing.entries(folder).filter { $0.hasSuffix(".tar") }.map { folder + "/" + $0 }
        guard !shards.isEmpty else { throw DataError.badShard(path: folder, reason: "no .tar shards in this folder") }
        return (shards, trimmed + "/classes.txt")
    }

    /// Consecutive members sharing a key.
    static func groupByKey(_ members: [TarMember]) -> [(key: String, members: [String: TarMember])] {
        var groups: [(key: String, members: [String: TarMember])] = []
        for member in members {
            let (key, ext) = splitKey(member.name)
            if groups.last?.key == key {
                groups[groups.count - 1].members[ext] = member
            } else {
                groups.append((key, [ext: member]))
            }
        }
        return groups
    }

    /// WebDataset's rule: the key is the path up to the first dot of the file name.
    static func splitKey(_ name: String) -> (key: String, extension: String) {
        let slash = name.lastIndex(of: "/").map { name.index(after: $0) } ?? name.startIndex
        guard let dot = name[slash...].firstIndex(of: ".") else { return (name, "") }
        return (String(name[..<dot]), String(name[name.index(after: dot)...]).lowercased())
    }

    static func sample(_ group: (key: String, members: [String: TarMember]), shard: String, shardIndex: Int32,
                       modality: Modality, labels: [String: Int32]) throws -> Sample {
        let at = "\(shard)/\(group.key)"
        guard let label = labels[group.key] else {
            throw DataError.missingFile(path: at, what: "class (\(group.key).cls holding a class number)")
        }
        let imageExtensions = ["jpg", "jpeg", "png"]
        var members: [TarMember]
        switch modality {
        case .image, .rgbd:
            guard let image = imageExtensions.lazy.compactMap({ group.members[$0] }).first else {
                throw DataError.missingFile(path: at, what: "image (\(group.key).jpg or .png)")
            }
            members = [image]
            if modality == .rgbd {
                guard let depth = group.members["depth.png"] else { throw DataError.missingFile(path: at, what: "16-bit depth map (\(group.key).depth.png)") }
                members.append(depth)
            }
        case .video:
            let frames = group.members.compactMap { ext, member -> (Int, TarMember)? in
                let parts = ext.split(separator: ".")
                guard parts.count == 2, imageExtensions.contains(String(parts[1])), let t = Int(parts[0]) else { return nil }
                return (t, member)
            }.sorted { $0.0 < $1.0 }
            guard !frames.isEmpty else { throw DataError.emptyVideo(path: at) }
            members = frames.map(\.1)
        }
        return Sample(shard: shardIndex, label: label, key: group.key, members: members)
    }
}

/// One shard's members and the class numbers of its samples (read from the `.cls` members while
/// listing: they are a few bytes each), as cached between runs.
struct ShardListing: Codable {
    var path: String
    var size: Int
    var modified: Double
    var members: [TarMember]
    var labels: [String: Int32]
    var damage: String?

    static func load(_ shard: String, cache: String?) throws -> ShardListing {
        let attributes = try? FileManager.default.attributesOfItem(atPath: shard)
        guard let size = (attributes?[.size] as? NSNumber)?.intValue,
              let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 else {
            throw DataError.missingRoot(path: shard)
        }
        let cacheFile = cache.map { "\($0)/\(String(format: "%016llx", FNV1a.hash(shard))).json" }
        if let cacheFile, let data = FileManager.default.contents(atPath: cacheFile),
           let cached = try? JSONDecoder().decode(ShardListing.self, from: data),
           cached.path == shard && cached.size == size && cached.modified == modified {
            return cached
        }
        let (all, damage) = try TarArchive.members(of: shard)
        let fd = open(shard, O_RDONLY)
        guard fd >= 0 else { throw DataError.missingRoot(path: shard) }
        defer { close(fd) }
        var members: [TarMember] = [], labels: [String: Int32] = [:]
        for member in all {
            let (key, ext) = WebDataset.splitKey(member.name)
            guard ext == "cls" else { members.append(member); continue }
            let text = String(decoding: try TarArchive.read(fd, member: member, path: shard), as: UTF8.self)
            guard let label = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), label >= 0 else {
                throw DataError.badShard(path: "\(shard)/\(member.name)", reason: "holds \"\(text.prefix(20))\", not a class number")
            }
            labels[key] = label
        }
        let listing = ShardListing(path: shard, size: size, modified: modified, members: members, labels: labels, damage: damage)
        if let cache, let cacheFile, (try? FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)) != nil,
           let data = try? JSONEncoder().encode(listing) {
            // Written aside and renamed: ranks listing the same shard at once never read half a file.
            let temporary = cacheFile + ".\(getpid()).tmp"
            if FileManager.default.createFile(atPath: temporary, contents: data) { rename(temporary, cacheFile) }
        }
        return listing
    }
}

/// Reads members of the shards for the decode threads. Each read opens the shard, `pread`s the
/// member and closes it again (what a folder dataset does per file): a dataset of thousands of
/// shards per split and modality would otherwise hold more descriptors than a process may open.
/// The first read of each shard asks the kernel to read the whole shard ahead.
final class ShardFiles: Sendable {
    let paths: [String]
    private let hinted: Mutex<[Bool]>

    init(paths: [String]) {
        self.paths = paths
        hinted = Mutex([Bool](repeating: false, count: paths.count))
    }

    func read(_ member: TarMember, of shard: Int) throws -> [UInt8] {
        let fd = open(paths[shard], O_RDONLY)
        guard fd >= 0 else {
            throw ImageDecodeError(path: "\(paths[shard])/\(member.name)", reason: "cannot open the shard (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        let first = hinted.withLock { hinted in
            defer { hinted[shard] = true }
            return !hinted[shard]
        }
        if first { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED) }
        return try TarArchive.read(fd, member: member, path: paths[shard])
    }
}

/// Shell-style brace ranges in shard names: `train-{000000..000127}.tar` (zero-padded to the
/// width of the bounds) and lists `{a,b}`.
public enum BracePattern {
    public static func expand(_ pattern: String) throws -> [String] {
        guard let open = pattern.firstIndex(of: "{") else { return [pattern] }
        guard let close = pattern[open...].firstIndex(of: "}") else {
            throw DataError.badShard(path: pattern, reason: "unclosed { in the shard pattern")
        }
        let head = String(pattern[..<open]), body = String(pattern[pattern.index(after: open)..<close])
        let tails = try expand(String(pattern[pattern.index(after: close)...]))
        let choices: [String]
        if let dots = body.range(of: "..") {
            let low = String(body[..<dots.lowerBound]), high = String(body[dots.upperBound...])
            guard let lo = Int(low), let hi = Int(high), lo <= hi else {
                throw DataError.badShard(path: pattern, reason: "{\(body)} is not a range of numbers low..high")
            }
            choices = (lo...hi).map { String(format: "%0\(low.count)d", $0) }
        } else {
            choices = body.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        }
        return choices.flatMap { choice in tails.map { head + choice + $0 } }
    }
}
