// BatchNorm's passes over channels-last activations (see include/batchnorm.h), written once on
// 16-float vectors and cloned per instruction set.
#include "batchnorm.h"
#include <string.h>

#include "cloned.h"

// Multiplies and adds round on their own, as the formulas are written: the backward's ReLU mask
// must recompute the forward's output to the bit.
#pragma clang fp contract(off)

typedef float v16 __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));

// Vector helpers as macros: a function passing a 64-byte vector by value would have a different
// calling convention in each clone, which clang refuses.
#define load16(p) ({ v16 loaded_; memcpy(&loaded_, (p), sizeof loaded_); loaded_; })
#define store16(p, v) do { v16 stored_ = (v); memcpy((p), &stored_, sizeof stored_); } while (0)
#define load8d(p) ({ v8d loaded_; memcpy(&loaded_, (p), sizeof loaded_); loaded_; })
#define store8d(p, v) do { v8d stored_ = (v); memcpy((p), &stored_, sizeof stored_); } while (0)
#define low8d(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 0, 1, 2, 3, 4, 5, 6, 7), v8d)
#define high8d(v) __builtin_convertvector(__builtin_shufflevector((v), (v), 8, 9, 10, 11, 12, 13, 14, 15), v8d)
// v in the lanes where `positive` is greater than zero, +0 elsewhere (the ReLU and its mask).
#define where_positive(positive, v) ((v16)((v16i)(v) & ((positive) > (v16){0})))

// Rows summed per visit of a 16-channel group: the sums go down a tile of rows, then on to the
// next group, so a pass reads each tile's few kilobytes at once instead of one cache line per
// row across the whole block (a stride of `channels` floats over hundreds of kilobytes, which the
// prefetchers follow poorly: the gradient sums were 7 % of a ResNet-50 step, the normalisation,
// row by row, under 1 %). Each channel's sum still goes down the rows in order: the same bits.
#define ROW_TILE 16

// S1[c] += Σ_m (x − k), S2[c] += Σ_m (x − k)², the differences and squares in Float64.
CLONED void kaleido_batchnorm_sums(double *sums, double *square_sums, const float *input, const float *shift, long rows,
                                   long channels) {
    for (long m0 = 0; m0 < rows; m0 += ROW_TILE) {
        long m1 = m0 + ROW_TILE < rows ? m0 + ROW_TILE : rows;
        long c = 0;
        for (; c + 16 <= channels; c += 16) {
            v16 k = shift ? load16(shift + c) : (v16){0};
            v8d k0 = low8d(k), k1 = high8d(k);
            v8d s0 = load8d(sums + c), s1 = load8d(sums + c + 8), q0 = {0}, q1 = {0};
            if (square_sums) {
                q0 = load8d(square_sums + c);
                q1 = load8d(square_sums + c + 8);
            }
            const float *x = input + m0 * channels + c;
            for (long m = m0; m < m1; m++, x += channels) {
                v16 v = load16(x);
                v8d d0 = low8d(v) - k0, d1 = high8d(v) - k1;
                s0 += d0;
                s1 += d1;
                q0 += d0 * d0;
                q1 += d1 * d1;
            }
            store8d(sums + c, s0);
            store8d(sums + c + 8, s1);
            if (square_sums) {
                store8d(square_sums + c, q0);
                store8d(square_sums + c + 8, q1);
            }
        }
        for (; c < channels; c++) {
            double k = shift ? shift[c] : 0, s = sums[c], q = square_sums ? square_sums[c] : 0;
            for (long m = m0; m < m1; m++) {
                double d = (double)input[m * channels + c] - k;
                s += d;
                q += d * d;
            }
            sums[c] = s;
            if (square_sums) square_sums[c] = q;
        }
    }
}

