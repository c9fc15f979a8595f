import CKernels
import Foundation

/// Gaussian error linear unit, exact (erf) form as PyTorch's default `nn.GELU()`:
///
/// out = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))
/// inp and out hold `count` floats, any shape. The loops are CKernels' `kaleido_gelu_*`: the
/// `VectorMath` polynomials (erf within 1e-6 relative, 5e-7 absolute of libm) in C, compiled
/// for AVX-512 too and picked at load time, with the same bits on every instruction set.
public enum GELU {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            kaleido_gelu_forward(output + range.lowerBound, input + range.lowerBound, range.count)
        }
    }

    /// dinp = dout · (Φ(x) + x · φ(x)), where φ(x) = exp(−x²/2) / √(2π) is the normal density.
    /// Written, not added: the layer's gradient buffer needs no zeroing.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>,
        count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            kaleido_gelu_backward(dInput + range.lowerBound, dOutput + range.lowerBound, input + range.lowerBound, range.count)
        }
    }
}

/// Rectified linear unit: out = max(x, 0). inp and out hold `count` floats, any shape.
public enum ReLU {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, count: Int, pool: ComputePool
    ) {
        // In C, like the backward: in place (output = input) it stays vectorised.
        pool.forEachElementRange(count) { range in
            kaleido_relu(output + range.lowerBound, input + range.lowerBound, range.count)
        }
    }

    /// dinp = dout where x > 0, else 0 (the derivative at 0 is taken as 0, as in PyTorch).
    /// Written, not added: the layer's gradient buffer needs no zeroing.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>,
        count: Int, pool: ComputePool
    ) {
        // In C: dinp may be dout itself, where a loop LLVM vectorises checks for overlap and
        // runs its scalar version.
        pool.forEachElementRange(count) { range in
            let i = range.lowerBound
            kaleido_relu_backward(dInput + i, dOutput + i, input + i, range.count)
        }
    }
}
