#ifndef KALEIDO_SMALL_GEMM_H
#define KALEIDO_SMALL_GEMM_H

/// A product of small matrices, for the thousands of per-window products of Swin's attention
/// (16 or 49 tokens, head dimension 16 or 32), where an OpenBLAS call spends more on its call,
/// buffers and packing than on the arithmetic.
///
/// C (m×n) = alpha · A (m×k) · B (k×n), added onto C when `accumulate` is 1, else written over it:
///   A(r, i) = a[r·a_row + i·a_step]     (a transpose is a_row = 1, a_step = the row length)
///   B(i, :) = b[i·ldb ..< i·ldb + n]    (rows contiguous)
///   C(r, :) = c[r·ldc ..< r·ldc + n]
/// Every element is one sum over i = 0 ..< k in order, then scaled by alpha, then added:
/// the bits do not depend on how callers split their work, nor on the instruction set.
/// Rows of C are computed a few at a time with their columns in vector registers when
/// `vectorized` is 1 (AVX2 + FMA) or 2 (AVX-512F), as the caller asks
/// `kaleido_small_gemm_vectorized` once, else in plain loops. Every element is the same chain of
/// fused multiply-adds in all three, so they give the same bits.

#ifdef __cplusplus
extern "C" {
#endif

/// 2 when this CPU runs the AVX-512 products, 1 for AVX2 and FMA, else 0 (the plain loops).
int kaleido_small_gemm_vectorized(void);

void kaleido_small_gemm(int vectorized, int m, int n, int k, float alpha, const float *a, long a_row, long a_step,
                        const float *b, long ldb, float *c, long ldc, int accumulate);

/// out (columns × rows, rows contiguous) = the transpose of the rows × columns matrix at m,
/// whose rows are `stride` floats apart (8×8 blocks in registers when `vectorized`).
void kaleido_small_transpose(int vectorized, int rows, int columns, const float *m, long stride, float *out);

#ifdef __cplusplus
}
#endif

#endif
