import Foundation
import KaleidoNN
import KaleidoSafeTensors

/// A checkpoint read back whole: every array reassembled from all shards (so any world size can
/// resume from it: data-parallel ranks each need the full arrays), after verifying every
/// shard's size and CRC-32C and every zstd frame's XXH64.
///
///     let checkpoint = try store.load(store.newestValid()!)
///     try checkpoint.restore("online", into: model.online)      // refuses another model's layout
///     try checkpoint.restore("optimizer.exp_avg", into: UnsafeMutableBufferPointer(…))
///     let rng = checkpoint.blobs["rng"]                             // the JSON the trainer saved
public final class LoadedCheckpoint: @unchecked Sendable {
    public let url: URL
    public let manifest: CheckpointManifest
    private let buffers: [String: UnsafeMutableBufferPointer<Float>]

    public var step: Int { manifest.step }
    public var epoch: Int { manifest.epoch }
    /// The resolved config YAML the run was saved with.
    public var config: String { manifest.config }
    public var worldSize: Int { manifest.worldSize }
    public var optimizer: OptimizerRecord? { manifest.optimizer }
    public var schedulerStep: Int? { manifest.schedulerStep }
    public var queueSize: Int? { manifest.queueSize }
    /// The JSON texts saved with the content, byte for byte.
    public var blobs: [String: Data] { manifest.blobs.mapValues { Data($0.utf8) } }
    /// Array names in saved order.
    public var arrayNames: [String] { manifest.arrays.map(\.name) }

