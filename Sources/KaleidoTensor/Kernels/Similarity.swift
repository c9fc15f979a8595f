/// L2 normalisation over the last dimension, as PyTorch's `F.normalize(x, dim=-1, eps=eps)`:
///
/// out[r, :] = x[r, :] / max(‖x[r, :]‖, eps)
/// inp and out are (R, D); the cache norms is (R) and holds ‖x[r, :]‖ before clamping.
public enum L2Normalize {
    public static func forward(
        output: UnsafeMutablePointer<Float>, norms: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        rows: Int, columns: Int, epsilon: Float = 1e-12, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: columns) { range in
            for r in range {
                let x = input + r * columns, out = output + r * columns
                var squares: Float = 0
                for j in 0..<columns { squares += x[j] * x[j] }
                let norm = squares.squareRoot()
                let denominator = max(norm, epsilon)
                for j in 0..<columns { out[j] = x[j] / denominator }
                norms[r] = norm
            }
        }
    }

    /// With y = out and n = ‖x‖:
    ///   n ≥ eps:  dinp += (dout − y · (y · dout)) / n
    ///   n < eps:  dinp += dout / eps   (the clamped denominator is a constant)
    /// `epsilon` must be the value the forward ran with.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
        output: UnsafePointer<Float>, norms: UnsafePointer<Float>,
        rows: Int, columns: Int, epsilon: Float = 1e-12, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: columns) { range in
            for r in range {
                let y = output + r * columns, dout = dOutput + r * columns, dx = dInput + r * columns
                let norm = norms[r]
                guard norm >= epsilon else {
                    for j in 0..<columns { dx[j] += dout[j] / epsilon }
                    continue
                }
                var projection: Float = 0
                for j in 0..<columns { projection += y[j] * dout[j] }
                for j in 0..<columns { dx[j] += (dout[j] - y[j] * projection) / norm }
            }
        }
    }
}

/// All pairwise cosine similarities between two sets of vectors:
///
/// S = â · b̂ᵀ,  â = L2Normalize(a), b̂ = L2Normalize(b)
/// a is (M, D), b is (N, D), S is (M, N); the caches â, b̂ are (M, D), (N, D) and their norms (M), (N).
/// For the similarities of a set with itself pass the same arrays as a and b (and, in the
/// backward, the same gradient as dA and dB: both halves accumulate into it).
public enum CosineSimilarityMatrix {
    public static func forward(
        similarity: UnsafeMutablePointer<Float>,
        normalizedA: UnsafeMutablePointer<Float>, normsA: UnsafeMutablePointer<Float>,
        normalizedB: UnsafeMutablePointer<Float>, normsB: UnsafeMutablePointer<Float>,
        a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        rowsA: Int, rowsB: Int, dimension: Int, epsilon: Float = 1e-12, pool: ComputePool
    ) {
        L2Normalize.forward(output: normalizedA, norms: normsA, input: a, rows: rowsA, columns: dimension,
                            epsilon: epsilon, pool: pool)
        L2Normalize.forward(output: normalizedB, norms: normsB, input: b, rows: rowsB, columns: dimension,
                            epsilon: epsilon, pool: pool)
        BLAS.sgemm(transposeA: false, transposeB: true, m: rowsA, n: rowsB, k: dimension,
                   a: normalizedA, lda: dimension, b: normalizedB, ldb: dimension,
                   beta: 0, c: similarity, ldc: rowsB)
    }

    /// dâ = dS · b̂   (M, N)·(N, D),   dA += L2Normalize backward of dâ
    /// db̂ = dSᵀ · â  (N, M)·(M, D),   dB += L2Normalize backward of db̂
    /// Uses a temporary of max(M, N)·D floats for dâ and db̂.
    public static func backward(
        dA: UnsafeMutablePointer<Float>?, dB: UnsafeMutablePointer<Float>?, dSimilarity: UnsafePointer<Float>,
        normalizedA: UnsafePointer<Float>, normsA: UnsafePointer<Float>,
        normalizedB: UnsafePointer<Float>, normsB: UnsafePointer<Float>,
        rowsA: Int, rowsB: Int, dimension: Int, epsilon: Float = 1e-12, pool: ComputePool
    ) {
        let dNormalized = UnsafeMutablePointer<Float>.allocate(capacity: max(rowsA, rowsB) * dimension)
        defer { dNormalized.deallocate() }
        if let dA {
            BLAS.sgemm(transposeA: false, transposeB: false, m: rowsA, n: dimension, k: rowsB,
                       a: dSimilarity, lda: rowsB, b: normalizedB, ldb: dimension,
                       beta: 0, c: dNormalized, ldc: dimension)
            L2Normalize.backward(dInput: dA, dOutput: dNormalized, output: normalizedA, norms: normsA,
                                 rows: rowsA, columns: dimension, epsilon: epsilon, pool: pool)
        }
        if let dB {
            BLAS.sgemm(transposeA: true, transposeB: false, m: rowsB, n: dimension, k: rowsA,
                       a: dSimilarity, lda: rowsB, b: normalizedA, ldb: dimension,
                       beta: 0, c: dNormalized, ldc: dimension)
            L2Normalize.backward(dInput: dB, dOutput: dNormalized, output: normalizedB, norms: normsB,
                                 rows: rowsB, columns: dimension, epsilon: epsilon, pool: pool)
        }
    }
}
