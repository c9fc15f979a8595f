// Small matrix products (see include/small_gemm.h). A register tile holds R rows × NV vectors of
// 8 (AVX-512: 16) columns of C: every step over i broadcasts R elements of A and loads NV vectors
// of B's row i, so R·NV independent FMA chains hide the FMA latency. R and NV are constants in each
// instantiation (the switch below), so the tile's arrays live in registers; R·NV ≤ 9, so the
// accumulators, B's vectors and the broadcast fit AVX2's 16 registers (at 3 × 4 they spilled).
#include "small_gemm.h"

// Each multiply and add rounds on its own as written: no fusing by the compiler, whatever the
// flags, so the vector tiles and the plain loops keep the same bits.
#pragma clang fp contract(off)

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma"), always_inline)) static inline

// C rows [row, row + R), vectors [vector, vector + NV); the last vector of the matrix is masked
// when n is not a multiple of 8 (`tail`).
TARGET void tile(const int R, const int NV, int row, int vector, int last_vector_masked, __m256i tail,
                 int k, float alpha, const float *a, long a_row, long a_step,
                 const float *b, long ldb, float *c, long ldc, int accumulate) {
    __m256 acc[4][4];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
    const float *a0 = a + (long)row * a_row;
    const float *b0 = b + 8L * vector;
    for (int i = 0; i < k; i++) {
        const float *bi = b0 + (long)i * ldb;
        __m256 bv[4];
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++)
            bv[v] = (v == NV - 1 && last_vector_masked) ? _mm256_maskload_ps(bi + 8 * v, tail) : _mm256_loadu_ps(bi + 8 * v);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            __m256 ar = _mm256_broadcast_ss(a0 + r * a_row + (long)i * a_step);
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
        }
    }
    const __m256 scale = _mm256_set1_ps(alpha);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        float *cr = c + (long)(row + r) * ldc + 8L * vector;
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) {
            int masked = v == NV - 1 && last_vector_masked;
            __m256 x = _mm256_mul_ps(acc[r][v], scale);
            if (accumulate) x = _mm256_add_ps(masked ? _mm256_maskload_ps(cr + 8 * v, tail) : _mm256_loadu_ps(cr + 8 * v), x);
            if (masked) _mm256_maskstore_ps(cr + 8 * v, tail, x);
            else _mm256_storeu_ps(cr + 8 * v, x);
        }
    }
}

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

// AVX-512: R rows × NV vectors of 16 columns, the last vector masked to the n % 16 columns left
// (`tail`). R·NV ≤ 24 accumulators plus NV vectors of B and a broadcast fit the 32 registers.
#define TARGET512 __attribute__((target("avx512f"), always_inline)) static inline

TARGET512 void tile512(const int R, const int NV, int row, int vector, int last_vector_masked, __mmask16 tail,
                       int k, float alpha, const float *a, long a_row, long a_step,
                       const float *b, long ldb, float *c, long ldc, int accumulate) {
    __m512 acc[8][4];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    const float *a0 = a + (long)row * a_row;
    const float *b0 = b + 16L * vector;
    for (int i = 0; i < k; i++) {
        const float *bi = b0 + (long)i * ldb;
        __m512 bv[4];
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++)
            bv[v] = (v == NV - 1 && last_vector_masked) ? _mm512_maskz_loadu_ps(tail, bi + 16 * v) : _mm512_loadu_ps(bi + 16 * v);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            __m512 ar = _mm512_set1_ps(a0[r * a_row + (long)i * a_step]);
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
        }
    }
    const __m512 scale = _mm512_set1_ps(alpha);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        float *cr = c + (long)(row + r) * ldc + 16L * vector;
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) {
            const __mmask16 m = (v == NV - 1 && last_vector_masked) ? tail : (__mmask16)0xFFFF;
            __m512 x = _mm512_mul_ps(acc[r][v], scale);
            if (accumulate) x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, cr + 16 * v), x);
            _mm512_mask_storeu_ps(cr + 16 * v, m, x);
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
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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
