// Small matrix products (see include/small_gemm.h). A register tile holds R rows × NV vectors of
// 8 (AVX-512: 16) columns of C: every step over i broadcasts R elements of A and loads NV vectors
// of B's row i, so R·NV independent FMA chains hide the FMA latency. R and NV are constants in each
// instantiation (the switch below), so the tile's arrays live in registers; R·NV ≤ 9, so the
// accumulators, B's vectors and the broadcast fit AVX2's 16 registers (at 3 × 4 they spilled).
#include "small_gemm.h"
#include "cpu_capability.h"

// Each multiply and add rounds on its own as written: no fusing by the compiler, whatever the
// flags, so the vector tiles and the plain loops keep the same bits.
#pragma clang fp contract(off)

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma"), always_inline)) static inline

// The AVX2 tile: up to 4 rows × 4 vectors of 8 columns.
#define TILE_FN tile
#define TILE_TARGET "avx2,fma"
#define VEC __m256
#define MASK __m256i
#define LANES 8
#define ROWS_MAX 4
#define VEC_ZERO() _mm256_setzero_ps()
#define VEC_SET1(x) _mm256_set1_ps(x)
#define VEC_LOADU(p) _mm256_loadu_ps(p)
#define VEC_LOAD_MASKED(p, m) _mm256_maskload_ps((p), (m))
#define VEC_STOREU(p, v) _mm256_storeu_ps((p), (v))
#define VEC_STORE_MASKED(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define VEC_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VEC_MUL(a, b) _mm256_mul_ps((a), (b))
#define VEC_ADD(a, b) _mm256_add_ps((a), (b))
#include "small_gemm_tile.h"

// The AVX-512 tile: R rows × NV vectors of 16 columns, R·NV ≤ 24 accumulators plus NV vectors
// of B and a broadcast in the 32 registers.
#define TILE_FN tile512
#define TILE_TARGET "avx512f"
#define VEC __m512
#define MASK __mmask16
#define LANES 16
#define ROWS_MAX 8
#define VEC_ZERO() _mm512_setzero_ps()
#define VEC_SET1(x) _mm512_set1_ps(x)
#define VEC_LOADU(p) _mm512_loadu_ps(p)
#define VEC_LOAD_MASKED(p, m) _mm512_maskz_loadu_ps((m), (p))
#define VEC_STOREU(p, v) _mm512_storeu_ps((p), (v))
#define VEC_STORE_MASKED(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define VEC_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VEC_MUL(a, b) _mm512_mul_ps((a), (b))
#define VEC_ADD(a, b) _mm512_add_ps((a), (b))
#include "small_gemm_tile.h"

__attribute__((target("avx2,fma")))
static void small_gemm_avx2(int m, int n, int k, float alpha, const float *a, long a_row, long a_step,
                            const float *b, long ldb, float *c, long ldc, int accumulate) {
    const int vectors = (n + 7) / 8, tail_lanes = n % 8;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail_lanes), lanes);
    for (int vector = 0; vector < vectors; vector += 4) {
        const int nv = vectors - vector < 4 ? vectors - vector : 4;
        const int masked = tail_lanes != 0 && vector + nv == vectors;
        // Every (rows, nv) pair this can produce has a case below.
        const int rows_per_tile = nv <= 2 ? 4 : (nv == 3 ? 3 : 2);
        for (int row = 0; row < m; row += rows_per_tile) {
            const int rows = m - row < rows_per_tile ? m - row : rows_per_tile;
#define TILE_CASE(R, NV) case (R) * 8 + (NV): \
    tile(R, NV, row, vector, masked, tail, k, alpha, a, a_row, a_step, b, ldb, c, ldc, accumulate); break;
            switch (rows * 8 + nv) {
                TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(1, 3) TILE_CASE(1, 4)
                TILE_CASE(2, 1) TILE_CASE(2, 2) TILE_CASE(2, 3) TILE_CASE(2, 4)
                TILE_CASE(3, 1) TILE_CASE(3, 2) TILE_CASE(3, 3)
                TILE_CASE(4, 1) TILE_CASE(4, 2)
            }
#undef TILE_CASE
        }
    }
}

