import CKernels

extension BLAS {
    /// The widest tiles `packedProduct` runs here (`kaleido_packed_gemm_isa`): 2 AVX-512, 1 AVX2
    /// and FMA, 0 neither.
    public static let packedProductLevel = kaleido_packed_gemm_isa()

    /// Whether this CPU runs `packedProduct`'s vector tiles (AVX2 and FMA, or AVX-512).
    public static let packedProductAvailable = packedProductLevel > 0

    /// Whether `packedProduct` is the faster way to C (m×n) = A (m×k) · B (k×n) (+ C when
    /// `accumulate`) here: a long A against a small B (linear layers over tokens or pixels).
    /// `kaleido bench kernels --only linear` compares the two; BENCHMARKS.md has the tables.
    /// - AVX2 tiles, on one core of the AVX2 EPYC against OpenBLAS with the bias rows copied
    ///   first: 1.09–1.35× faster for k ≤ 384 and n ≤ 384 (n ≤ 192 when accumulating); beyond,
    ///   OpenBLAS was as fast or faster (0.91–1.05×: n = 576 or 768, k = 768, and n = 384
    ///   accumulating).
    /// - AVX-512 tiles, 2 threads on the Emerald Rapids Xeon against OpenBLAS's SkylakeX kernels:
    ///   1.24–1.52× for k = 48 (48→144, 48→192), a wash for k ≥ 96 (0.87–1.18× between runs)
    ///   and for an accumulating product (0.86–1.02×). The input gradient of 192→48 (k = 48),
    ///   written rather than accumulated: 1.28–1.69× (2026-12-06, BENCHMARKS.md).
    ///   On the Zen 4 EPYC (2026-12-07), on ResNet-50's 1×1 convolutions at batch 16, 2 threads:
    ///   1.01–2.4× forward and input gradient for k, n ≤ 1024 and m ≥ 3136 (OpenBLAS's copy of A
    ///   costs most at k = 64), 0.7× at k or n = 2048; so written products go up to 1024.
    public static func prefersPackedProduct(m: Int, n: Int, k: Int, accumulate: Bool) -> Bool {
        guard m >= 1024 else { return false }
        switch packedProductLevel {
        case 1: return k <= 384 && n <= (accumulate ? 192 : 384)
        case 2: return !accumulate && k <= 1024 && n <= 1024
        default: return false
        }
    }

    /// C (m×n) = A (m×k) · B (k×n), plus `bias` on every row when given, plus C's old value when
    /// `accumulate`. A(r, i) = a[r·lda + i]; B(i, j) = b[i·bRow + j·bColumn], so a linear layer's
    /// weight W (n×k) serves as Wᵀ with bRow 1, bColumn k, and as itself with bRow n, bColumn 1.
    ///
    /// B is copied once into 16-column panels; the rows of C are cut into pieces that `pool`'s
    /// threads take in turn, each piece register tiles of 6 rows × 16 columns (8 × 32 with
    /// AVX-512) over the whole k (see packed_gemm.h). Every element is one sum over k in order,
    /// so the result does not depend on the thread count. Needs `packedProductAvailable`.
    public static func packedProduct(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                                     b: UnsafePointer<Float>, bRow: Int, bColumn: Int, bias: UnsafePointer<Float>?,
                                     c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, pool: ComputePool) {
        precondition(packedProductAvailable, "packedProduct runs only where packedProductAvailable (AVX2 + FMA or AVX-512)")
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
            kaleido_packed_gemm(packedProductLevel, Int32(start), Int32(end), Int32(n), Int32(k), a, lda, packed, bias, c, ldc, accumulate ? 1 : 0)
        }
    }

    /// Whether `outerProductTiles` is the faster way to C (m×n) += Aᵀ · B over k rows here: with
    /// AVX-512, for k ≥ 1024 rows and both sides of C ≥ 16. On the Zen 4 EPYC, 2 threads, against
    /// the path `accumulateOuterProducts` took before (OpenBLAS on chunks of k or pieces of C):
    /// 0.99× (25,088 rows, 384 → 96) to 1.37× on Swin's linear layers and ResNet-50's 1×1
    /// convolutions up to k = 25,088 rows, 0.87–1.41× from run to run at k = 50,176; the steps of
    /// swin-tiny-32 and ResNet-50 +5 % and +2 % (BENCHMARKS.md, 2026-12-07).
    /// There are no AVX2 tiles (see outer_products.c).
    public static func prefersOuterProductTiles(m: Int, n: Int, k: Int) -> Bool {
        guard k >= 1024 else { return false }
        switch packedProductLevel {
        case 2: return m >= 16 && n >= 16
        default: return false
        }
    }

    /// C (m×n) += Aᵀ · B = Σ_i A(i, :)ᵀ B(i, :) over the k rows of A (k×m) and B (k×n), both
    /// read in place (see outer_products.h): a weight gradient dW += doutᵀ · inp. C is cut into
    /// register tiles and `pool`'s threads take a range of them each; every element is
    /// one chain of multiply-adds over k in order, so the result does not depend on the thread
    /// count. Below AVX-512 the same sums run as plain loops on one thread (slow: nothing sends
    /// them there but tests).
    public static func outerProductTiles(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                                         b: UnsafePointer<Float>, ldb: Int,
                                         c: UnsafeMutablePointer<Float>, ldc: Int, pool: ComputePool) {
        let tiles = Int(kaleido_outer_products_tiles(packedProductLevel, Int32(m), Int32(n)))
        pool.forEachRange(tiles) { range in
            kaleido_accumulate_outer_products(packedProductLevel, Int32(range.lowerBound), Int32(range.upperBound),
                                              Int32(m), Int32(n), Int32(k), a, lda, b, ldb, c, ldc)
        }
    }
}
