import CBLAS
import Foundation

/// The thin layer over OpenBLAS that every matrix product in Kaleido goes through.
///
/// All matrices are row-major. `A` is (M, K) after the optional transpose, `B` is (K, N),
/// `C` is (M, N); `lda`, `ldb`, `ldc` are the row strides of the stored (untransposed) arrays.
public enum BLAS {
    /// OpenBLAS's build configuration, e.g. `OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64`.
    /// The last word before `MAX_THREADS` is the kernel OpenBLAS chose for this CPU.
    public static var configuration: String {
        guard let raw = openblas_get_config() else { return "unknown" }
        return String(cString: raw).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Threads OpenBLAS uses for one call. Several ranks on one node must divide the cores between
    /// them, or their BLAS thread pools fight for the same cores.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// C = alpha · op(A) · op(B) + beta · C, single precision, row-major.
    @inlinable
    public static func sgemm(
        transposeA: Bool, transposeB: Bool,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k),
                    alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// The same product with `pool`'s threads when the pool `splitsMatrixProducts`: C is cut
    /// into pieces of at least `minimumPieceSide` rows (or columns, whichever side of C is
    /// longer), and each piece is a single-threaded OpenBLAS call on its rows of op(A) (or
    /// columns of op(B)). Every element of C is still one dot product over the whole K in
    /// OpenBLAS's order, and the pieces depend on the shape only, so the result is the same for
    /// any thread count. Otherwise one call, threaded by OpenBLAS.
    public static func sgemm(
        transposeA: Bool, transposeB: Bool,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int,
        pool: ComputePool
    ) {
        // 128-row pieces, at most 8: ResNet-18's step ran ~8% faster than with 64 and 16
        // (`kaleido bench step`, one after the other); fewer pieces would balance worse when a
        // thread is descheduled.
        let minimumPieceSide = 128, maximumPieces = 8
        let splitRows = m >= n
        let side = splitRows ? m : n
        let pieces = min(maximumPieces, side / minimumPieceSide)
        guard pool.splitsMatrixProducts, pool.threads > 1, pieces > 1, 2.0 * Double(m) * Double(n) * Double(k) >= 4e6 else {
            sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                  a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        pool.forEachPiece(pieces) { piece in
            let start = side * piece / pieces, end = side * (piece + 1) / pieces
            if splitRows {
                // Rows [start, end) of op(A): rows of A, or columns of the stored Aᵀ.
                sgemm(transposeA: transposeA, transposeB: transposeB, m: end - start, n: n, k: k, alpha: alpha,
                      a: a + (transposeA ? start : start * lda), lda: lda, b: b, ldb: ldb,
                      beta: beta, c: c + start * ldc, ldc: ldc)
            } else {
                // Columns [start, end) of op(B): columns of B, or rows of the stored Bᵀ.
                sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: end - start, k: k, alpha: alpha,
                      a: a, lda: lda, b: b + (transposeB ? start * ldb : start), ldb: ldb,
                      beta: beta, c: c + start, ldc: ldc)
            }
        }
    }

    /// C (m×n) += Aᵀ · B = Σ_r A(r, :)ᵀ B(r, :), a sum of outer products over the k rows of A
    /// (k×m) and B (k×n), both row-major: a weight gradient, dW += doutᵀ · inp over every row of a
    /// batch. C is small (a layer's weight) and k long (tokens or pixels), so `sgemm(…, pool:)`,
    /// which cuts C, leaves threads idle: a 144×48 C is one piece, one thread; a 384×96 C three
    /// pieces, two on one thread and one on the other.
    ///
    /// Where `prefersOuterProductTiles` says so, Kaleido's own tiles run it (`outerProductTiles`).
    /// Otherwise, where C would give fewer than 4 pieces and k holds at least two chunks of 2048 rows, the
    /// rows are cut instead: each chunk is a single-threaded OpenBLAS product into its own
    /// partial C, and the partial C's are added to C in chunk order. The chunks depend on the
    /// shape only (at most 16, and at most 4 MB of partials), so with OpenBLAS at one thread (as
    /// pools that cut products run it) the result is the same for any thread count of the pool,
    /// and the same as `.serial`'s. Other shapes go to `sgemm(…, pool:)`.
    public static func accumulateOuterProducts(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                                               b: UnsafePointer<Float>, ldb: Int,
                                               c: UnsafeMutablePointer<Float>, ldc: Int, pool: ComputePool) {
        if prefersOuterProductTiles(m: m, n: n, k: k) {
            outerProductTiles(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, pool: pool)
            return
        }
        let chunks = outerProductChunks(m: m, n: n, k: k)
        guard chunks > 1 else {
            sgemm(transposeA: true, transposeB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                  beta: 1, c: c, ldc: ldc, pool: pool)
            return
        }
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: chunks * m * n)
        defer { partials.deallocate() }
        func product(_ chunk: Int) {
            let start = k * chunk / chunks, end = k * (chunk + 1) / chunks
            sgemm(transposeA: true, transposeB: false, m: m, n: n, k: end - start, a: a + start * lda, lda: lda,
                  b: b + start * ldb, ldb: ldb, beta: 0, c: partials + chunk * m * n, ldc: n)
        }
        if pool.splitsMatrixProducts {
            pool.forEachPiece(chunks, product)
        } else {
            // OpenBLAS's own threads run each chunk; the pool's must not call it at the same time.
            for chunk in 0..<chunks { product(chunk) }
        }
        pool.forEachRange(m, minimumPerThread: max(1, 4096 / max(1, n))) { rows in
            for row in rows {
                for column in 0..<n {
                    var sum: Float = 0
                    for chunk in 0..<chunks { sum += partials[(chunk * m + row) * n + column] }
                    c[row * ldc + column] += sum
                }
            }
        }
    }

    /// How many row chunks `accumulateOuterProducts` cuts k into; 1 means it does not.
    static func outerProductChunks(m: Int, n: Int, k: Int) -> Int {
        let minimumChunkRows = 2048, maximumChunks = 16, maximumPartialFloats = 1 << 20
        guard max(m, n) / 128 < 4 else { return 1 }
        return max(1, min(maximumChunks, k / minimumChunkRows, maximumPartialFloats / max(1, m * n)))
    }
}