__attribute__((target("avx512f")))
static void small_gemm_avx512(int m, int n, int k, float alpha, const float *a, long a_row, long a_step,
                              const float *b, long ldb, float *c, long ldc, int accumulate) {
    const int vectors = (n + 15) / 16, tail_lanes = n % 16;
    const __mmask16 tail = (__mmask16)((1u << tail_lanes) - 1);
    for (int vector = 0; vector < vectors; vector += 4) {
        const int nv = vectors - vector < 4 ? vectors - vector : 4;
        const int masked = tail_lanes != 0 && vector + nv == vectors;
        // Every (rows, nv) pair this can produce has a case below.
        const int rows_per_tile = nv == 1 ? 8 : (nv == 2 ? 6 : (nv == 3 ? 6 : 5));
        for (int row = 0; row < m; row += rows_per_tile) {
            const int rows = m - row < rows_per_tile ? m - row : rows_per_tile;
#define TILE_CASE(R, NV) case (R) * 8 + (NV): \
    tile512(R, NV, row, vector, masked, tail, k, alpha, a, a_row, a_step, b, ldb, c, ldc, accumulate); break;
            switch (rows * 8 + nv) {
                TILE_CASE(1, 1) TILE_CASE(2, 1) TILE_CASE(3, 1) TILE_CASE(4, 1)
                TILE_CASE(5, 1) TILE_CASE(6, 1) TILE_CASE(7, 1) TILE_CASE(8, 1)
                TILE_CASE(1, 2) TILE_CASE(2, 2) TILE_CASE(3, 2) TILE_CASE(4, 2) TILE_CASE(5, 2) TILE_CASE(6, 2)
                TILE_CASE(1, 3) TILE_CASE(2, 3) TILE_CASE(3, 3) TILE_CASE(4, 3) TILE_CASE(5, 3) TILE_CASE(6, 3)
                TILE_CASE(1, 4) TILE_CASE(2, 4) TILE_CASE(3, 4) TILE_CASE(4, 4) TILE_CASE(5, 4)
            }
#undef TILE_CASE
        }
    }
}

// The 8×8 block at m (rows `stride` apart) transposed into out (rows `out_stride` apart).
TARGET void transpose_8x8(const float *m, long stride, float *out, long out_stride) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(m + i * stride);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(out + i * out_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(out + (i + 4) * out_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

__attribute__((target("avx2,fma")))
static void small_transpose_avx2(int rows, int columns, const float *m, long stride, float *out) {
    const int full_rows = rows / 8 * 8, full_columns = columns / 8 * 8;
    for (int r = 0; r < full_rows; r += 8)
        for (int c = 0; c < full_columns; c += 8) transpose_8x8(m + (long)r * stride + c, stride, out + (long)c * rows + r, rows);
    for (int r = 0; r < rows; r++) {
        const int first = r < full_rows ? full_columns : 0;
        for (int c = first; c < columns; c++) out[(long)c * rows + r] = m[(long)r * stride + c];
    }
}
#endif

void kaleido_small_transpose(int vectorized, int rows, int columns, const float *m, long stride, float *out) {
#if defined(__x86_64__)
    if (vectorized) {
        small_transpose_avx2(rows, columns, m, stride, out);
        return;
    }
#endif
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < columns; c++) out[(long)c * rows + r] = m[(long)r * stride + c];
}

// Plain loops in the same order of sums, for CPUs without AVX2 + FMA.
static void small_gemm_portable(int m, int n, int k, float alpha, const float *a, long a_row, long a_step,
                                const float *b, long ldb, float *c, long ldc, int accumulate) {
    for (int r = 0; r < m; r++) {
        float *cr = c + (long)r * ldc;
        for (int j = 0; j < n; j++) {
            float sum = 0;
            for (int i = 0; i < k; i++) sum = __builtin_fmaf(a[(long)r * a_row + (long)i * a_step], b[(long)i * ldb + j], sum);
            cr[j] = accumulate ? cr[j] + sum * alpha : sum * alpha;
        }
    }
}

int kaleido_small_gemm_vectorized(void) {
#if defined(__x86_64__)
    return kaleido_cpu_capability();
#else
    return 0;
#endif
}

void kaleido_small_gemm(int vectorized, int m, int n, int k, float alpha, const float *a, long a_row, long a_step,
                        const float *b, long ldb, float *c, long ldc, int accumulate) {
#if defined(__x86_64__)
    if (vectorized >= 2) {
        small_gemm_avx512(m, n, k, alpha, a, a_row, a_step, b, ldb, c, ldc, accumulate);
        return;
    }
    if (vectorized) {
        small_gemm_avx2(m, n, k, alpha, a, a_row, a_step, b, ldb, c, ldc, accumulate);
        return;
    }
#endif
    small_gemm_portable(m, n, k, alpha, a, a_row, a_step, b, ldb, c, ldc, accumulate);
}
