import Testing
@testable import KaleidoDist

/// How `GradientReducer` cuts the arena into buckets and counts overlap; one process suffices.
@Suite struct GradientReducerBucketTests {
    /// Tensors of 3, 5, 0, 2, 7 and 1 floats, back to back (an empty one included, as parameter-free
    /// entries can be).
    static let tensors = [0..<3, 3..<8, 8..<8, 8..<10, 10..<17, 17..<18]

    static func buckets(_ tensors: [Range<Int>], cap: BucketCap) -> [Range<Int>] {
        var arena = [Float](repeating: 0, count: tensors.last?.upperBound ?? 0)
        return arena.withUnsafeMutableBufferPointer { arena in
            GradientReducer(tensors: tensors, gradients: arena.baseAddress!, cap: cap, communicator: LocalCommunicator()).buckets
        }
    }

    @Test func bucketsRunFromTheArenaEndAndNeverSplitATensor() {
        #expect(Self.buckets(Self.tensors, cap: .perTensor) == [17..<18, 10..<17, 8..<10, 3..<8, 0..<3])
        // 4 bytes hold one float: every tensor is larger than the cap and stays whole, alone.
        #expect(Self.buckets(Self.tensors, cap: .bytes(4)) == [17..<18, 10..<17, 8..<10, 3..<8, 0..<3])
        // 8 floats: 1 + 7 fit exactly; adding 2 would not; 2 + 5 fit, adding 3 would not.
        #expect(Self.buckets(Self.tensors, cap: .bytes(32)) == [10..<18, 3..<10, 0..<3])
        #expect(Self.buckets(Self.tensors, cap: .bytes(40)) == [8..<18, 0..<8])
        #expect(Self.buckets(Self.tensors, cap: .unbounded) == [0..<18])
    }

    /// The greedy rule on random layouts: buckets cover the arena from the top down, start and end
    /// on tensor boundaries, stay within the cap unless one tensor alone exceeds it, and a bucket
    /// closes only when the next tensor down would not fit.
    @Test func bucketsFollowTheCapOnRandomLayouts() {
        var generator = SplitMix64(state: 42)
        for _ in 0..<200 {
            var tensors: [Range<Int>] = [], end = 0
            for _ in 0..<Int.random(in: 1...12, using: &generator) {
                let count = Int.random(in: 0...40, using: &generator)
                tensors.append(end..<(end + count))
                end += count
            }
            let capBytes = 4 * Int.random(in: 1...60, using: &generator)
            let buckets = Self.buckets(tensors, cap: .bytes(capBytes))
            let nonEmpty = tensors.filter { !$0.isEmpty }
            let boundaries = Set(nonEmpty.flatMap { [$0.lowerBound, $0.upperBound] })

            #expect(buckets.first?.upperBound == nonEmpty.last?.upperBound)
            #expect(buckets.last?.lowerBound == nonEmpty.first?.lowerBound)
            for (higher, lower) in zip(buckets, buckets.dropFirst()) { #expect(lower.upperBound == higher.lowerBound) }
            for bucket in buckets {
                #expect(boundaries.contains(bucket.lowerBound) && boundaries.contains(bucket.upperBound))
                let inside = nonEmpty.filter { bucket.contains($0.lowerBound) }
                #expect(bucket.count * 4 <= capBytes || inside.count == 1, "\(bucket) over the cap \(capBytes) B")
            }
            for (higher, lower) in zip(buckets, buckets.dropFirst()) {
                let nextDown = nonEmpty.last { $0.upperBound == lower.upperBound }!
                #expect((higher.upperBound - nextDown.lowerBound) * 4 > capBytes, "\(higher) closed before \(nextDown) although it fit")
            }
        }
    }

    /// With one process every reduction completes when started, so what counts is how many
    /// buckets were reported final before `finish()`.
    @Test(arguments: [(from: 0, overlapped: 5), (from: 10, overlapped: 2), (from: 18, overlapped: 0)])
    func overlappedBucketsAreThoseStartedBeforeFinish(from offset: Int, overlapped: Int) throws {
        var arena = [Float](repeating: 1, count: 18)
        try arena.withUnsafeMutableBufferPointer { arena in
            let reducer = GradientReducer(tensors: Self.tensors, gradients: arena.baseAddress!, cap: .perTensor,
                                          communicator: LocalCommunicator())
            reducer.beginStep()
            for tensor in Self.tensors.reversed() where tensor.lowerBound >= offset {
                try reducer.gradientsFinal(from: tensor.lowerBound)
            }
            try reducer.finish()
            #expect(reducer.buckets.count == 5)
            #expect(reducer.overlappedBuckets == overlapped)
        }
        #expect(arena == [Float](repeating: 1, count: 18))   // a world of one: the average is the gradient
    }
}