// out = (x − μ)·scale + shift (+ addend), then max(out, 0) with relu.
CLONED void kaleido_batchnorm_normalize(float *output, const float *input, const float *addend, const float *mean,
                                        const float *scale, const float *shift, long rows, long channels, int relu) {
    for (long m = 0; m < rows; m++) {
        const float *x = input + m * channels, *r = addend ? addend + m * channels : NULL;
        float *out = output + m * channels;
        long c = 0;
        for (; c + 16 <= channels; c += 16) {
            v16 v = (load16(x + c) - load16(mean + c)) * load16(scale + c) + load16(shift + c);
            if (r) v = v + load16(r + c);
            store16(out + c, relu ? where_positive(v, v) : v);
        }
        for (; c < channels; c++) {
            float v = (x[c] - mean[c]) * scale[c] + shift[c];
            if (r) v = v + r[c];
            out[c] = relu ? (v > 0 ? v : 0) : v;
        }
    }
}

// G[c] += Σ_m g, H[c] += Σ_m g·(x − μ); g·(x − μ) is formed in Float64, where it is exact.
// Tiles of ROW_TILE rows, as the sums above.
CLONED void kaleido_batchnorm_gradient_sums(double *sums, double *centred_sums, float *masked_d_output,
                                            const float *d_output, const float *input, const float *addend,
                                            const float *mean, const float *scale, const float *shift, long rows,
                                            long channels, int relu) {
    for (long m0 = 0; m0 < rows; m0 += ROW_TILE) {
        long m1 = m0 + ROW_TILE < rows ? m0 + ROW_TILE : rows;
        long c = 0;
        for (; c + 16 <= channels; c += 16) {
            v16 mu = load16(mean + c);
            v16 sc = relu ? load16(scale + c) : (v16){0}, sh = relu ? load16(shift + c) : (v16){0};
            v8d g0 = load8d(sums + c), g1 = load8d(sums + c + 8);
            v8d h0 = load8d(centred_sums + c), h1 = load8d(centred_sums + c + 8);
            for (long m = m0; m < m1; m++) {
                long i = m * channels + c;
                v16 centred = load16(input + i) - mu;
                v16 g = load16(d_output + i);
                if (relu) {
                    v16 out = centred * sc + sh;
                    if (addend) out = out + load16(addend + i);
                    g = where_positive(out, g);
                    if (masked_d_output) store16(masked_d_output + i, g);
                }
                v8d gl = low8d(g), gh = high8d(g);
                g0 += gl;
                g1 += gh;
                h0 += gl * low8d(centred);
                h1 += gh * high8d(centred);
            }
            store8d(sums + c, g0);
            store8d(sums + c + 8, g1);
            store8d(centred_sums + c, h0);
            store8d(centred_sums + c + 8, h1);
        }
        for (; c < channels; c++) {
            double g_sum = sums[c], h_sum = centred_sums[c];
            for (long m = m0; m < m1; m++) {
                long i = m * channels + c;
                float centred = input[i] - mean[c];
                float g = d_output[i];
                if (relu) {
                    float out = centred * scale[c] + shift[c];
                    if (addend) out = out + addend[i];
                    if (!(out > 0)) g = 0;
                    if (masked_d_output) masked_d_output[i] = g;
                }
                g_sum += g;
                h_sum += (double)g * (double)centred;
            }
            sums[c] = g_sum;
            centred_sums[c] = h_sum;
        }
    }
}

// dinp = a·g − b − k·(x − μ), g as in the gradient sums.
CLONED void kaleido_batchnorm_input_gradient(float *d_input, const float *d_output, const float *input,
                                             const float *mean, const float *a, const float *b, const float *k,
                                             const float *scale, const float *shift, long rows, long channels,
                                             int relu) {
    for (long m = 0; m < rows; m++) {
        const float *x = input + m * channels, *dout = d_output + m * channels;
        float *dx = d_input + m * channels;
        long c = 0;
        for (; c + 16 <= channels; c += 16) {
            v16 centred = load16(x + c) - load16(mean + c);
            v16 g = load16(dout + c);
            if (relu) g = where_positive(centred * load16(scale + c) + load16(shift + c), g);
            store16(dx + c, load16(a + c) * g - load16(b + c) - load16(k + c) * centred);
        }
        for (; c < channels; c++) {
            float centred = x[c] - mean[c];
            float g = dout[c];
            if (relu && !(centred * scale[c] + shift[c] > 0)) g = 0;
            dx[c] = a[c] * g - b[c] - k[c] * centred;
        }
    }
}
