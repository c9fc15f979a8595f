// One instruction set's Winograd F(2×2, 3×3) block (see include/conv3x3_winograd.h), compiled
// once per set: conv3x3_winograd.c defines ROWS (tiles per register tile of the products) and
// BLOCK (tiles per block), then includes vector_isa_avx512.h or
// vector_isa_avx2.h, this file and vector_isa_end.h. A panel is two vectors (2·LANES output
// channels); a register tile keeps 2·ROWS accumulators, two vectors of its right-hand operand
// and one broadcast: 31 of AVX-512's 32 registers at ROWS 14, 15 of AVX2's 16 at ROWS 6.

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define ISA_FN(name) CAT(name, ISA)

// Input transform of one tile, one vector of channels: V = Bᵀ d B over the 4×4 patch d whose
// element (r, c) is at row[r] + column[c] + channel, a null row or a column < 0 standing for
// the padding's zeros. V[ξ] goes to v + ξ·xi_stride.
__attribute__((target(ISA_TARGET), always_inline))
static inline void ISA_FN(transform_input)(const float *const row[4], const long column[4], int channel, float *v,
                                          long xi_stride) {
    VEC d[4][4];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            d[r][c] = row[r] && column[c] >= 0 ? VEC_LOAD(row[r] + column[c] + channel) : VEC_ZERO();
    VEC t[4][4];  // Bᵀ d
    for (int c = 0; c < 4; c++) {
        t[0][c] = VEC_SUB(d[0][c], d[2][c]);
        t[1][c] = VEC_ADD(d[1][c], d[2][c]);
        t[2][c] = VEC_SUB(d[2][c], d[1][c]);
        t[3][c] = VEC_SUB(d[1][c], d[3][c]);
    }
    for (int r = 0; r < 4; r++) {  // (Bᵀ d) B
        VEC_STORE(v + (r * 4 + 0) * xi_stride, VEC_SUB(t[r][0], t[r][2]));
        VEC_STORE(v + (r * 4 + 1) * xi_stride, VEC_ADD(t[r][1], t[r][2]));
        VEC_STORE(v + (r * 4 + 2) * xi_stride, VEC_SUB(t[r][2], t[r][1]));
        VEC_STORE(v + (r * 4 + 3) * xi_stride, VEC_SUB(t[r][1], t[r][3]));
    }
}

