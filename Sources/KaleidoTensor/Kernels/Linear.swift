/// Fully connected layer over the last dimension.
///
/// out = inp · Wᵀ + b
/// inp is (M, IC), weight is (OC, IC) as in PyTorch, bias is (OC) or nil, out is (M, OC);
/// M is the product of every leading dimension (N, or N·H·W for channels-last activations).
public enum Linear {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        rows: Int, inChannels: Int, outChannels: Int, pool: ComputePool
    ) {
        if BLAS.prefersPackedProduct(m: rows, n: outChannels, k: inChannels, accumulate: false) {
            // Wᵀ packed, the bias added in registers: out is written once.
            BLAS.packedProduct(m: rows, n: outChannels, k: inChannels, a: input, lda: inChannels, b: weight, bRow: 1,
                               bColumn: inChannels, bias: bias, c: output, ldc: outChannels, accumulate: false, pool: pool)
            return
        }
        forwardThroughOpenBLAS(output: output, input: input, weight: weight, bias: bias, rows: rows, inChannels: inChannels,
                               outChannels: outChannels, pool: pool)
    }

    /// `forward` where `BLAS.prefersPackedProduct` says no: OpenBLAS pieces on `pool`.
    public static func forwardThroughOpenBLAS(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        rows: Int, inChannels: Int, outChannels: Int, pool: ComputePool
    ) {
        // With a bias, out starts as the bias rows and the product adds onto it (beta 1): one
        // pass over out fewer than zeroing it for the product and adding the bias after.
        if let bias { Bias.broadcast(output: output, bias: bias, rows: rows, channels: outChannels, pool: pool) }
        BLAS.sgemm(transposeA: false, transposeB: true, m: rows, n: outChannels, k: inChannels,
                   a: input, lda: inChannels, b: weight, ldb: inChannels, beta: bias == nil ? 0 : 1,
                   c: output, ldc: outChannels, pool: pool)
    }

    /// dinp = dout · W through OpenBLAS pieces on `pool` (`backward`'s path where
    /// `BLAS.prefersPackedProduct` says no).
    public static func inputGradientThroughOpenBLAS(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        rows: Int, inChannels: Int, outChannels: Int, pool: ComputePool
    ) {
        BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: inChannels, k: outChannels,
                   a: dOutput, lda: outChannels, b: weight, ldb: inChannels, beta: 0, c: dInput, ldc: inChannels, pool: pool)
    }

    /// dinp  = dout · W          (M, OC)·(OC, IC), written: its buffer needs no zeroing
    /// dW   += doutᵀ · inp       (OC, M)·(M, IC)
    /// db   += Σ_rows dout
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        rows: Int, inChannels: Int, outChannels: Int, pool: ComputePool
    ) {
        if let dInput, BLAS.prefersPackedProduct(m: rows, n: inChannels, k: outChannels, accumulate: false) {
            BLAS.packedProduct(m: rows, n: inChannels, k: outChannels, a: dOutput, lda: outChannels, b: weight, bRow: inChannels,
                               bColumn: 1, bias: nil, c: dInput, ldc: inChannels, accumulate: false, pool: pool)
        } else if let dInput {
            inputGradientThroughOpenBLAS(dInput: dInput, dOutput: dOutput, weight: weight, rows: rows, inChannels: inChannels,
                                         outChannels: outChannels, pool: pool)
        }
        if let dWeight {
            BLAS.accumulateOuterProducts(m: outChannels, n: inChannels, k: rows, a: dOutput, lda: outChannels,
                                         b: input, ldb: inChannels, c: dWeight, ldc: inChannels, pool: pool)
        }
        if let dBias {
            Bias.backward(dBias: dBias, dOutput: dOutput, rows: rows, channels: outChannels, pool: pool)
        }
    }
}

/// Per-channel bias over the last dimension: out[m, c] += b[c]. out is (M, C), bias is (C).
public enum Bias {
    public static func forward(output: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                               rows: Int, channels: Int, pool: ComputePool) {
        pool.forEachRange(rows, minimumPerThread: max(1, 16384 / max(1, channels))) { range in
            for m in range {
                let row = output + m * channels
                for c in 0..<channels { row[c] += bias[c] }
            }
        }
    }

    /// out[m, c] = b[c]: the starting value of a product that then accumulates onto it.
    public static func broadcast(output: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                                 rows: Int, channels: Int, pool: ComputePool) {
        pool.forEachRange(rows, minimumPerThread: max(1, 16384 / max(1, channels))) { range in
            for m in range { (output + m * channels).update(from: bias, count: channels) }
        }
    }

    /// db[c] += Σ_m dout[m, c]. Summed serially over rows so the result does not depend on the
    /// thread count (a deterministic reduction is what makes runs reproducible).
    public static func backward(dBias: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                rows: Int, channels: Int, pool: ComputePool) {
        pool.forEachRange(channels, minimumPerThread: 64) { range in
            for m in 0..<rows {
                let row = dOutput + m * channels
                for c in range { dBias[c] += row[c] }
            }
        }
    }
}