    public init(contentsOf url: URL, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        self.url = url
        let manifest = try CheckpointManifest.read(from: url)
        self.manifest = manifest
        var buffers: [String: UnsafeMutableBufferPointer<Float>] = [:]
        for array in manifest.arrays {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, array.count))
            buffers[array.name] = UnsafeMutableBufferPointer(rebasing: buffer[0..<array.count])
        }
        self.buffers = buffers
        for rank in 0..<manifest.worldSize {
            var segments = ShardSegments()
            for array in manifest.arrays {
                let range = ShardPlan.range(count: array.count, rank: rank, worldSize: manifest.worldSize)
                segments.append(array.name, buffers[array.name]!.baseAddress! + range.lowerBound, count: range.count)
            }
            try Self.readShard(url, manifest: manifest, rank: rank, into: segments, threads: threads)
        }
    }

    deinit {
        for buffer in buffers.values { buffer.baseAddress?.deallocate() }
    }

    /// Checks shard `rank`'s size and CRC-32C, then (with `segments`) decodes it into them.
    static func readShard(_ url: URL, manifest: CheckpointManifest, rank: Int, into segments: ShardSegments?, threads: Int) throws {
        let record = manifest.shards[rank]
        let path = url.appendingPathComponent(record.file).path
        guard let size = DurableFile.size(path) else { throw CheckpointError.missingShard(path: path) }
        guard size == record.bytes else { throw CheckpointError.truncatedShard(path: path, expected: record.bytes, actual: size) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw CheckpointError.io(path: path, operation: "read", message: error.localizedDescription)
        }
        try data.withUnsafeBytes { bytes in
            let crc = CRC32C.hex(ShardCodec.checksum(bytes, threads: threads))
            guard crc == record.crc32c else { throw CheckpointError.checksumMismatch(path: path, expected: record.crc32c, actual: crc) }
            guard let segments else { return }
            let codec = ShardCodec(level: manifest.compression.level, byteShuffle: manifest.compression.byteShuffle,
                                   chunkBytes: manifest.compression.chunkBytes, threads: threads,
                                   framesPerChunk: manifest.compression.framesPerChunk ?? 1)
            try codec.decode(bytes, into: segments, path: path)
        }
    }

    // MARK: - Reading arrays

    /// The floats of array `name`, valid while this object lives.
    public func values(_ name: String) throws -> UnsafeBufferPointer<Float> {
        guard let buffer = buffers[name] else {
            throw CheckpointError.unknownArray(name: name, path: url.path, available: arrayNames)
        }
        return UnsafeBufferPointer(buffer)
    }

    /// A copy of array `name`.
    public func array(_ name: String) throws -> [Float] { Array(try values(name)) }

    /// The arena layout array `name` was saved with, if it is an arena.
    public func layout(of name: String) -> [LayoutEntry]? {
        manifest.arrays.first { $0.name == name }?.layout.flatMap { manifest.layouts[$0] }
    }

    /// Copies array `name` into `target`, which must have exactly its length.
    public func restore(_ name: String, into target: UnsafeMutableBufferPointer<Float>) throws {
        let source = try values(name)
        guard source.count == target.count else {
            throw CheckpointError.layoutMismatch(array: name, path: url.path,
                                                 detail: "\(source.count) floats saved, \(target.count) expected")
        }
        if let base = target.baseAddress, let from = source.baseAddress { base.update(from: from, count: source.count) }
    }

    /// Copies array `name` into `arena`'s values after checking that the arena has the saved
    /// layout (names, shapes, offsets): a checkpoint of another model or config is refused with
    /// the first parameter that differs.
    public func restore(_ name: String, into arena: ParameterArena) throws {
        try checkLayout(name, matches: arena)
        try restore(name, into: UnsafeMutableBufferPointer(start: arena.values.pointer, count: arena.count))
    }

    /// Throws `layoutMismatch` unless array `name` was saved with `arena`'s layout.
    public func checkLayout(_ name: String, matches arena: ParameterArena) throws {
        _ = try values(name)
        guard let saved = layout(of: name) else { return }
        let current = LayoutEntry.of(arena)
        func fail(_ detail: String) -> CheckpointError { .layoutMismatch(array: name, path: url.path, detail: detail) }
        for (index, (s, c)) in zip(saved, current).enumerated() where s != c {
            if s.name != c.name {
                throw fail("parameter \(index) is '\(s.name)' \(s.shape) in the checkpoint, '\(c.name)' \(c.shape) in this model")
            }
            throw fail("'\(s.name)' is \(s.shape) (\(s.layout.rawValue), \(s.role.rawValue)) in the checkpoint, "
                       + "\(c.shape) (\(c.layout.rawValue), \(c.role.rawValue)) in this model")
        }
        guard saved.count == current.count else {
            let extra = saved.count > current.count ? "the checkpoint also has '\(saved[current.count].name)'"
                                                    : "this model also has '\(current[saved.count].name)'"
            throw fail("\(saved.count) parameters saved, \(current.count) in this model; \(extra)")
        }
    }

    /// The checkpoint as content to save again (arrays borrowed from this object; keep it alive).
    public var content: CheckpointContent {
        CheckpointContent(step: step, epoch: epoch, config: config,
                          arrays: manifest.arrays.map { SavedArray(name: $0.name, borrowing: UnsafeBufferPointer(buffers[$0.name]!),
                                                                   layout: layout(of: $0.name)) },
                          optimizer: optimizer, schedulerStep: schedulerStep, queueSize: queueSize, blobs: blobs)
    }

    // MARK: - Export

    /// Prefixes of the SSL heads in an online/target arena; the encoder is everything else.
    public static let headPrefixes = ["projector.", "predictor."]

    /// Writes the encoder held in arena array `name` (`online` or `target`) as a safetensors
    /// state dict with timm / torchvision names and PyTorch layouts, without the SSL heads.
    /// Returns the exported tensor names.
    @discardableResult
    public func exportEncoder(_ name: String = "online", to destination: URL, metadata: [String: String] = [:]) throws -> [String] {
        let source = try values(name)
        guard let layout = layout(of: name) else {
            throw CheckpointError.layoutMismatch(array: name, path: url.path, detail: "saved without a parameter layout, cannot export")
        }
        let encoder = layout.filter { entry in !Self.headPrefixes.contains { entry.name.hasPrefix($0) } }
        let builder = ParameterBuilder()
        for entry in encoder {
            _ = builder.parameter(entry.name, shape: entry.shape, layout: entry.layout, role: entry.role, initializer: .zeros)
        }
        let arena = builder.makeArena(seed: 0)
        for (entry, saved) in zip(arena.entries, encoder) {
            (arena.values.pointer + entry.offset).update(from: source.baseAddress! + saved.offset, count: saved.count)
        }
        var fields = metadata
        fields["kaleido_checkpoint_step"] = String(step)
        fields["kaleido_array"] = name
        try ArenaSafeTensors.export(arena, to: destination, metadata: fields)
        return encoder.map(\.name)
    }
}