// The register tile of both products: `rows` (≤ ROWS) rows × one panel (two vectors), over k:
//   c[i][0 .. 2·LANES) (+)= Σ_k a[i·a_row + k·a_k] · b[k·2·LANES .. (k + 1)·2·LANES)
// The forward products read a row of V per tile (a_row = channels, a_k = 1) and write M; the
// weight gradient reads a column of V per input channel (a_row = 1, a_k = channels) and adds
// onto dU.
__attribute__((target(ISA_TARGET), always_inline))
static inline void ISA_FN(product_tile)(const float *a, long a_row, long a_k, const float *b, int k, float *c,
                                        int accumulate, const int rows) {
    VEC acc[ROWS][2];
    for (int i = 0; i < rows; i++) {
        acc[i][0] = accumulate ? VEC_LOAD(c + i * 2 * LANES) : VEC_ZERO();
        acc[i][1] = accumulate ? VEC_LOAD(c + i * 2 * LANES + LANES) : VEC_ZERO();
    }
    for (int step = 0; step < k; step++) {
        VEC b0 = VEC_LOAD(b + step * 2 * LANES), b1 = VEC_LOAD(b + step * 2 * LANES + LANES);
        for (int i = 0; i < rows; i++) {
            VEC x = VEC_SET1(a[i * a_row + step * a_k]);
            acc[i][0] = VEC_FMA(x, b0, acc[i][0]);
            acc[i][1] = VEC_FMA(x, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < rows; i++) {
        VEC_STORE(c + i * 2 * LANES, acc[i][0]);
        VEC_STORE(c + i * 2 * LANES + LANES, acc[i][1]);
    }
}

// The tile compiled for every row count, so its accumulators stay in registers.
#define PRODUCT_TILE_OF(r)                                                                                   \
    __attribute__((target(ISA_TARGET), noinline)) static void CAT(ISA_FN(product_tile), r)(                \
        const float *a, long a_row, long a_k, const float *b, int k, float *c, int accumulate) {           \
        ISA_FN(product_tile)(a, a_row, a_k, b, k, c, accumulate, r);                                         \
    }
PRODUCT_TILE_OF(1) PRODUCT_TILE_OF(2) PRODUCT_TILE_OF(3) PRODUCT_TILE_OF(4) PRODUCT_TILE_OF(5) PRODUCT_TILE_OF(6)
#if ROWS > 6
PRODUCT_TILE_OF(7) PRODUCT_TILE_OF(8) PRODUCT_TILE_OF(9) PRODUCT_TILE_OF(10) PRODUCT_TILE_OF(11)
PRODUCT_TILE_OF(12) PRODUCT_TILE_OF(13) PRODUCT_TILE_OF(14)
#endif
#undef PRODUCT_TILE_OF

typedef void (*ISA_FN(product_function))(const float *, long, long, const float *, int, float *, int);
static const ISA_FN(product_function) ISA_FN(product_tiles)[ROWS + 1] = {
    0, CAT(ISA_FN(product_tile), 1), CAT(ISA_FN(product_tile), 2), CAT(ISA_FN(product_tile), 3),
    CAT(ISA_FN(product_tile), 4), CAT(ISA_FN(product_tile), 5), CAT(ISA_FN(product_tile), 6),
#if ROWS > 6
    CAT(ISA_FN(product_tile), 7), CAT(ISA_FN(product_tile), 8), CAT(ISA_FN(product_tile), 9),
    CAT(ISA_FN(product_tile), 10), CAT(ISA_FN(product_tile), 11), CAT(ISA_FN(product_tile), 12),
    CAT(ISA_FN(product_tile), 13), CAT(ISA_FN(product_tile), 14),
#endif
};

// Output transform of one tile, one vector of channels: the 2×2 pixels Aᵀ M A from M[ξ] at
// m + ξ·xi_stride, written (or added) at out[a][b] for the pixels inside the image
// (`inside[a][b]`).
__attribute__((target(ISA_TARGET), always_inline))
static inline void ISA_FN(transform_output)(const float *m, long xi_stride, float *const out[2][2],
                                           const int inside[2][2], int accumulate) {
    VEC s[2][4];  // Aᵀ M
    for (int c = 0; c < 4; c++) {
        VEC m0 = VEC_LOAD(m + (0 * 4 + c) * xi_stride), m1 = VEC_LOAD(m + (1 * 4 + c) * xi_stride);
        VEC m2 = VEC_LOAD(m + (2 * 4 + c) * xi_stride), m3 = VEC_LOAD(m + (3 * 4 + c) * xi_stride);
        s[0][c] = VEC_ADD(VEC_ADD(m0, m1), m2);
        s[1][c] = VEC_SUB(VEC_SUB(m1, m2), m3);
    }
    for (int a = 0; a < 2; a++) {  // (Aᵀ M) A
        VEC y[2] = {VEC_ADD(VEC_ADD(s[a][0], s[a][1]), s[a][2]), VEC_SUB(VEC_SUB(s[a][1], s[a][2]), s[a][3])};
        for (int b = 0; b < 2; b++) {
            if (!inside[a][b]) continue;
            VEC_STORE(out[a][b], accumulate ? VEC_ADD(VEC_LOAD(out[a][b]), y[b]) : y[b]);
        }
    }
}

// Input transform of tiles [first_tile, first_tile + tiles) into v (16 × tiles × in_channels).
__attribute__((target(ISA_TARGET), always_inline))
static inline void ISA_FN(transform_input_block)(const float *input, int height, int width, int in_channels,
                                                 long first_tile, int tiles, float *v) {
    const long v_xi = (long)tiles * in_channels;
    for (int t = 0; t < tiles; t++) {
        winograd_tile g = tile_at(first_tile + t, height, width);
        const float *row[4];
        long column[4];
        for (int r = 0; r < 4; r++) {
            int y = g.oy - 1 + r;
            row[r] = y >= 0 && y < height ? input + (g.n * height + y) * width * in_channels : 0;
        }
        for (int c = 0; c < 4; c++) {
            int x = g.ox - 1 + c;
            column[c] = x >= 0 && x < width ? (long)x * in_channels : -1;
        }
        for (int channel = 0; channel < in_channels; channel += LANES)
            ISA_FN(transform_input)(row, column, channel, v + (long)t * in_channels + channel, v_xi);
    }
}

// One block: input transform of its tiles into v (16 × tiles × in_channels), then per panel
// of output channels the 16 products into m (16 × tiles × panel) and their output transform.
__attribute__((target(ISA_TARGET)))
static void ISA_FN(winograd_block)(const float *input, int height, int width, int in_channels, const float *packed,
                                   int out_channels, float *out, int accumulate, long first_tile, int tiles,
                                   float *scratch) {
    const int panel = 2 * LANES;
    float *v = scratch, *m = scratch + 16L * tiles * in_channels;
    const long v_xi = (long)tiles * in_channels, m_xi = (long)tiles * panel;
    ISA_FN(transform_input_block)(input, height, width, in_channels, first_tile, tiles, v);
    const long panel_floats = 16L * in_channels * panel;
    for (int p = 0; p < out_channels / panel; p++) {
        for (int xi = 0; xi < 16; xi++) {
            const float *u = packed + p * panel_floats + (long)xi * in_channels * panel;
            for (int first = 0; first < tiles; first += ROWS) {
                int rows = tiles - first < ROWS ? tiles - first : ROWS;
                ISA_FN(product_tiles)[rows](v + xi * v_xi + (long)first * in_channels, in_channels, 1, u,
                                            in_channels, m + xi * m_xi + (long)first * panel, 0);
            }
        }
        for (int t = 0; t < tiles; t++) {
            winograd_tile g = tile_at(first_tile + t, height, width);
            long at[2][2];  // where each pixel's panel starts in out
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++)
                    at[a][b] = g.inside[a][b]
                        ? ((g.n * height + g.oy + a) * width + g.ox + b) * out_channels + p * panel : 0;
            for (int h = 0; h < 2; h++) {
                float *half[2][2] = {{out + at[0][0] + h * LANES, out + at[0][1] + h * LANES},
                                     {out + at[1][0] + h * LANES, out + at[1][1] + h * LANES}};
                ISA_FN(transform_output)(m + (long)t * panel + h * LANES, m_xi, half, g.inside, accumulate);
            }
        }
    }
}

// Output-gradient transform of one tile, one vector of channels — the adjoint of
// `transform_output`: dM = A dY Aᵀ from the 2×2 dY at dy[a][b] (null outside the image: zero),
// dM[ξ] to dm + ξ·xi_stride.
__attribute__((target(ISA_TARGET), always_inline))
static inline void ISA_FN(transform_output_gradient)(const float *const dy[2][2], float *dm, long xi_stride) {
    VEC y[2][2];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) y[a][b] = dy[a][b] ? VEC_LOAD(dy[a][b]) : VEC_ZERO();
    VEC r[4][2];  // A dY
    for (int b = 0; b < 2; b++) {
        r[0][b] = y[0][b];
        r[1][b] = VEC_ADD(y[0][b], y[1][b]);
        r[2][b] = VEC_SUB(y[0][b], y[1][b]);
        r[3][b] = VEC_SUB(VEC_ZERO(), y[1][b]);
    }
    for (int i = 0; i < 4; i++) {  // (A dY) Aᵀ
        VEC_STORE(dm + (i * 4 + 0) * xi_stride, r[i][0]);
        VEC_STORE(dm + (i * 4 + 1) * xi_stride, VEC_ADD(r[i][0], r[i][1]));
        VEC_STORE(dm + (i * 4 + 2) * xi_stride, VEC_SUB(r[i][0], r[i][1]));
        VEC_STORE(dm + (i * 4 + 3) * xi_stride, VEC_SUB(VEC_ZERO(), r[i][1]));
    }
}

