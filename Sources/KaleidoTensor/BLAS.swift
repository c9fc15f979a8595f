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
}
