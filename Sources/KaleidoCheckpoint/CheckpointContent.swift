import Foundation
import KaleidoNN

/// One float array to save: a parameter arena, an optimiser state array, the negative queue.
///
/// Every rank passes the whole array (data-parallel ranks hold identical copies) and writes only
/// its slice. The values are either borrowed (no copy; the memory must stay alive and unchanged
/// until `save` returns) or owned; `CheckpointContent.snapshot` turns borrowed arrays into owned
/// copies of just this rank's slice, for a save that runs while training continues.
public struct SavedArray: @unchecked Sendable {
    public let name: String
    /// Floats in the whole array.
    public let count: Int
    /// The arena entries, when the array is a parameter arena (or has an arena's layout, like
    /// optimiser moments); recorded so a restore can refuse another model's checkpoint.
    public let layout: [LayoutEntry]?

    enum Storage {
        case borrowed(UnsafeBufferPointer<Float>)
        /// Floats `start ..< start + values.count` of the array.
        case owned(start: Int, values: [Float])
        /// Floats `start ..< start + values.count` of the array, copied into a staging buffer
        /// (kept alive by `owner`).
        case staged(start: Int, values: UnsafeBufferPointer<Float>, owner: CheckpointStagingBuffer)
    }
    let storage: Storage

    /// Owned values.
    public init(name: String, values: [Float], layout: [LayoutEntry]? = nil) {
        self.name = name
        count = values.count
        self.layout = layout
        storage = .owned(start: 0, values: values)
    }

    /// Borrowed memory, read during `save` (or until `snapshot` copies it).
    public init(name: String, borrowing values: UnsafeBufferPointer<Float>, layout: [LayoutEntry]? = nil) {
        self.name = name
        count = values.count
        self.layout = layout
        storage = .borrowed(values)
    }

    /// An arena's values, borrowed, with its layout.
    public init(name: String, arena: ParameterArena) {
        self.init(name: name, borrowing: UnsafeBufferPointer(start: arena.values.pointer, count: arena.count),
                  layout: LayoutEntry.of(arena))
    }

    init(name: String, count: Int, layout: [LayoutEntry]?, storage: Storage) {
        self.name = name; self.count = count; self.layout = layout; self.storage = storage
    }

    /// The floats `range` of the array; `range` must lie within what this value holds.
    func withValues<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        switch storage {
        case .borrowed(let buffer):
            return try body(UnsafeBufferPointer(rebasing: buffer[range]))
        case .owned(let start, let values):
            precondition(range.lowerBound >= start && range.upperBound <= start + values.count,
                         "array \(name): floats \(range) requested, \(start)..<\(start + values.count) held")
            return try values.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[(range.lowerBound - start)..<(range.upperBound - start)])) }
        case .staged(let start, let values, _):
            precondition(range.lowerBound >= start && range.upperBound <= start + values.count,
                         "array \(name): floats \(range) requested, \(start)..<\(start + values.count) staged")
            return try body(UnsafeBufferPointer(rebasing: values[(range.lowerBound - start)..<(range.upperBound - start)]))
        }
    }
}

/// Everything a checkpoint holds: what the trainer hands to `CheckpointStore.save`.
///
/// Arrays by convention: `online`, `target` (arenas), `optimizer.<state name>` (e.g.
/// `optimizer.exp_avg`), `queue`. Blobs are JSON texts the trainer owns the schema of
/// (`rng`, `loader`, …); the store keeps them verbatim.
public struct CheckpointContent: @unchecked Sendable {
    public var step: Int
    public var epoch: Int
    /// The resolved config as YAML.
    public var config: String
    public var arrays: [SavedArray]
    public var optimizer: OptimizerRecord?
    public var schedulerStep: Int?
    public var queueSize: Int?
    /// JSON texts, each a UTF-8 JSON document.
    public var blobs: [String: Data]

    public init(step: Int, epoch: Int = 0, config: String, arrays: [SavedArray], optimizer: OptimizerRecord? = nil,
                schedulerStep: Int? = nil, queueSize: Int? = nil, blobs: [String: Data] = [:]) {
        self.step = step; self.epoch = epoch; self.config = config; self.arrays = arrays
        self.optimizer = optimizer; self.schedulerStep = schedulerStep; self.queueSize = queueSize; self.blobs = blobs
    }

    /// A copy holding only this rank's slice of each array, copied into `staging`: cheap (1/W of
    /// the floats, into pages mapped by earlier saves), and afterwards training may change the
    /// originals while the copy is written. `staging` must not hold another save's copy.
    func snapshot(rank: Int, worldSize: Int, into staging: CheckpointStagingBuffer) -> CheckpointContent {
        let ranges = arrays.map { ShardPlan.range(count: $0.count, rank: rank, worldSize: worldSize) }
        let base = staging.reserve(ranges.reduce(0) { $0 + $1.count })
        var copy = self
        var offset = 0
        copy.arrays = zip(arrays, ranges).map { array, range in
            let destination = base + offset
            array.withValues(range) { destination.update(from: $0.baseAddress!, count: range.count) }
            offset += range.count
            return SavedArray(name: array.name, count: array.count, layout: array.layout,
                              storage: .staged(start: range.lowerBound, values: UnsafeBufferPointer(start: destination, count: range.count),
                                               owner: staging))
        }
        return copy
    }
}

/// Memory a background save copies this rank's slices into at the step boundary. It grows to the
/// largest state staged and is reused: later stagings copy into pages already mapped, where a
/// fresh allocation would first fault in and zero every page (for ResNet-50 + AdamW at one rank,
/// that made the copy 231 ms). One save at a time: `CheckpointStore.beginSave` refuses a buffer
/// whose previous save is not finished.
public final class CheckpointStagingBuffer: @unchecked Sendable {
    private var storage = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
    private let lock = NSLock()
    private var inUse = false

    public init() {}

    deinit { storage.deallocate() }

    /// Floats this buffer holds.
    public var capacity: Int { storage.count }

    /// Marks the buffer taken by a save; false if it already is.
    func acquire() -> Bool {
        lock.withLock {
            if inUse { return false }
            inUse = true
            return true
        }
    }

    func release() { lock.withLock { inUse = false } }

    /// At least `count` floats (reallocated only to grow).
    func reserve(_ count: Int) -> UnsafeMutablePointer<Float> {
        if storage.count < max(count, 1) {
            storage.deallocate()
            storage = .allocate(capacity: max(count, 1))
        }
        return storage.baseAddress!
    }
}
