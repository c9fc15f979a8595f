// Linear-layer products with B packed and A read in place (see include/packed_gemm.h).
#include "packed_gemm.h"
#include "cpu_capability.h"
#include <math.h>

// Each multiply-add is one fused operation (fmaf, _mm256_fmadd_ps) and each add rounds on its
// own, whatever the compiler's flags, so the vector tiles and the plain loops keep the same bits.
#pragma clang fp contract(off)

enum { PANEL = 16, MAX_ROWS = 6 };

long kaleido_packed_b_floats(int k, int n) { return (long)k * ((n + PANEL - 1) / PANEL) * PANEL; }

void kaleido_pack_b(int k, int n, const float *b, long b_row, long b_column, float *packed) {
    const int panels = (n + PANEL - 1) / PANEL;
    for (int p = 0; p < panels; p++) {
        float *panel = packed + (long)p * k * PANEL;
        for (int i = 0; i < k; i++) {
            for (int j = 0; j < PANEL; j++) {
                const int column = p * PANEL + j;
                panel[i * PANEL + j] = column < n ? b[(long)i * b_row + (long)column * b_column] : 0.0f;
            }
        }
    }
}

// One element's sum in the order every path uses.
static inline float finish(float sum, const float *bias, int column, const float *old, int accumulate) {
    if (bias) sum = sum + bias[column];
    if (accumulate) sum = *old + sum;
    return sum;
}

static void packed_gemm_portable(int row_begin, int row_end, int n, int k, const float *a, long lda,
                                 const float *packed, const float *bias, float *c, long ldc, int accumulate) {
    for (int r = row_begin; r < row_end; r++) {
        for (int j = 0; j < n; j++) {
            const float *panel = packed + (long)(j / PANEL) * k * PANEL + j % PANEL;
            float sum = 0.0f;
            for (int i = 0; i < k; i++) sum = fmaf(a[(long)r * lda + i], panel[i * PANEL], sum);
            float *cell = c + (long)r * ldc + j;
            *cell = finish(sum, bias, j, cell, accumulate);
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma"), always_inline)) static inline

// C rows [row, row + R) × the panel's 16 columns, `columns` (≤ 16) of them stored.
TARGET void tile(const int R, int row, int columns, int k, const float *a, long lda, const float *panel,
                 const float *bias, float *c, long ldc, int accumulate, __m256i mask0, __m256i mask1) {
    __m256 acc[MAX_ROWS][2];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float *a0 = a + (long)row * lda;
    for (int i = 0; i < k; i++) {
        const __m256 b0 = _mm256_loadu_ps(panel + i * PANEL), b1 = _mm256_loadu_ps(panel + i * PANEL + 8);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            const __m256 ar = _mm256_broadcast_ss(a0 + r * lda + i);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    const int full = columns == PANEL;
    __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
    if (bias) {
        bias0 = full ? _mm256_loadu_ps(bias) : _mm256_maskload_ps(bias, mask0);
        bias1 = full ? _mm256_loadu_ps(bias + 8) : _mm256_maskload_ps(bias + 8, mask1);
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        float *cr = c + (long)(row + r) * ldc;
        __m256 x0 = acc[r][0], x1 = acc[r][1];
        if (bias) { x0 = _mm256_add_ps(x0, bias0); x1 = _mm256_add_ps(x1, bias1); }
        if (full) {
            if (accumulate) { x0 = _mm256_add_ps(_mm256_loadu_ps(cr), x0); x1 = _mm256_add_ps(_mm256_loadu_ps(cr + 8), x1); }
            _mm256_storeu_ps(cr, x0);
            _mm256_storeu_ps(cr + 8, x1);
        } else {
            if (accumulate) {
                x0 = _mm256_add_ps(_mm256_maskload_ps(cr, mask0), x0);
                x1 = _mm256_add_ps(_mm256_maskload_ps(cr + 8, mask1), x1);
            }
            _mm256_maskstore_ps(cr, mask0, x0);
            _mm256_maskstore_ps(cr + 8, mask1, x1);
        }
    }
}

// Rows go in blocks whose A (block × k floats) stays in L2 while every panel of B passes over
// it; within a block, a panel (k × 16 floats) stays in L1 while the block's tiles use it.
__attribute__((target("avx2,fma")))
static void packed_gemm_avx2(int row_begin, int row_end, int n, int k, const float *a, long lda,
                             const float *packed, const float *bias, float *c, long ldc, int accumulate) {
    const int panels = (n + PANEL - 1) / PANEL;
    const int block_rows = 48;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int block = row_begin; block < row_end; block += block_rows) {
        const int block_end = row_end - block < block_rows ? row_end : block + block_rows;
        for (int p = 0; p < panels; p++) {
            const int columns = n - p * PANEL < PANEL ? n - p * PANEL : PANEL;
            const __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(columns), lanes);
            const __m256i mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(columns - 8), lanes);
            const float *panel = packed + (long)p * k * PANEL;
            const float *panel_bias = bias ? bias + p * PANEL : 0;
            float *panel_c = c + p * PANEL;
            for (int row = block; row < block_end; row += MAX_ROWS) {
                const int rows = block_end - row < MAX_ROWS ? block_end - row : MAX_ROWS;
#define TILE_CASE(R) case R: tile(R, row, columns, k, a, lda, panel, panel_bias, panel_c, ldc, accumulate, mask0, mask1); break;
                switch (rows) { TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) }
#undef TILE_CASE
            }
        }
    }
}

