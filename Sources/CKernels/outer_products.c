// Weight gradients as sums of outer products, both operands read in place (see
// include/outer_products.h).
#include "outer_products.h"
#include <math.h>

// Every step is one fused multiply-add (fmaf, _mm512_fmadd_ps), whatever the compiler's flags,
// so the vector tiles and the plain loops keep the same bits.
#pragma clang fp contract(off)

// C(r, j) = fma(A(i, r), B(i, j), C(r, j)) for i = 0 ..< k: the order every path uses.
static void outer_products_portable(int row_begin, int row_end, int column_begin, int column_end, int k, const float *a,
                                    long lda, const float *b, long ldb, float *c, long ldc) {
    for (int r = row_begin; r < row_end; r++) {
        for (int j = column_begin; j < column_end; j++) {
            float sum = c[(long)r * ldc + j];
            for (int i = 0; i < k; i++) sum = fmaf(a[(long)i * lda + r], b[(long)i * ldb + j], sum);
            c[(long)r * ldc + j] = sum;
        }
    }
}

// C is cut into tiles of `rows` × `columns`, numbered along C's rows of tiles (a tile's
// right-hand neighbour comes next, sharing its columns of A); the tiles at the right edge also
// take the columns past the last whole vector, in plain loops. Callers split the numbers between
// threads. (Numbered down C's columns instead, so that a thread reads only its part of B, the
// products with n > m ran 0.96–1.02× OpenBLAS where these ran 1.18–1.31×.)
typedef struct { int rows, columns, vector_columns, row_tiles, column_tiles; } tiling;

static tiling tiling_of(int tile_rows, int tile_columns, int lanes, int m, int n) {
    tiling t = {tile_rows, tile_columns, n / lanes * lanes, (m + tile_rows - 1) / tile_rows, 1};
    if (t.vector_columns > tile_columns) t.column_tiles = (t.vector_columns + tile_columns - 1) / tile_columns;
    return t;
}

// The AVX-512 tile: 6 rows × 4 vectors of 16 columns, 24 accumulators plus 4 loads of B and one
// broadcast in 29 of the 32 registers. In a loop over one core's registers alone (Zen 4,
// 2026-12-07) 6 × 4 ran at 116 GFLOP/s where 14 × 2 and 12 × 2 ran at 28–47: clang keeps their
// broadcasts in memory.
//
// There are no AVX2 tiles: the best shape (6 rows × 2 vectors of 8, 116 GFLOP/s on one core in
// the same loop) ran at 0.67–1.17× OpenBLAS's Haswell kernels on ResNet-50's and Swin's weight
// gradients with 2 threads, a wash; with AVX2 the weight gradients stay with OpenBLAS.
enum { TILE_ROWS = 6, TILE_VECTORS = 4, LANES = 16 };

static tiling tiling_for(int vectorized, int m, int n) {
#if defined(__x86_64__)
    if (vectorized >= 2) return tiling_of(TILE_ROWS, TILE_VECTORS * LANES, LANES, m, n);
#endif
    (void)vectorized;
    return tiling_of(m > 0 ? m : 1, n > 0 ? n : 1, 1, m, n); // the plain loops: one tile
}

// Rows of A and B pass in blocks whose B (block × n floats, at most 64 KiB) stays in L2 while
// every tile of C uses it; a tile's columns of A (block × 6 floats) stay in L1 while it moves
// across B's columns. A tile loads and stores C once per block: 2/block of its work. (Blocks of
// 128 and 256 KiB measured the same.)
static int block_rows(int n) {
    int rows = 16384 / (n > 0 ? n : 1);
    return rows < 32 ? 32 : rows > 256 ? 256 : rows;
}

#if defined(__x86_64__)
#include <immintrin.h>

// C rows [0, R) × vectors [0, NV) += Σ_{i < k} A(i, 0 ..< R)ᵀ B(i, 0 ..< 16·NV); R and NV are
// constants in each case of the switch below, so the tile lives in registers.
__attribute__((target("avx512f"), always_inline)) static inline void tile512(const int R, const int NV, int k,
                                                                            const float *a, long lda, const float *b,
                                                                            long ldb, float *c, long ldc) {
    __m512 acc[TILE_ROWS][TILE_VECTORS];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_loadu_ps(c + r * ldc + v * LANES);
    for (int i = 0; i < k; i++) {
        __m512 bv[TILE_VECTORS];
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + i * ldb + v * LANES);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            const __m512 ar = _mm512_set1_ps(a[i * lda + r]);
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
        }
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(c + r * ldc + v * LANES, acc[r][v]);
}

__attribute__((target("avx512f"))) static void outer_products_avx512(int tile_begin, int tile_end, int m, int n, int k,
                                                                     const float *a, long lda, const float *b, long ldb,
                                                                     float *c, long ldc) {
    const tiling t = tiling_for(2, m, n);
    const int block = block_rows(n);
    for (int i0 = 0; i0 < k; i0 += block) {
        const int rows = k - i0 < block ? k - i0 : block;
        const float *a_block = a + (long)i0 * lda, *b_block = b + (long)i0 * ldb;
        for (int tile = tile_begin; tile < tile_end; tile++) {
            const int row = tile / t.column_tiles * TILE_ROWS, column = tile % t.column_tiles * t.columns;
            const int tile_rows = m - row < TILE_ROWS ? m - row : TILE_ROWS;
            const int left = (t.vector_columns - column) / LANES;
            const int vectors = left < TILE_VECTORS ? left : TILE_VECTORS;
            const float *ap = a_block + row, *bp = b_block + column;
            float *cp = c + (long)row * ldc + column;
#define CASE(R, NV) case R * 8 + NV: tile512(R, NV, rows, ap, lda, bp, ldb, cp, ldc); break;
            if (vectors > 0) {
                switch (tile_rows * 8 + vectors) {
                    CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(1, 4) CASE(2, 1) CASE(2, 2) CASE(2, 3) CASE(2, 4)
                    CASE(3, 1) CASE(3, 2) CASE(3, 3) CASE(3, 4) CASE(4, 1) CASE(4, 2) CASE(4, 3) CASE(4, 4)
                    CASE(5, 1) CASE(5, 2) CASE(5, 3) CASE(5, 4) CASE(6, 1) CASE(6, 2) CASE(6, 3) CASE(6, 4)
                }
            }
#undef CASE
            if (tile % t.column_tiles == t.column_tiles - 1 && t.vector_columns < n)
                outer_products_portable(row, row + tile_rows, t.vector_columns, n, rows, a_block, lda, b_block, ldb, c, ldc);
        }
    }
}
#endif

int kaleido_outer_products_tiles(int vectorized, int m, int n) {
    const tiling t = tiling_for(vectorized, m, n);
    return t.row_tiles * t.column_tiles;
}

void kaleido_accumulate_outer_products(int vectorized, int tile_begin, int tile_end, int m, int n, int k, const float *a,
                                       long lda, const float *b, long ldb, float *c, long ldc) {
#if defined(__x86_64__)
    if (vectorized >= 2) { outer_products_avx512(tile_begin, tile_end, m, n, k, a, lda, b, ldb, c, ldc); return; }
#endif
    if (tile_begin < tile_end) outer_products_portable(0, m, 0, n, k, a, lda, b, ldb, c, ldc);
}
