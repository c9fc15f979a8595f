import Testing
@testable import KaleidoTensor

@Suite struct TensorTests {
    @Test func reshapeAndSliceAreViewsOfTheSameStorage() {
        let t = Tensor(shape: [2, 3, 2], values: (0..<12).map(Float.init))
        let flat = t.reshaped([-1])
        #expect(flat.shape == [12])
        let second = t.slice(1..<2).reshaped([3, 2])
        #expect(second.array == [6, 7, 8, 9, 10, 11])
        second.pointer[0] = 100
        #expect(t.array[6] == 100 && flat.array[6] == 100)
    }

    @Test func arenaReusesItsMemoryAfterReset() {
        let arena = TensorArena(minimumChunkFloats: 64)
        let a = arena.tensor([10, 10])
        let b = arena.tensor([7], zeroingOn: .serial)
        #expect(b.array.allSatisfy { $0 == 0 })
        #expect(a.storage !== b.storage || a.offset + 112 <= b.offset, "tensors from one step must not overlap")
        let capacity = arena.capacity
        arena.reset()
        for _ in 0..<3 {
            _ = arena.tensor([10, 10])
            _ = arena.tensor([7])
            arena.reset()
        }
        #expect(arena.capacity == capacity, "a warm arena allocates nothing new")
        #expect(arena.inUse == 0)
    }

    /// Larger tensors stack in one reserved range: a request bigger than the one released at its
    /// place goes right above the stack instead of into a new chunk, and the arena holds only the
    /// stack's high-water mark. In exact-size chunks the same sequence holds more.
    @Test(arguments: [true, false])
    func reservedStackHoldsOnlyItsHighWaterMark(reserving: Bool) {
        let arena = TensorArena(minimumChunkFloats: 64, reserving: reserving)  // ≥ 16 floats: the large stack
        let first = arena.tensor([100])                       // 112 floats once rounded to 16
        let mark = arena.mark()
        _ = arena.tensor([50])                                // 64
        let survivor = arena.tensor([30])                     // 32
        let moved = arena.release(to: mark, keeping: survivor)
        let big = arena.tensor([200])                         // 208
        if reserving {
            #expect(moved.storage === first.storage && moved.offset == 112)
            #expect(big.storage === first.storage && big.offset == 112 + 32, "stacked right above the survivor")
            #expect(arena.capacity == 112 + 32 + 208)
        } else {
            #expect(arena.capacity > 112 + 32 + 208, "exact-size chunks skipped for the larger request")
        }
        arena.reset()
        #expect(arena.tensor([100]).offset == first.offset, "a reset rewinds to the start")
    }

    @Test func keyedGeneratorsAreIndependentOfVisitingOrder() {
        var first = SplitMix64(keys: 7, 1, 42, 0)
        var again = SplitMix64(keys: 7, 1, 42, 0)
        var other = SplitMix64(keys: 7, 1, 42, 1)
        let a = (0..<4).map { _ in first.next() }
        #expect(a == (0..<4).map { _ in again.next() })
        #expect(a != (0..<4).map { _ in other.next() })
        var normal = SplitMix64(seed: 3)
        let samples = (0..<20_000).map { _ in Double(normal.normal()) }
        let mean = samples.reduce(0, +) / Double(samples.count)
        let variance = samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(samples.count)
        #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
    }

    @Test func computePoolCoversEveryIndexOnce() {
        let counts = Tensor(zeros: [1000])
        ComputePool(threads: 2).forEachRange(1000) { range in
            for i in range { counts.pointer[i] += 1 }
        }
        #expect(counts.array.allSatisfy { $0 == 1 })
    }

    @Test func releaseKeepsOnlyTheSurvivorMovedDownToTheMark() {
        let arena = TensorArena(minimumChunkFloats: 1024)
        let below = arena.tensor([4])
        below.fill(7)
        let mark = arena.mark()
        _ = arena.tensor([100])
        let survivor = arena.tensor([3, 2])
        for i in 0..<6 { survivor.pointer[i] = Float(i) }
        let moved = arena.release(to: mark, keeping: survivor)
        #expect(moved.shape == [3, 2] && moved.array == [0, 1, 2, 3, 4, 5])
        #expect(below.array == [7, 7, 7, 7], "memory below the mark is untouched")
        let next = arena.tensor([1])
        #expect(next.offset == moved.offset + 16, "the released scratch is reused")
    }

    /// A large survivor moved on two threads: far from the mark (no overlap, the parallel copy),
    /// overlapping by more than a round (copied in rounds of the distance, 60,000 and 99,984
    /// floats, the last round short) and just above it (overlapping, the serial memmove); all
    /// arrive whole.
    @Test(arguments: [300_000, 60_000, 99_984, 5_000])
    func releaseMovesALargeSurvivorOnThePoolsThreads(scratchFloats: Int) {
        let arena = TensorArena(minimumChunkFloats: 1024)
        let mark = arena.mark()
        _ = arena.tensor([scratchFloats])
        let survivor = arena.tensor([200_000])
        for i in 0..<survivor.count { survivor.pointer[i] = Float(i % 9973) }
        let moved = arena.release(to: mark, keeping: survivor, pool: ComputePool(threads: 2))
        #expect(moved.offset < survivor.offset)
        #expect((0..<moved.count).allSatisfy { moved.pointer[$0] == Float($0 % 9973) })
    }
}
