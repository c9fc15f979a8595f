import Foundation
import Testing
@testable import KaleidoTensor

@Suite struct VectorMathTests {
    /// Float64 libm as the reference, on a dense sweep of `points` inputs.
    func sweep(from low: Double, to high: Double, points: Int, _ check: (Float) -> Void) {
        for i in 0..<points { check(Float(low + (high - low) * Double(i) / Double(points - 1))) }
    }

    @Test func expIsWithinTwoTenMillionthsRelative() {
        var worst = 0.0
        sweep(from: -87, to: 88, points: 400_000) { x in
            let reference = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(VectorMath.exp(x)) - reference) / reference)
        }
        #expect(worst < 2e-7)
    }

    @Test func expUnderflowsToZeroAndHandlesMinusInfinity() {
        #expect(VectorMath.exp(-.infinity) == 0 && VectorMath.exp(-1000) == 0 && VectorMath.exp(-88) == 0)
        #expect(VectorMath.exp(-87.3) > 0 && VectorMath.exp(0) == 1)
        #expect(abs(VectorMath.exp(1) - Float(M_E)) < 1e-6)
    }

    @Test func erfIsWithinOneMillionthRelative() {
        var worst = 0.0, worstAbsolute = 0.0
        sweep(from: -8, to: 8, points: 400_001) { x in
            guard x != 0 else { return }
            let reference = Foundation.erf(Double(x)), error = abs(Double(VectorMath.erf(x)) - reference)
            worst = max(worst, error / abs(reference))
            worstAbsolute = max(worstAbsolute, error)
        }
        #expect(worst < 1e-6)
        #expect(worstAbsolute < 5e-7)
        // Near 0, erf(x) ≈ 2x/√π: relative accuracy holds for tiny inputs too.
        #expect(abs(Double(VectorMath.erf(1e-20)) / (1e-20 * 2 / Double.pi.squareRoot()) - 1) < 1e-6)
    }
}
