#ifndef KALEIDO_OUTER_PRODUCTS_H
#define KALEIDO_OUTER_PRODUCTS_H

/// Weight gradients: C (m×n) += Aᵀ · B = Σ_i A(i, :)ᵀ B(i, :) over the k rows of A (k×m) and
/// B (k×n), both read in place: dW += doutᵀ · inp with k = tokens or pixels (tens of thousands)
/// and m, n = channels. OpenBLAS copies both operands into its panels first; here a register
/// tile of C takes, for every row i, R broadcasts of A(i, row ..< row + R) and NV vector loads
/// of B(i, column ..< column + NV·lanes) — both contiguous in row i — and R·NV multiply-adds.
///
/// Every element of C is one chain of fused multiply-adds over i = 0 ..< k in order, starting
/// from C's old value: c = fma(A(i, r), B(i, j), c). The AVX-512 tiles and the plain loops give
/// the same bits, however callers split C's tiles between threads.

#ifdef __cplusplus
extern "C" {
#endif

/// The register tiles C (m×n) is cut into at `vectorized` level 2 (AVX-512: 6 rows × 64 columns);
/// below it (plain loops), one tile. They are numbered along C's
/// rows of tiles; the tiles at the right edge also hold the columns past the last whole vector.
int kaleido_outer_products_tiles(int vectorized, int m, int n);

/// Tiles [tile_begin, tile_end) of C += Aᵀ · B, where A(i, r) = a[i·lda + r], B(i, j) = b[i·ldb + j],
/// C(r, j) = c[r·ldc + j]: callers split the tiles between threads. `vectorized`: 2 for the
/// AVX-512 tiles (only where `kaleido_packed_gemm_isa` returns 2), lower for plain loops with
/// the same sums.
void kaleido_accumulate_outer_products(int vectorized, int tile_begin, int tile_end, int m, int n, int k, const float *a,
                                       long lda, const float *b, long ldb, float *c, long ldc);

#ifdef __cplusplus
}
#endif

#endif
