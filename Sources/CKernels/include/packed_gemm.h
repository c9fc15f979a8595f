#ifndef KALEIDO_PACKED_GEMM_H
#define KALEIDO_PACKED_GEMM_H

/// Products with a short inner dimension and a small right-hand matrix: a linear layer's
/// C (m×n) = A (m×k) · B (k×n) with m = tokens or pixels (tens of thousands) and k, n = channels
/// (48–384). OpenBLAS copies all of A into its panel layout first, which at k = 48–96 costs about
/// as much as the arithmetic; here only B, a few kilobytes, is repacked and A is read in place.
///
/// B is packed once per product into panels of 16 columns: panel p holds B(i, 16p ..< 16p + 16)
/// for i = 0 ..< k, 16 floats per i, the columns beyond n zero. A tile of C stays in vector
/// registers over the whole sum; every element of C is one sum over i = 0 ..< k in order (then
/// plus the bias, then plus C's old value when accumulating): the same bits for AVX-512 tiles,
/// AVX2 tiles and plain loops, however callers split the rows.

#ifdef __cplusplus
extern "C" {
#endif

/// Floats of B packed for `n` columns of depth `k`.
long kaleido_packed_b_floats(int k, int n);

/// packed = B in panels, where B(i, j) = b[i·b_row + j·b_column] (a linear layer's weight W (n×k)
/// as Wᵀ is b_row = 1, b_column = k; W itself as B (k×n) is b_row = n, b_column = 1).
void kaleido_pack_b(int k, int n, const float *b, long b_row, long b_column, float *packed);

/// The widest tiles this CPU runs: 2 AVX-512 (8 rows × 32 columns in 16 registers of 16 lanes),
/// 1 AVX2 + FMA (6 rows × 16 columns in 12 registers of 8 lanes), 0 neither.
int kaleido_packed_gemm_isa(void);

/// Rows [row_begin, row_end) of C = A · B (+ bias[j] on every row when bias is not NULL; + C's
/// old value when accumulate is 1). A(r, i) = a[r·lda + i], C(r, j) = c[r·ldc + j]. `vectorized`:
/// the tiles of `kaleido_packed_gemm_isa`'s level 2 or 1 (no higher than it returns), or 0 for
/// plain loops with the same sums.
void kaleido_packed_gemm(int vectorized, int row_begin, int row_end, int n, int k, const float *a, long lda,
                         const float *packed, const float *bias, float *c, long ldc, int accumulate);

#ifdef __cplusplus
}
#endif

#endif
