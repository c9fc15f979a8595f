import Foundation

/// Gaussian error linear unit, exact (erf) form as PyTorch's default `nn.GELU()`:
///
/// out = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))
/// inp and out hold `count` floats, any shape. erf and exp are `VectorMath`'s branch-free
/// polynomials (erf within 1e-6 relative, 5e-7 absolute of libm), so the loops vectorise.
public enum GELU {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            for i in range {
                let x = input[i]
                output[i] = 0.5 * x * (1 + VectorMath.erf(x * inverseSquareRootTwo))
            }
        }
    }

    /// dinp += dout · (Φ(x) + x · φ(x)), where φ(x) = exp(−x²/2) / √(2π) is the normal density.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>,
        count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            for i in range {
                let x = input[i]
                let cdf = 0.5 * (1 + VectorMath.erf(x * inverseSquareRootTwo))
                let density = VectorMath.exp(-0.5 * x * x) * inverseSquareRootTwoPi
                dInput[i] += dOutput[i] * (cdf + x * density)
            }
        }
    }

    private static let inverseSquareRootTwo: Float = 0.70710678118654752
    private static let inverseSquareRootTwoPi: Float = 0.39894228040143268
}

/// Rectified linear unit: out = max(x, 0). inp and out hold `count` floats, any shape.
public enum ReLU {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            for i in range { output[i] = max(input[i], 0) }
        }
    }

    /// dinp += dout where x > 0 (the derivative at 0 is taken as 0, as in PyTorch).
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>,
        count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            // A select rather than a branch, so the loop vectorises.
            for i in range { dInput[i] += input[i] > 0 ? dOutput[i] : 0 }
        }
    }
}
