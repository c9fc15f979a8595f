import CCheckpoint
import CZstd
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

    /// The hand-written frame of stored planes is a standard zstd frame: raw blocks cut at
    /// 128 KiB (below, at and above one block), a block of one repeated byte as a 1-byte RLE block,
    /// the content size declared, and zstd's own decoder gives every byte back.
    @Test(arguments: [0, 1, 2, 131_071, 131_072, 131_073, 3 * 131_072 + 7])
    func storedFramesAreStandardZstd(count: Int) {
        var bytes = (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        let hasRun = count > 2 * 131_072
        if hasRun { for i in 131_072..<(2 * 131_072) { bytes[i] = 7 } }
        let bound = kaleido_zstd_stored_frame_bound(count)
        var frame = [UInt8](repeating: 0, count: bound)
        let size = bytes.withUnsafeBufferPointer { source in
            frame.withUnsafeMutableBufferPointer { kaleido_zstd_stored_frame(source.baseAddress, count, $0.baseAddress, bound) }
        }
        let blocks = max(1, (count + 131_071) / 131_072)
        // magic, header byte, 4-byte content size; a header per block; the RLE block keeps one byte
        #expect(size == 9 + 3 * blocks + count - (hasRun ? 131_071 : 0))
        #expect(ZSTD_getFrameContentSize(frame, size) == UInt64(count))
        var back = [UInt8](repeating: 0xEE, count: count + 1)
        let produced = ZSTD_decompress(&back, count, frame, size)
        #expect(ZSTD_isError(produced) == 0 && produced == count, "\(String(cString: ZSTD_getErrorName(produced)))")
        #expect(Array(back[..<count]) == bytes)
        #expect(back[count] == 0xEE, "decoded past the content size")

        let short = bytes.withUnsafeBufferPointer { source in
            frame.withUnsafeMutableBufferPointer { kaleido_zstd_stored_frame(source.baseAddress, count, $0.baseAddress, bound - 1) }
        }
        #expect(short == 0, "a frame written into too little room")
    }

    /// The staging copy's non-temporal stores start only at an aligned destination: heads and
    /// tails of every length around the 32-byte line and the 128-byte loop are copied exactly,
    /// and nothing around the destination is touched.
    @Test(arguments: [(0, 65_536), (1, 65_537), (31, 100_003), (32, 70_000 + 127), (5, 1_000)])
    func streamingCopyCopiesExactly(offset: Int, bytes: Int) {
        let source = (0..<(bytes + 3)).map { UInt8(truncatingIfNeeded: $0 &* 40_503 &+ 11) }
        var destination = [UInt8](repeating: 0xCD, count: bytes + offset + 64)
        source.withUnsafeBufferPointer { from in
            destination.withUnsafeMutableBufferPointer { kaleido_copy_streaming($0.baseAddress! + offset, from.baseAddress! + 3, bytes) }
        }
        #expect(Array(destination[offset..<(offset + bytes)]) == Array(source[3...]))
        #expect(destination[..<offset].allSatisfy { $0 == 0xCD } && destination[(offset + bytes)...].allSatisfy { $0 == 0xCD })
    }

    @Test func higherLevelsKeepZstdsOwnSearch() {
        #expect(ShardCodec(level: 3, byteShuffle: true, chunkBytes: 1 << 20, threads: 1).frameCodings == [.stored, .level(3)])
        #expect(ShardCodec(level: 1, byteShuffle: false, chunkBytes: 1 << 20, threads: 1).frameCodings == [.level(1)])
    }
}
