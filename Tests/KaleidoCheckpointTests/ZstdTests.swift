import Testing
@testable import KaleidoCheckpoint

/// Weights-like data: floats of one scale, as a layer's weights (their sign/exponent bytes compress).
func weightLikeFloats(count: Int) -> [Float] {
    var state: UInt64 = 0x9E3779B97F4A7C15
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        let u = Float(state >> 40) / Float(1 << 24)
        return (u - 0.5) * 0.04
    }
}

@Suite struct ZstdTests {

    @Test func roundTripRestoresEveryByte() throws {
        let data = weightLikeFloats(count: 10_000)
        let compressed = try data.withUnsafeBytes { try Zstd.compress($0, level: 3) }
        let restored = try compressed.withUnsafeBytes { try Zstd.decompress($0, expectedSize: data.count * 4) }
        #expect(restored == data.withUnsafeBytes { Array($0) })
    }

    @Test func truncatedFrameIsAnErrorNamingTheShard() throws {
        let data = weightLikeFloats(count: 1000)
        let compressed = try data.withUnsafeBytes { try Zstd.compress($0, level: 1) }
        let truncated = Array(compressed.prefix(compressed.count / 2))
        #expect {
            _ = try truncated.withUnsafeBytes { try Zstd.decompress($0, expectedSize: 4000, what: "shard-00001.zst") }
        } throws: { error in
            "\(error)".hasPrefix("shard-00001.zst:")
        }
    }

    @Test func wrongExpectedSizeIsAnError() throws {
        let compressed = try [UInt8](repeating: 7, count: 100).withUnsafeBytes { try Zstd.compress($0, level: 1) }
        #expect(throws: ZstdError.self) {
            _ = try compressed.withUnsafeBytes { try Zstd.decompress($0, expectedSize: 99) }
        }
    }

    @Test func shuffleIsInvertibleIncludingATail() {
        let bytes = (0..<1027).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let shuffled = bytes.withUnsafeBytes { ByteShuffle.shuffle($0, elementWidth: 4) }
        #expect(shuffled != bytes)
        let back = shuffled.withUnsafeBytes { ByteShuffle.unshuffle($0, elementWidth: 4) }
        #expect(back == bytes)
    }

    @Test func shuffleImprovesCompressionOfFloatWeights() throws {
        let data = weightLikeFloats(count: 100_000)
        let plain = try data.withUnsafeBytes { try Zstd.compress($0, level: 1) }
        let shuffled = data.withUnsafeBytes { ByteShuffle.shuffle($0, elementWidth: 4) }
        let packed = try shuffled.withUnsafeBytes { try Zstd.compress($0, level: 1) }
        #expect(packed.count < plain.count)
    }
}
