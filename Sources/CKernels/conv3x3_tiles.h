// The register tiles of the direct 3×3 convolution, written once and compiled once per
// instruction set: conv3x3_direct.c defines TILE (pixels, or channels, per tile) and
// GRADIENT_RUN (pixels per run of the weight gradient), then includes vector_isa_avx512.h or
// vector_isa_avx2.h (ISA, ISA_TARGET, VEC, LANES, VEC_LOAD, VEC_STORE, VEC_FMA(a, b, c) =
// a·b + c, VEC_SET1, VEC_ZERO) and this file.
// A panel is two vectors wide (2·LANES output channels). Every tile keeps 2·TILE accumulators,
// two weight (or output-gradient) vectors and one broadcast in registers: 31 of AVX-512's 32,
// 15 of AVX2's 16.

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define ISA_FN(name) CAT(name, ISA)

// Forward, one tile: `pixels` (≤ TILE) output pixels of one class × one panel, the whole K (the
// class's taps × channels) summed in registers:
//   acc[i][h] += in[center_i + offset(tap), c] · panel[tap][c][h·LANES .. (h + 1)·LANES]
__attribute__((target(ISA_TARGET), always_inline))
static inline void ISA_FN(conv_tile)(const float *const *centers, const pixel_class *k, const long *tap_offset,
                                     int channels, const float *weight_panel, float *const *outs, int accumulate,
                                     const int pixels) {
    VEC acc[TILE][2];
    for (int i = 0; i < pixels; i++) {
        acc[i][0] = accumulate ? VEC_LOAD(outs[i]) : VEC_ZERO();
        acc[i][1] = accumulate ? VEC_LOAD(outs[i] + LANES) : VEC_ZERO();
    }
    for (int t = 0; t < k->taps; t++) {
        const float *rows[TILE];
        for (int i = 0; i < pixels; i++) rows[i] = centers[i] + tap_offset[t];
        const float *w = weight_panel + (size_t)k->tap[t] * channels * 2 * LANES;
        for (int c = 0; c < channels; c++) {
            VEC w0 = VEC_LOAD(w + c * 2 * LANES), w1 = VEC_LOAD(w + c * 2 * LANES + LANES);
            for (int i = 0; i < pixels; i++) {
                VEC x = VEC_SET1(rows[i][c]);
                acc[i][0] = VEC_FMA(x, w0, acc[i][0]);
                acc[i][1] = VEC_FMA(x, w1, acc[i][1]);
            }
        }
    }
    for (int i = 0; i < pixels; i++) {
        VEC_STORE(outs[i], acc[i][0]);
        VEC_STORE(outs[i] + LANES, acc[i][1]);
    }
}

// Weight gradient, one tile: `channels` (≤ TILE) input channels of one tap × one panel, summed
// over a run of pixels onto the packed gradient (rows of 2·LANES floats, one per channel):
//   acc[i][h] += in[center_p + in_offset + i] · dout[row_p + dout_offset + h·LANES ..]
__attribute__((target(ISA_TARGET), always_inline))
static inline void ISA_FN(gradient_tile)(const float *const *centers, long in_offset, const float *const *dout_rows,
                                         long dout_offset, long pixels, float *gradient, const int channels) {
    VEC acc[TILE][2];
    for (int i = 0; i < channels; i++) {
        acc[i][0] = VEC_LOAD(gradient + i * 2 * LANES);
        acc[i][1] = VEC_LOAD(gradient + i * 2 * LANES + LANES);
    }
    for (long p = 0; p < pixels; p++) {
        const float *x = centers[p] + in_offset, *d = dout_rows[p] + dout_offset;
        VEC d0 = VEC_LOAD(d), d1 = VEC_LOAD(d + LANES);
        for (int i = 0; i < channels; i++) {
            VEC xi = VEC_SET1(x[i]);
            acc[i][0] = VEC_FMA(xi, d0, acc[i][0]);
            acc[i][1] = VEC_FMA(xi, d1, acc[i][1]);
        }
    }
    for (int i = 0; i < channels; i++) {
        VEC_STORE(gradient + i * 2 * LANES, acc[i][0]);
        VEC_STORE(gradient + i * 2 * LANES + LANES, acc[i][1]);
    }
}

// Both tiles compiled once per size, so every accumulator stays in a register.
#define TILES_OF(m)                                                                                           \
    __attribute__((target(ISA_TARGET), noinline)) static void CAT(ISA_FN(conv_tile), m)(                    \
        const float *const *centers, const pixel_class *k, const long *tap_offset, int channels,              \
        const float *weight_panel, float *const *outs, int accumulate) {                                      \
        ISA_FN(conv_tile)(centers, k, tap_offset, channels, weight_panel, outs, accumulate, m);               \
    }                                                                                                         \
    __attribute__((target(ISA_TARGET), noinline)) static void CAT(ISA_FN(gradient_tile), m)(                \
        const float *const *centers, long in_offset, const float *const *dout_rows, long dout_offset,        \
        long pixels, float *gradient) {                                                                       \
        ISA_FN(gradient_tile)(centers, in_offset, dout_rows, dout_offset, pixels, gradient, m);               \
    }
TILES_OF(1) TILES_OF(2) TILES_OF(3) TILES_OF(4) TILES_OF(5) TILES_OF(6)
#if TILE > 6
TILES_OF(7) TILES_OF(8) TILES_OF(9) TILES_OF(10) TILES_OF(11) TILES_OF(12) TILES_OF(13) TILES_OF(14)
#endif

_Static_assert(GRADIENT_RUN <= gradient_run_pixels, "a weight-gradient run fits the pixel arrays");
static const kernel_set ISA_FN(kernels) = {
    TILE, 2 * LANES, GRADIENT_RUN,
    {0, CAT(ISA_FN(conv_tile), 1), CAT(ISA_FN(conv_tile), 2), CAT(ISA_FN(conv_tile), 3), CAT(ISA_FN(conv_tile), 4),
     CAT(ISA_FN(conv_tile), 5), CAT(ISA_FN(conv_tile), 6),
#if TILE > 6
     CAT(ISA_FN(conv_tile), 7), CAT(ISA_FN(conv_tile), 8), CAT(ISA_FN(conv_tile), 9), CAT(ISA_FN(conv_tile), 10),
     CAT(ISA_FN(conv_tile), 11), CAT(ISA_FN(conv_tile), 12), CAT(ISA_FN(conv_tile), 13), CAT(ISA_FN(conv_tile), 14),
#endif
    },
    {0, CAT(ISA_FN(gradient_tile), 1), CAT(ISA_FN(gradient_tile), 2), CAT(ISA_FN(gradient_tile), 3),
     CAT(ISA_FN(gradient_tile), 4), CAT(ISA_FN(gradient_tile), 5), CAT(ISA_FN(gradient_tile), 6),
#if TILE > 6
     CAT(ISA_FN(gradient_tile), 7), CAT(ISA_FN(gradient_tile), 8), CAT(ISA_FN(gradient_tile), 9),
     CAT(ISA_FN(gradient_tile), 10), CAT(ISA_FN(gradient_tile), 11), CAT(ISA_FN(gradient_tile), 12),
     CAT(ISA_FN(gradient_tile), 13), CAT(ISA_FN(gradient_tile), 14),
#endif
    },
};

#undef TILES_OF
#undef ISA_FN
#undef CAT
#undef CAT_
