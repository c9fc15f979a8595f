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

// The sums go along the rows, as the other passes do: each row's channels add onto the Float64
// sums, which stay in L1 (16 bytes a channel). Going down the rows one 16-channel group at a time
// instead, with the sums in registers, read one cache line per row at a stride of `channels`
// floats, which the prefetchers follow poorly: on a Zen 4 the gradient sums of a ResNet-50 shape
// (50,176 rows × 256 channels, ReLU and addend) took 24–31 ms that way and 11–19 ms this way, and
// were 7 % of the step. Each channel's sum still goes down the rows in order: the same bits.

// S1[c] += Σ_m (x − k), S2[c] += Σ_m (x − k)², the differences and squares in Float64.
CLONED void kaleido_batchnorm_sums(double *sums, double *square_sums, const float *input, const float *shift, long rows,
                                   long channels) {
    for (long m = 0; m < rows; m++) {
        const float *x = input + m * channels;
        long c = 0;
        for (; c + 16 <= channels; c += 16) {
            v16 k = shift ? load16(shift + c) : (v16){0};
            v16 v = load16(x + c);
            v8d d0 = low8d(v) - low8d(k), d1 = high8d(v) - high8d(k);
            store8d(sums + c, load8d(sums + c) + d0);
            store8d(sums + c + 8, load8d(sums + c + 8) + d1);
            if (square_sums) {
                store8d(square_sums + c, load8d(square_sums + c) + d0 * d0);
                store8d(square_sums + c + 8, load8d(square_sums + c + 8) + d1 * d1);
            }
        }
        for (; c < channels; c++) {
            double d = (double)x[c] - (shift ? shift[c] : 0);
            sums[c] += d;
            if (square_sums) square_sums[c] += d * d;
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
// Along the rows, as the sums above.
CLONED void kaleido_batchnorm_gradient_sums(double *sums, double *centred_sums, float *masked_d_output,
                                            const float *d_output, const float *input, const float *addend,
                                            const float *mean, const float *scale, const float *shift, long rows,
                                            long channels, int relu) {
    for (long m = 0; m < rows; m++) {
        long row = m * channels, c = 0;
        for (; c + 16 <= channels; c += 16) {
            long i = row + c;
            v16 centred = load16(input + i) - load16(mean + c);
            v16 g = load16(d_output + i);
            if (relu) {
                v16 out = centred * load16(scale + c) + load16(shift + c);
                if (addend) out = out + load16(addend + i);
                g = where_positive(out, g);
                if (masked_d_output) store16(masked_d_output + i, g);
            }
            v8d gl = low8d(g), gh = high8d(g);
            store8d(sums + c, load8d(sums + c) + gl);
            store8d(sums + c + 8, load8d(sums + c + 8) + gh);
            store8d(centred_sums + c, load8d(centred_sums + c) + gl * low8d(centred));
            store8d(centred_sums + c + 8, load8d(centred_sums + c + 8) + gh * high8d(centred));
        }
        for (; c < channels; c++) {
            long i = row + c;
            float centred = input[i] - mean[c];
            float g = d_output[i];
            if (relu) {
                float out = centred * scale[c] + shift[c];
                if (addend) out = out + addend[i];
                if (!(out > 0)) g = 0;
                if (masked_d_output) masked_d_output[i] = g;
            }
            sums[c] += g;
            centred_sums[c] += (double)g * (double)centred;
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
