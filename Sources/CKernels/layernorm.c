// LayerNorm's per-row loops (see include/layernorm.h), written once on 16-float vectors and
// cloned per instruction set.
#include "layernorm.h"
#include <math.h>
#include <string.h>

#include "cloned.h"

// Multiplies and adds round on their own, as the formulas are written.
#pragma clang fp contract(off)

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

// Vector helpers as macros: a function passing a 16-float vector by value would have a different
// calling convention in each clone, which clang refuses.
#define load16(p) ({ v16 loaded_; memcpy(&loaded_, (p), sizeof loaded_); loaded_; })
#define splat16(x) ((v16){0} + (float)(x))

// The 16 lanes added as a fixed tree: halves, quarters, then the last four in pairs.
#define sum_lanes(v) ({                                                                                         \
    v16 all_ = (v);                                                                                             \
    v8 half_ = __builtin_shufflevector(all_, all_, 0, 1, 2, 3, 4, 5, 6, 7)                                      \
        + __builtin_shufflevector(all_, all_, 8, 9, 10, 11, 12, 13, 14, 15);                                    \
    v4 quarter_ = __builtin_shufflevector(half_, half_, 0, 1, 2, 3) + __builtin_shufflevector(half_, half_, 4, 5, 6, 7); \
    (quarter_[0] + quarter_[2]) + (quarter_[1] + quarter_[3]);                                                  \
})

// Σ_c x[c]
static inline __attribute__((always_inline)) float row_sum(const float *x, long n) {
    v16 acc = {0};
    long c = 0;
    for (; c + 16 <= n; c += 16) acc += load16(x + c);
    float total = sum_lanes(acc);
    for (; c < n; c++) total += x[c];
    return total;
}

// Σ_c (x[c] − μ)²
static inline __attribute__((always_inline)) float row_centred_squares(const float *x, float mu, long n) {
    v16 acc = {0}, m = splat16(mu);
    long c = 0;
    for (; c + 16 <= n; c += 16) {
        v16 d = load16(x + c) - m;
        acc += d * d;
    }
    float total = sum_lanes(acc);
    for (; c < n; c++) total += (x[c] - mu) * (x[c] - mu);
    return total;
}

// Σ_c g[c]·w[c] and Σ_c g[c]·w[c]·((x[c] − μ)·s), w = 1 when NULL.
static inline __attribute__((always_inline)) void row_gradient_sums(const float *g, const float *w, const float *x, float mu, float s,
                                                                   long n, float *sum_dx, float *sum_dx_x) {
    v16 a = {0}, b = {0}, m = splat16(mu), r = splat16(s);
    long c = 0;
    for (; c + 16 <= n; c += 16) {
        v16 dx = w ? load16(g + c) * load16(w + c) : load16(g + c);
        a += dx;
        b += dx * ((load16(x + c) - m) * r);
    }
    float total_a = sum_lanes(a), total_b = sum_lanes(b);
    for (; c < n; c++) {
        float dx = w ? g[c] * w[c] : g[c];
        total_a += dx;
        total_b += dx * ((x[c] - mu) * s);
    }
    *sum_dx = total_a;
    *sum_dx_x = total_b;
}

CLONED void kaleido_layernorm_forward(float *output, float *mean, float *rstd, const float *input, const float *weight,
                                      const float *bias, long rows, long channels, float epsilon) {
    for (long m = 0; m < rows; m++) {
        const float *x = input + m * channels;
        float *out = output + m * channels;
        float mu = row_sum(x, channels) / (float)channels;
        // A second pass over centred values: the one-pass E[x²] − μ² cancels badly.
        float s = 1 / sqrtf(row_centred_squares(x, mu, channels) / (float)channels + epsilon);
        // Explicit vectors: at 48 channels a loop left to the vectoriser spent more on its
        // alias checks and remainders than on the arithmetic.
        const v16 m16 = splat16(mu), s16 = splat16(s), one = splat16(1), zero = {0};
        long c = 0;
        for (; c + 16 <= channels; c += 16) {
            v16 y = (load16(x + c) - m16) * s16 * (weight ? load16(weight + c) : one) + (bias ? load16(bias + c) : zero);
            memcpy(out + c, &y, sizeof y);
        }
        for (; c < channels; c++) out[c] = (x[c] - mu) * s * (weight ? weight[c] : 1) + (bias ? bias[c] : 0);
        mean[m] = mu;
        rstd[m] = s;
    }
}

CLONED void kaleido_layernorm_input_gradient(float *d_input, const float *d_output, const float *input, const float *weight,
                                             const float *mean, const float *rstd, long rows, long channels) {
    for (long m = 0; m < rows; m++) {
        const float *x = input + m * channels, *g = d_output + m * channels;
        float *dx = d_input + m * channels;
        float mu = mean[m], s = rstd[m], sum_dx, sum_dx_x;
        row_gradient_sums(g, weight, x, mu, s, channels, &sum_dx, &sum_dx_x);
        float mean_dx = sum_dx / (float)channels, mean_dx_x = sum_dx_x / (float)channels;
        const v16 m16 = splat16(mu), s16 = splat16(s), one = splat16(1);
        const v16 mean_dx16 = splat16(mean_dx), mean_dx_x16 = splat16(mean_dx_x);
        long c = 0;
        for (; c + 16 <= channels; c += 16) {
            v16 y = s16 * (load16(g + c) * (weight ? load16(weight + c) : one) - mean_dx16 - (load16(x + c) - m16) * s16 * mean_dx_x16);
            memcpy(dx + c, &y, sizeof y);
        }
        for (; c < channels; c++) dx[c] = s * (g[c] * (weight ? weight[c] : 1) - mean_dx - (x[c] - mu) * s * mean_dx_x);
    }
}
