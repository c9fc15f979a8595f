import Foundation

/// A bump allocator for activations and scratch buffers, so the training loop does not call
/// malloc once it is warm.
///
/// The first step allocates chunks as it goes; `reset()` rewinds to the start and later steps
/// reuse the same memory. Tensors taken from the arena are valid until the next `reset()`.
/// One arena belongs to one thread of control (a trainer, a benchmark); it is not shared.
public final class TensorArena {
    /// One bump stack over a list of chunks.
    private struct Stack {
        var chunks: [TensorStorage] = []
        var chunkIndex = 0
        var used = 0
        /// Whether the first chunk is a reservation (`TensorStorage(reserving:)`), whose memory
        /// is only what was written: its high-water mark, `peak`.
        var reserved = false
        var peak = 0

        var capacity: Int {
            guard reserved else { return chunks.reduce(0) { $0 + $1.count } }
            return peak + chunks.dropFirst().reduce(0) { $0 + $1.count }
        }

        /// `count` floats from the first chunk at or after the current one with room, else from a
        /// new chunk of `newChunk` floats at the end.
        mutating func take(_ count: Int, newChunk: Int) -> (TensorStorage, Int) {
            while chunkIndex < chunks.count, used + count > chunks[chunkIndex].count {
                chunkIndex += 1
                used = 0
            }
            if chunkIndex == chunks.count {
                chunks.append(TensorStorage(count: newChunk))
                used = 0
            }
            defer {
                used += count
                if reserved && chunkIndex == 0 { peak = max(peak, used) }
            }
            return (chunks[chunkIndex], used)
        }
    }

    /// Small tensors (a normalisation's statistics, an attention bias) share chunks of the
    /// minimum size. Larger ones are stacked in one reserved address range, each right above
    /// the one before, so the memory the arena holds is the largest its stack ever grew to. In
    /// chunks (the fallback where the reservation is refused, or once it is full) every larger
    /// tensor gets a chunk of exactly its size, and a request bigger than the chunk at its place
    /// in the stack skips to a new one: Swin-3D's step held ≈ 1.3 GB more than PyTorch's that way.
    /// Mixed in one stack, each small tensor after a large one opened a chunk the next large
    /// tensor skipped (352 MiB of ResNet-50's step, ≈1.6 GB of Swin-3D's, BENCHMARKS.md).
    private var small = Stack()
    private var large = Stack()
    private let minimumChunk: Int

    /// Address space reserved for the larger tensors: 64 GiB, far beyond any step on one node,
    /// and free until written.
    public static let reservedFloats = 1 << 34

    /// - Parameter minimumChunkFloats: size of the chunks small tensors share.
    /// - Parameter reserving: whether larger tensors go to a reserved address range (else to
    ///   chunks of their size, as where the system refuses the reservation).
    public init(minimumChunkFloats: Int = 1 << 20, reserving: Bool = true) {
        self.minimumChunk = minimumChunkFloats
        if reserving, let reservation = TensorStorage(reserving: Self.reservedFloats) {
            large.chunks = [reservation]
            large.reserved = true
        }
    }

    /// Requests below this many floats go to the shared chunks.
    private var smallLimit: Int { max(16, minimumChunk / 8) }

    /// Floats held by every chunk: the arena's memory footprint.
    public var capacity: Int { small.capacity + large.capacity }

    /// Floats handed out since the last `reset()`.
    public private(set) var inUse = 0

    /// A tensor of `shape` from the arena, zero-filled on `zeroingPool`'s threads when given
    /// (backward buffers are accumulated into, so they must start at zero).
    public func tensor(_ shape: [Int], zeroingOn zeroingPool: ComputePool? = nil) -> Tensor {
        // Round to 16 floats so every tensor starts on a 64-byte boundary.
        let count = shape.reduce(1, *)
        let rounded = (count + 15) & ~15
        let (storage, offset) = rounded < smallLimit ? small.take(rounded, newChunk: minimumChunk)
                                                     : large.take(rounded, newChunk: rounded)
        let view = Tensor(storage: storage, offset: offset, shape: shape)
        inUse += rounded
        if let zeroingPool { Zero.fill(view.pointer, count: view.count, pool: zeroingPool) }
        return view
    }

    /// A position in the arena, to return to with `release(to:keeping:)`.
    public struct Mark: Sendable {
        let small: (chunkIndex: Int, used: Int)
        let large: (chunkIndex: Int, used: Int)
        let inUse: Int
    }

    public func mark() -> Mark {
        Mark(small: (small.chunkIndex, small.used), large: (large.chunkIndex, large.used), inUse: inUse)
    }

    /// Frees everything handed out since `mark`.
    public func release(to mark: Mark) {
        (small.chunkIndex, small.used) = mark.small
        (large.chunkIndex, large.used) = mark.large
        inUse = mark.inUse
    }

    /// Frees everything handed out since `mark` except `survivor`, which is moved down to the
    /// mark and returned (a view of the same shape at its new place). Stack discipline: what a
    /// computation allocated after its mark is scratch, except its result. The move runs on
    /// `pool`'s threads (a backward pass moves an activation-sized gradient after some layers;
    /// on one thread the others sat idle).
    public func release(to mark: Mark, keeping survivor: Tensor, pool: ComputePool = .serial) -> Tensor {
        release(to: mark)
        let moved = tensor(survivor.shape)
        guard !moved.startsAtSameFloat(as: survivor) else { return moved }
        let count = survivor.count, source = survivor.pointer, target = moved.pointer
        func copy(_ floats: Range<Int>) {
            pool.forEachElementRange(floats.count) { range in
                let start = floats.lowerBound + range.lowerBound
                (target + start).update(from: source + start, count: range.count)
            }
        }
        let distance = moved.offset.distance(to: survivor.offset)
        if moved.storage !== survivor.storage || abs(distance) >= count {
            copy(0..<count)
        } else if distance >= 2 * ComputePool.floatsPerThread {
            // Overlapping, moving down by `distance` (a gradient wider than the one below it, as
            // a linear layer's 4C-channel input gradient over its C-channel output gradient):
            // in rounds of `distance` floats, each round's source above its target, and the
            // target only over source the rounds before it have read.
            for start in stride(from: 0, to: count, by: distance) { copy(start..<min(count, start + distance)) }
        } else {
            // Overlapping and moved a short way (rounds too small to split): memmove on this thread.
            memmove(target, source, count * MemoryLayout<Float>.stride)
        }
        return moved
    }

    /// Forgets every tensor handed out; their memory is reused by the next requests.
    public func reset() {
        (small.chunkIndex, small.used) = (0, 0)
        (large.chunkIndex, large.used) = (0, 0)
        inUse = 0
    }
}
