import CCheckpoint
import Foundation
import KaleidoNN
import KaleidoTensor

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
    ///
    /// The copy is cut into pieces of 4 MiB that `pool`'s threads take in turn, with
    /// non-temporal stores (`kaleido_copy_streaming`): the staged bytes bypass the caches the
    /// training is about to use again.
    func snapshot(rank: Int, worldSize: Int, into staging: CheckpointStagingBuffer, pool: ComputePool = .serial,
                  pieceFloats: Int = 1 << 20) -> CheckpointContent {
        let ranges = arrays.map { ShardPlan.range(count: $0.count, rank: rank, worldSize: worldSize) }
        var starts: [Int] = []   // each slice's offset in the staging buffer
        var total = 0
        for range in ranges {
            starts.append(total)
            total += range.count
        }
        let base = staging.reserve(total)
        pool.forEachPiece((total + pieceFloats - 1) / pieceFloats) { piece in
            let lower = piece * pieceFloats, upper = min(total, lower + pieceFloats)
            for (index, array) in arrays.enumerated() where starts[index] < upper && starts[index] + ranges[index].count > lower {
                let from = max(lower, starts[index]), to = min(upper, starts[index] + ranges[index].count)
                let source = ranges[index].lowerBound + (from - starts[index])
                array.withValues(source..<(source + to - from)) { kaleido_copy_streaming(base + from, $0.baseAddress!, (to - from) * 4) }
            }
        }
        var copy = self
        copy.arrays = arrays.indices.map { index in
            SavedArray(name: arrays[index].name, count: arrays[index].count, layout: arrays[index].layout,
                       storage: .staged(start: ranges[index].lowerBound,
                                        values: UnsafeBufferPointer(start: base + starts[index], count: ranges[index].count), owner: staging))
        }
        return copy
    }

    /// Floats a rank stages for arrays of these sizes (what `CheckpointStagingBuffer.prepare` maps).
    public static func stagedFloats(arrayCounts: [Int], rank: Int, worldSize: Int) -> Int {
        arrayCounts.reduce(0) { $0 + ShardPlan.range(count: $1, rank: rank, worldSize: worldSize).count }
    }
}

/// Memory a background save copies this rank's slices into at the step boundary. It grows to the
/// largest state staged and is reused: later stagings copy into pages already mapped, where a
/// fresh allocation would first fault in and zero every page (for ResNet-50 + AdamW at one rank,
/// that made the copy 231 ms in `kaleido bench checkpoint` and 1.5 s inside a training run).
/// `prepare` maps the pages ahead of the first save, on a thread at idle priority. One save at a
/// time: `CheckpointStore.beginSave` refuses a buffer whose previous save is not finished.
public final class CheckpointStagingBuffer: @unchecked Sendable {
    private var storage = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
    private let condition = NSCondition()
    private var inUse = false
    private var preparing = false

    public init() {}

    deinit { storage.deallocate() }

    /// Floats this buffer holds.
    public var capacity: Int { condition.withLock { storage.count } }

    /// Grows the buffer to `floats` and writes every page once, on a thread of its own at idle
    /// scheduling priority, so the first save's staging copies into mapped pages and training
    /// gives the mapping only the time its cores would idle. A save begun meanwhile waits for it.
    public func prepare(floats: Int) {
        let start = condition.withLock { () -> Bool in
            guard !inUse, !preparing, storage.count < floats else { return false }
            preparing = true
            return true
        }
        guard start else { return }
        SaveThread.start("kaleido-checkpoint-staging", idlePriority: true) { [self] in
            let base = reserve(floats)
            let floatsPerPage = 1024   // 4 KiB; touching one float faults the page in
            for offset in stride(from: 0, to: floats, by: floatsPerPage) { base[offset] = 0 }
            condition.withLock {
                preparing = false
                condition.broadcast()
            }
        }
    }

    /// Marks the buffer taken by a save, after any `prepare` finishes; false if a save holds it.
    func acquire() -> Bool {
        condition.withLock {
            while preparing { condition.wait() }
            if inUse { return false }
            inUse = true
            return true
        }
    }

    func release() { condition.withLock { inUse = false } }

    /// At least `count` floats (reallocated only to grow). Called by the holder: a save that
    /// acquired the buffer, or `prepare`.
    func reserve(_ count: Int) -> UnsafeMutablePointer<Float> {
        condition.withLock {
            if storage.count < max(count, 1) {
                storage.deallocate()
                storage = .allocate(capacity: max(count, 1))
            }
            return storage.baseAddress!
        }
    }
}