// The transformed weight gradient of output panel p at positions [first_xi, first_xi + xi_count),
// summed over every tile of the batch in order, block by block:
//   du[ξ][ic][j] = Σ_t V[ξ][t, ic] · dM[ξ][t, p·P + j]        (du: 16 × in_channels × panel floats)
// Scratch: the block's V, then its dM (both transforms whole: they cost less than splitting them).
__attribute__((target(ISA_TARGET)))
static void ISA_FN(winograd_gradient_panel)(const float *input, const float *dout, int batch, int height, int width,
                                            int in_channels, int out_channels, int p, int first_xi, int xi_count,
                                            float *du, float *scratch) {
    const int panel = 2 * LANES;
    const long tiles_total = (long)batch * ((height + 1) / 2) * ((width + 1) / 2);
    for (long i = (long)first_xi * in_channels * panel; i < (long)(first_xi + xi_count) * in_channels * panel; i++)
        du[i] = 0;
    float *v = scratch, *dm = scratch + 16L * BLOCK * in_channels;
    for (long first_tile = 0; first_tile < tiles_total; first_tile += BLOCK) {
        int tiles = tiles_total - first_tile < BLOCK ? (int)(tiles_total - first_tile) : BLOCK;
        const long v_xi = (long)tiles * in_channels, dm_xi = (long)tiles * panel;
        ISA_FN(transform_input_block)(input, height, width, in_channels, first_tile, tiles, v);
        for (int t = 0; t < tiles; t++) {
            winograd_tile g = tile_at(first_tile + t, height, width);
            for (int h = 0; h < 2; h++) {
                const float *dy[2][2];
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++)
                        dy[a][b] = g.inside[a][b]
                            ? dout + ((g.n * height + g.oy + a) * width + g.ox + b) * out_channels + p * panel + h * LANES
                            : 0;
                ISA_FN(transform_output_gradient)(dy, dm + (long)t * panel + h * LANES, dm_xi);
            }
        }
        for (int xi = first_xi; xi < first_xi + xi_count; xi++)
            for (int first = 0; first < in_channels; first += ROWS) {
                int rows = in_channels - first < ROWS ? in_channels - first : ROWS;
                ISA_FN(product_tiles)[rows](v + xi * v_xi + first, 1, in_channels, dm + xi * dm_xi, tiles,
                                            du + ((long)xi * in_channels + first) * panel, 1);
            }
    }
}

static const winograd_set ISA_FN(winograd) = {ROWS, BLOCK, 2 * LANES, ISA_FN(winograd_block),
                                              ISA_FN(winograd_gradient_panel)};

#undef ISA_FN
#undef CAT
#undef CAT_
