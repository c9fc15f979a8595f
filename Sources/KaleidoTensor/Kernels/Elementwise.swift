/// Elementwise kernels, and the three ways the kernels outside BLAS split their loops over a
/// `ComputePool`.

// MARK: - Work splitting

extension ComputePool {
    /// Below about this many floats per thread, waking a thread costs more than the loop.
    static let floatsPerThread = 16384

    /// Splits `0..<count` for loops whose elements are independent.
    func forEachElementRange(_ count: Int, _ body: (Range<Int>) -> Void) {
        forEachRange(count, minimumPerThread: Self.floatsPerThread, body)
    }

    /// Splits the rows of a (rows, columns) matrix for loops whose rows are independent.
    func forEachRowRange(_ rows: Int, columns: Int, _ body: (Range<Int>) -> Void) {
        forEachRange(rows, minimumPerThread: max(1, Self.floatsPerThread / max(1, columns)), body)
    }

    /// Splits the channels of a reduction over rows. Each thread owns whole channels and sums
    /// their rows serially in a fixed order, so the result does not depend on the thread count.
    func forEachChannelRange(_ channels: Int, _ body: (Range<Int>) -> Void) {
        forEachRange(channels, minimumPerThread: 64, body)
    }
}

// MARK: - Kernels

/// Sum of two tensors of the same shape: out = a + b. a, b and out hold `count` floats.
public enum Add {
    public static func forward(
        output: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            for i in range { output[i] = a[i] + b[i] }
        }
    }

    /// da += dout, db += dout.
    public static func backward(
        dA: UnsafeMutablePointer<Float>?, dB: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            for gradient in [dA, dB] {
                guard let gradient else { continue }
                for i in range { gradient[i] += dOutput[i] }
            }
        }
    }
}

/// Per-channel scale over the last dimension (layer scale): out[m, c] = inp[m, c] · γ[c].
/// inp and out are (M, C), scale γ is (C).
public enum Scale {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, scale: UnsafePointer<Float>,
        rows: Int, channels: Int, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: channels) { range in
            for m in range {
                let offset = m * channels
                for c in 0..<channels { output[offset + c] = input[offset + c] * scale[c] }
            }
        }
    }

    /// dinp[m, c] += dout[m, c] · γ[c]
    /// dγ[c]      += Σ_m dout[m, c] · inp[m, c]
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dScale: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, scale: UnsafePointer<Float>,
        rows: Int, channels: Int, pool: ComputePool
    ) {
        if let dInput {
            pool.forEachRowRange(rows, columns: channels) { range in
                for m in range {
                    let offset = m * channels
                    for c in 0..<channels { dInput[offset + c] += dOutput[offset + c] * scale[c] }
                }
            }
        }
        if let dScale {
            pool.forEachChannelRange(channels) { range in
                for m in 0..<rows {
                    let offset = m * channels
                    for c in range { dScale[c] += dOutput[offset + c] * input[offset + c] }
                }
            }
        }
    }
}
