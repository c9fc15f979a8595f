import Foundation

/// A bump allocator for activations and scratch buffers, so the training loop does not call
/// malloc once it is warm.
///
/// The first step allocates chunks as it goes; `reset()` rewinds to the start and later steps
/// reuse the same memory. Tensors taken from the arena are valid until the next `reset()`.
/// One arena belongs to one thread of control (a trainer, a benchmark); it is not shared.
public final class TensorArena {
    private var chunks: [TensorStorage] = []
    private var chunkIndex = 0
    private var used = 0
    private let minimumChunk: Int

    /// - Parameter minimumChunkFloats: size of a new chunk when a request is smaller.
    public init(minimumChunkFloats: Int = 1 << 20) {
        self.minimumChunk = minimumChunkFloats
    }

    /// Floats held by every chunk: the arena's memory footprint.
    public var capacity: Int { chunks.reduce(0) { $0 + $1.count } }

    /// Floats handed out since the last `reset()`.
    public private(set) var inUse = 0

    /// A tensor of `shape` from the arena, zero-filled when `zeroed` (backward buffers are
    /// accumulated into, so they must start at zero).
    public func tensor(_ shape: [Int], zeroed: Bool = false) -> Tensor {
        // Round to 16 floats so every tensor starts on a 64-byte boundary.
        let count = shape.reduce(1, *)
        let rounded = (count + 15) & ~15
        while chunkIndex < chunks.count, used + rounded > chunks[chunkIndex].count {
            chunkIndex += 1
            used = 0
        }
        if chunkIndex == chunks.count {
            // A tensor larger than the minimum gets its own chunk, with room after it for the small
            // tensors that follow a large one (a normalisation's per-channel mean and rstd): without
            // it each of those opened a fresh minimum-size chunk that the next large tensor skipped,
            // 352 MiB of ResNet-50's step (BENCHMARKS.md).
            let slack = minimumChunk / 64
            chunks.append(TensorStorage(count: rounded >= minimumChunk ? rounded + slack : minimumChunk))
            used = 0
        }
        let view = Tensor(storage: chunks[chunkIndex], offset: used, shape: shape)
        used += rounded
        inUse += rounded
        if zeroed { view.fill(0) }
        return view
    }

    /// A position in the arena, to return to with `release(to:keeping:)`.
    public struct Mark: Sendable {
        let chunkIndex: Int
        let used: Int
        let inUse: Int
    }

    public func mark() -> Mark { Mark(chunkIndex: chunkIndex, used: used, inUse: inUse) }

    /// Frees everything handed out since `mark` except `survivor`, which is moved down to the
    /// mark and returned (a view of the same shape at its new place). Stack discipline: what a
    /// computation allocated after its mark is scratch, except its result.
    public func release(to mark: Mark, keeping survivor: Tensor) -> Tensor {
        chunkIndex = mark.chunkIndex
        used = mark.used
        inUse = mark.inUse
        let moved = tensor(survivor.shape)
        if moved.storage !== survivor.storage || moved.offset != survivor.offset {
            // The regions may overlap (the survivor sits above the mark): memmove semantics.
            memmove(moved.pointer, survivor.pointer, survivor.count * MemoryLayout<Float>.stride)
        }
        return moved
    }

    /// Forgets every tensor handed out; their memory is reused by the next requests.
    public func reset() {
        chunkIndex = 0
        used = 0
        inUse = 0
    }
}
