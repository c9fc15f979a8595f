import Testing
@testable @_spi(Bench) import KaleidoCheckpoint

/// The save path's own byte planes (C, AVX2 where the CPU has it) and frame codings.
@Suite struct ShardCodecTests {
    /// Counts around the vector loop's 32 words, so both it and the scalar tail are checked,
    /// against the reference `ByteShuffle`, into a plane stride larger than the count (a
    /// chunk's last piece).
    @Test(arguments: [1, 31, 32, 33, 64, 95, 1000])
    func planesMatchTheReferenceShuffleAndInvert(count: Int) {
        var words = weightLikeFloats(count: count)
        words[0] = -.infinity
        let reference = words.withUnsafeBytes { ByteShuffle.shuffle($0, elementWidth: 4) }
        let stride = count + 5
        var planes = [UInt8](repeating: 0xAB, count: 4 * stride)
        words.withUnsafeBufferPointer { source in
            planes.withUnsafeMutableBufferPointer { ShardCodec.shuffle(source.baseAddress!, count: count, into: $0.baseAddress!, planeStride: stride) }
        }
        for plane in 0..<4 {
            #expect(Array(planes[(plane * stride)..<(plane * stride + count)]) == Array(reference[(plane * count)..<((plane + 1) * count)]),
                    "plane \(plane) of \(count) words")
            #expect(planes[(plane * stride + count)..<((plane + 1) * stride)].allSatisfy { $0 == 0xAB }, "plane \(plane) wrote past its words")
        }
        var back = [Float](repeating: 0, count: count)
        planes.withUnsafeBufferPointer { source in
            back.withUnsafeMutableBufferPointer { ShardCodec.unshuffle(source.baseAddress!, planeStride: stride, count: count, into: $0.baseAddress!) }
        }
        #expect(back.map(\.bitPattern) == words.map(\.bitPattern))
    }

    /// Level 1 codes the exponent plane as Huffman literals and stores the mantissa planes; the
    /// frames are standard zstd and round-trip. Weights of one scale leave the sign/exponent
    /// byte about 3 bits of entropy, so the shard must come out well under its raw size.
    @Test func levelOneShrinksWeightsAndRestoresEveryBit() throws {
        var data = weightLikeFloats(count: 300_000)
        var zeros = [Float](repeating: 0, count: 50_000)   // zero-filled state (a fresh moment) stays small
        let codec = ShardCodec(level: 1, byteShuffle: true, chunkBytes: 1 << 18, threads: 2)
        #expect(codec.frameCodings == [.stored, .entropyOnly])
        var stream = ShardSegments()
        data.withUnsafeMutableBufferPointer { stream.append("w", $0.baseAddress!, count: $0.count) }
        zeros.withUnsafeMutableBufferPointer { stream.append("z", $0.baseAddress!, count: $0.count) }
        let encoded = try codec.encode(stream, what: "test")
        let raw = 4 * (data.count + zeros.count)
        #expect(Double(raw) / Double(encoded.bytes) > 1.2, "ratio \(Double(raw) / Double(encoded.bytes))")

        let file = encoded.frames.flatMap { Array(UnsafeRawBufferPointer($0)) }
        var restoredData = [Float](repeating: 1, count: data.count), restoredZeros = [Float](repeating: 1, count: zeros.count)
        var target = ShardSegments()
        restoredData.withUnsafeMutableBufferPointer { target.append("w", $0.baseAddress!, count: $0.count) }
        restoredZeros.withUnsafeMutableBufferPointer { target.append("z", $0.baseAddress!, count: $0.count) }
        try file.withUnsafeBytes { try codec.decode($0, into: target, path: "test") }
        #expect(restoredData.map(\.bitPattern) == data.map(\.bitPattern))
        #expect(restoredZeros.allSatisfy { $0.bitPattern == 0 })
    }

    @Test func higherLevelsKeepZstdsOwnSearch() {
        #expect(ShardCodec(level: 3, byteShuffle: true, chunkBytes: 1 << 20, threads: 1).frameCodings == [.stored, .level(3)])
        #expect(ShardCodec(level: 1, byteShuffle: false, chunkBytes: 1 << 20, threads: 1).frameCodings == [.level(1)])
    }
}
