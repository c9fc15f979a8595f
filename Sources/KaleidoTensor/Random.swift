import Foundation

/// A small, fast, seedable generator (SplitMix64). Every random decision in Kaleido takes an
/// explicit generator, so a run is reproducible from its seed and resumable from a saved state.
public struct SplitMix64: RandomNumberGenerator, Sendable, Equatable, Codable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for one item of a larger computation, keyed by several counters
    /// (e.g. seed, epoch, sample, view), so the stream does not depend on visiting order.
    public init(keys: UInt64...) {
        var mixed: UInt64 = 0x243F_6A88_85A3_08D3
        for key in keys {
            var scramble = SplitMix64(seed: mixed ^ key)
            mixed = scramble.next()
        }
        state = mixed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    public mutating func uniform() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Standard normal by Box–Muller.
    public mutating func normal() -> Float {
        let u1 = max(Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0), 1e-300)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

extension SplitMix64 {
    /// Fisher–Yates from the back: element i swaps with element `next() % (i + 1)`. Not the
    /// standard library's `shuffle(using:)`, which draws differently: these orders decide which
    /// samples a run sees, so the draws must stay exactly these.
    public mutating func shuffle<Element>(_ array: inout [Element]) {
        for i in stride(from: array.count - 1, to: 0, by: -1) { array.swapAt(i, Int(next() % UInt64(i + 1))) }
    }
}
