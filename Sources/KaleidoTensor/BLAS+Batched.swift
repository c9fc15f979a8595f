import CBLAS

extension BLAS {
    /// y = alpha · op(A) · x + beta · y, single precision, row-major; A is (m, n) as stored.
    @inlinable
    public static func sgemv(
        transposeA: Bool, m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
        beta: Float = 0, y: UnsafeMutablePointer<Float>
    ) {
        cblas_sgemv(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, blasint(m), blasint(n),
                    alpha, a, blasint(lda), x, 1, beta, y, 1)
    }

    /// `batch` independent products C[i] = alpha · op(A[i]) · op(B[i]) + beta · C[i], where the
    /// i-th matrices start `strideA`, `strideB`, `strideC` floats after the previous ones.
    /// For products too small for OpenBLAS to parallelise inside one call: the batch is split
    /// over `pool` instead, and each thread's call runs single-threaded in OpenBLAS. (Window
    /// attention's products are smaller still and use `kaleido_small_gemm`, which has no call
    /// overhead or packing.)
    public static func sgemmStridedBatched(
        transposeA: Bool, transposeB: Bool,
        m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, strideA: Int,
        b: UnsafePointer<Float>, ldb: Int, strideB: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int,
        batch: Int, pool: ComputePool
    ) {
        pool.forEachRange(batch) { range in
            for i in range {
                sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                      a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb,
                      beta: beta, c: c + i * strideC, ldc: ldc)
            }
        }
    }
}
