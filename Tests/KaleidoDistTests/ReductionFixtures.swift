/// Data and reference arithmetic shared by the in-process communicator and reducer tests.
enum ReductionFixtures {
    /// Values whose sums round differently in different orders: magnitudes spread over 2⁻¹²…2¹²,
    /// so a test comparing bits notices a change of summation order.
    static func gradients(count: Int, seed: UInt64) -> [Float] {
        var generator = SplitMix64(state: seed)
        return (0..<count).map { _ in
            Float.random(in: -1...1, using: &generator) * Float(sign: .plus, exponent: Int.random(in: -12...12, using: &generator),
                                                                 significand: 1)
        }
    }

    /// g₀ + g₁ + … + g_{W−1} element by element, left to right: the order the deterministic sum promises.
    static func rankOrderSum(_ copies: [[Float]]) -> [Float] {
        var sum = copies[0]
        for copy in copies.dropFirst() {
            for i in sum.indices { sum[i] = sum[i] + copy[i] }
        }
        return sum
    }

    /// nil when `values` equals `expected` bit for bit; otherwise how they differ, short enough
    /// to read in a test failure.
    static func difference(_ values: [Float], from expected: [Float]) -> String? {
        guard values.count == expected.count else { return "\(values.count) values, expected \(expected.count)" }
        let differing = values.indices.filter { values[$0].bitPattern != expected[$0].bitPattern }
        guard let first = differing.first else { return nil }
        return "\(differing.count) of \(values.count) differ; first at \(first): \(values[first]), expected \(expected[first])"
    }
}

/// A seeded generator, so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
