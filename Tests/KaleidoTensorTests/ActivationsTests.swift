import Foundation
import Testing
@testable import KaleidoTensor

@Suite struct ActivationsTests {
    enum Kind { case gelu, relu }

    func checkGradient(_ kind: Kind, input: [Float]) {
        GradientCheck().run(inputs: ["input": input], forward: { v in
            withPointers([input.map { _ in 0 }]) { p in
                switch kind {
                case .gelu: GELU.forward(output: p[0], input: v["input"]!, count: input.count, pool: .serial)
                case .relu: ReLU.forward(output: p[0], input: v["input"]!, count: input.count, pool: .serial)
                }
            }[0]
        }, backward: { v, dOut in
            let dInput = withPointers([input.map { _ in 0 }]) { p in
                switch kind {
                case .gelu: GELU.backward(dInput: p[0], dOutput: dOut, input: v["input"]!, count: input.count, pool: .serial)
                case .relu: ReLU.backward(dInput: p[0], dOutput: dOut, input: v["input"]!, count: input.count, pool: .serial)
                }
            }[0]
            return ["input": dInput]
        })
    }

    @Test(arguments: [1, 17])
    func geluBackwardMatchesFiniteDifferences(count: Int) {
        checkGradient(.gelu, input: randomValues(count, seed: 1, scale: 3))
    }

    @Test(arguments: [1, 17])
    func reluBackwardMatchesFiniteDifferences(count: Int) {
        // Kept at least 0.1 away from the kink, farther than the finite-difference step.
        let input = randomValues(count, seed: 2, scale: 2).map { $0 + ($0 < 0 ? -0.1 : 0.1) }
        checkGradient(.relu, input: input)
    }

    @Test func geluMatchesTheErfFormAtKnownPoints() {
        // x · Φ(x): Φ(1) = 0.841344746, Φ(−1) = 0.158655254, Φ(3) = 0.998650102.
        let input: [Float] = [0, 1, -1, 3]
        let output = withPointers([[0, 0, 0, 0]]) { p in GELU.forward(output: p[0], input: input, count: 4, pool: .serial) }[0]
        let expected: [Float] = [0, 0.841344746, -0.158655254, 3 * 0.998650102]
        for (value, reference) in zip(output, expected) { #expect(abs(value - reference) < 1e-6) }
    }

    /// The C loops (cloned per instruction set) must give the bits of the same formulas written
    /// with `VectorMath` in Swift, on every lane and in the unrolled loops' remainders: values
    /// over erf's whole range, its clamp at ±4, exp's underflow, signed zeros and infinities.
    @Test func geluKernelHasTheBitsOfTheVectorMathFormulas() {
        var input = randomValues(4099, seed: 3, scale: 6)
        input += [0, -0, 4, -4, 4.5, -4.5, 14, -14, 30, -30, .infinity, -.infinity, 1e-30, -1e-30]
        let dOutput = randomValues(input.count, seed: 4, scale: 1)
        let start = randomValues(input.count, seed: 5, scale: 1)
        let output = withPointers([input.map { _ in 0 }]) { p in GELU.forward(output: p[0], input: input, count: input.count, pool: .serial) }[0]
        let dInput = withPointers([start]) { p in
            GELU.backward(dInput: p[0], dOutput: dOutput, input: input, count: input.count, pool: .serial)
        }[0]
        let root: Float = 0.70710678118654752, density: Float = 0.39894228040143268
        for i in input.indices {
            let x = input[i]
            let cdf = 0.5 * (1 + VectorMath.erf(x * root))
            let expectedOutput = 0.5 * x * (1 + VectorMath.erf(x * root))
            let expectedGradient = dOutput[i] * (cdf + x * (VectorMath.exp(-0.5 * x * x) * density))
            if expectedOutput.isNaN {
                #expect(output[i].isNaN, "forward at x = \(x)")
            } else {
                #expect(output[i].bitPattern == expectedOutput.bitPattern, "forward at x = \(x): \(output[i]) against \(expectedOutput)")
            }
            if expectedGradient.isNaN {
                #expect(dInput[i].isNaN, "backward at x = \(x)")
            } else {
                #expect(dInput[i].bitPattern == expectedGradient.bitPattern, "backward at x = \(x): \(dInput[i]) against \(expectedGradient)")
            }
        }
    }

    @Test func reluZeroesNegativesAndItsGradientOverwrites() {
        let input: [Float] = [-2, 0, 3]
        let output = withPointers([[9, 9, 9]]) { p in ReLU.forward(output: p[0], input: input, count: 3, pool: .serial) }[0]
        #expect(output == [0, 0, 3])
        let dInput = withPointers([[1, 1, 1]]) { p in
            ReLU.backward(dInput: p[0], dOutput: [5, 5, 5], input: input, count: 3, pool: .serial)
        }[0]
        #expect(dInput == [0, 0, 5])
    }
}
