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

    /// A copy holding only this rank's slice of each array in owned memory: cheap (1/W of the
    /// floats), and afterwards training may change the originals while the copy is written.
    public func snapshot(rank: Int, worldSize: Int) -> CheckpointContent {
        var copy = self
        copy.arrays = arrays.map { array in
            let range = ShardPlan.range(count: array.count, rank: rank, worldSize: worldSize)
            let values = array.withValues(range) { Array($0) }
            return SavedArray(name: array.name, count: array.count, layout: array.layout,
                              storage: .owned(start: range.lowerBound, values: values))
        }
        return copy
    }
}