// The AVX-512 tiles: C rows [row, row + R) × two neighbouring panels (32 columns, `columns` ≤ 32
// of them stored; `TWO` is 0 when the second panel does not exist), 2R accumulators of 16 lanes.
// Eight rows keep 16 accumulators, two B vectors and the broadcast in the 32 registers, with ten
// loads for every sixteen multiply-adds.
#define TARGET512 __attribute__((target("avx512f"), always_inline)) static inline

TARGET512 void tile512(const int R, const int TWO, int row, int columns, int k, const float *a, long lda,
                       const float *panel, const float *bias, float *c, long ldc, int accumulate) {
    __m512 acc[8][2];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const float *a0 = a + (long)row * lda;
    const float *panel1 = panel + (long)k * PANEL;
    for (int i = 0; i < k; i++) {
        const __m512 b0 = _mm512_loadu_ps(panel + i * PANEL);
        const __m512 b1 = TWO ? _mm512_loadu_ps(panel1 + i * PANEL) : _mm512_setzero_ps();
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            const __m512 ar = _mm512_set1_ps(a0[r * lda + i]);
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            if (TWO) acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    const __mmask16 mask0 = columns >= PANEL ? 0xFFFF : (__mmask16)((1u << columns) - 1);
    const int rest = columns - PANEL;
    const __mmask16 mask1 = rest >= PANEL ? 0xFFFF : rest <= 0 ? 0 : (__mmask16)((1u << rest) - 1);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) {
        bias0 = _mm512_maskz_loadu_ps(mask0, bias);
        if (TWO) bias1 = _mm512_maskz_loadu_ps(mask1, bias + PANEL);
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        float *cr = c + (long)(row + r) * ldc;
        __m512 x0 = acc[r][0], x1 = acc[r][1];
        if (bias) { x0 = _mm512_add_ps(x0, bias0); x1 = _mm512_add_ps(x1, bias1); }
        if (accumulate) {
            x0 = _mm512_add_ps(_mm512_maskz_loadu_ps(mask0, cr), x0);
            if (TWO) x1 = _mm512_add_ps(_mm512_maskz_loadu_ps(mask1, cr + PANEL), x1);
        }
        _mm512_mask_storeu_ps(cr, mask0, x0);
        if (TWO) _mm512_mask_storeu_ps(cr + PANEL, mask1, x1);
    }
}

// The blocking of packed_gemm_avx2, with pairs of panels and tiles of up to 8 rows.
__attribute__((target("avx512f")))
static void packed_gemm_avx512(int row_begin, int row_end, int n, int k, const float *a, long lda,
                               const float *packed, const float *bias, float *c, long ldc, int accumulate) {
    enum { TILE_ROWS = 8 };
    const int panels = (n + PANEL - 1) / PANEL;
    const int block_rows = 48;
    for (int block = row_begin; block < row_end; block += block_rows) {
        const int block_end = row_end - block < block_rows ? row_end : block + block_rows;
        for (int p = 0; p < panels; p += 2) {
            const int two = p + 1 < panels;
            const int columns = n - p * PANEL < 2 * PANEL ? n - p * PANEL : 2 * PANEL;
            const float *panel = packed + (long)p * k * PANEL;
            const float *panel_bias = bias ? bias + p * PANEL : 0;
            float *panel_c = c + p * PANEL;
            for (int row = block; row < block_end; row += TILE_ROWS) {
                const int rows = block_end - row < TILE_ROWS ? block_end - row : TILE_ROWS;
#define TILE_CASE(R) case R: \
    if (two) tile512(R, 1, row, columns, k, a, lda, panel, panel_bias, panel_c, ldc, accumulate); \
    else tile512(R, 0, row, columns, k, a, lda, panel, panel_bias, panel_c, ldc, accumulate); \
    break;
                switch (rows) { TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6) TILE_CASE(7) TILE_CASE(8) }
#undef TILE_CASE
            }
        }
    }
}
#endif

int kaleido_packed_gemm_isa(void) {
#if defined(__x86_64__)
    return kaleido_cpu_capability();
#else
    return 0;
#endif
}

void kaleido_packed_gemm(int vectorized, int row_begin, int row_end, int n, int k, const float *a, long lda,
                         const float *packed, const float *bias, float *c, long ldc, int accumulate) {
#if defined(__x86_64__)
    if (vectorized == 2) {
        packed_gemm_avx512(row_begin, row_end, n, k, a, lda, packed, bias, c, ldc, accumulate);
        return;
    }
    if (vectorized == 1) {
        packed_gemm_avx2(row_begin, row_end, n, k, a, lda, packed, bias, c, ldc, accumulate);
        return;
    }
#endif
    packed_gemm_portable(row_begin, row_end, n, k, a, lda, packed, bias, c, ldc, accumulate);
}
