import CKernels

extension BLAS {
    /// Whether this CPU runs `packedProduct`'s vector tiles (AVX2 and FMA) and has no AVX-512,
    /// where OpenBLAS's own kernels were the ones measured fast.
    public static let packedProductAvailable = kaleido_small_gemm_vectorized() == 1 && kaleido_cpu_has_avx512f() == 0

    /// Whether `packedProduct` is the faster way to C (m×n) = A (m×k) · B (k×n) (+ C when
    /// `accumulate`) here: a long A against a small B (linear layers over tokens or pixels).
    /// Measured on one core of the AVX2 EPYC of BENCHMARKS.md against OpenBLAS with the bias
    /// rows copied first: 1.09–1.35× faster for k ≤ 384 and n ≤ 384 (n ≤ 192 when accumulating);
    /// beyond, OpenBLAS was as fast or faster (0.91–1.05×: n = 576 or 768, k = 768, and
    /// n = 384 accumulating). `kaleido bench kernels --only linear` compares the two.
    public static func prefersPackedProduct(m: Int, n: Int, k: Int, accumulate: Bool) -> Bool {
        packedProductAvailable && m >= 1024 && k <= 384 && n <= (accumulate ? 192 : 384)
    }

    /// C (m×n) = A (m×k) · B (k×n), plus `bias` on every row when given, plus C's old value when
    /// `accumulate`. A(r, i) = a[r·lda + i]; B(i, j) = b[i·bRow + j·bColumn], so a linear layer's
    /// weight W (n×k) serves as Wᵀ with bRow 1, bColumn k, and as itself with bRow n, bColumn 1.
    ///
    /// B is copied once into 16-column panels; the rows of C are cut into pieces that `pool`'s
    /// threads take in turn, each piece register tiles of 6 rows × 16 columns over the whole k
    /// (see packed_gemm.h). Every element is one sum over k in order, so the result does not
    /// depend on the thread count. Needs `packedProductAvailable`.
    public static func packedProduct(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                                     b: UnsafePointer<Float>, bRow: Int, bColumn: Int, bias: UnsafePointer<Float>?,
                                     c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, pool: ComputePool) {
        precondition(packedProductAvailable, "packedProduct runs only where packedProductAvailable (AVX2 + FMA, no AVX-512)")
        guard m > 0, n > 0 else { return }
        let packed = UnsafeMutablePointer<Float>.allocate(capacity: kaleido_packed_b_floats(Int32(k), Int32(n)))
        defer { packed.deallocate() }
        kaleido_pack_b(Int32(k), Int32(n), b, bRow, bColumn, packed)
        // 192-row pieces (four of the kernel's 48-row blocks): enough pieces for two threads to
        // even out, few enough that each amortises its start.
        let pieceRows = 192
        let pieces = (m + pieceRows - 1) / pieceRows
        pool.forEachPiece(pieces) { piece in
            let start = piece * pieceRows, end = min(m, start + pieceRows)
            kaleido_packed_gemm(1, Int32(start), Int32(end), Int32(n), Int32(k), a, lda, packed, bias, c, ldc, accumulate ? 1 : 0)
        }
    }
}
