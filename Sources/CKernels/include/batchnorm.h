#ifndef KALEIDO_BATCHNORM_H
#define KALEIDO_BATCHNORM_H

/// BatchNorm's passes over channels-last activations x (rows, channels), the per-element work of
/// KaleidoTensor's `BatchNorm` (which forms the per-channel factors and splits rows over threads):
///
///   sums:            S1[c] += Σ_m (x − k),  S2[c] += Σ_m (x − k)²       (Float64, k per channel)
///   normalize:       out = (x − μ)·scale + shift (+ r),  max(out, 0) with relu
///   gradient sums:   G[c] += Σ_m g,  H[c] += Σ_m g·(x − μ)              (Float64)
///   input gradient:  dinp = a·g − b − k·(x − μ)                         (written)
///
/// where g = dout, or with relu g = dout where (x − μ)·scale + shift (+ r) > 0, else 0: the ReLU's
/// mask is recomputed from x with the forward's own arithmetic instead of read from the output,
/// one activation-sized stream fewer in each backward pass. r, the addend, is a residual block's
/// shortcut: its sum and ReLU run in the normalisation's pass (out = relu(BN(x) + shortcut)), and
/// the gradient sums can write the masked g — the gradient of the sum, which the shortcut's
/// backward needs too. The Float64 sums keep each channel's
/// running sum in a register while the rows go by in order; products of two floats are exact in
/// Float64. Every loop runs on 16-float vectors with no fused multiply-adds, so every clone
/// (AVX-512F, x86-64-v3, baseline, picked when the program loads) gives the same bits.

#ifdef __cplusplus
extern "C" {
#endif

/// shift may be NULL (k = 0); square_sums may be NULL (S2 not wanted).
void kaleido_batchnorm_sums(double *sums, double *square_sums, const float *input, const float *shift, long rows,
                            long channels);

/// addend (rows, channels) may be NULL; output may be input or addend (each element is read before
/// it is written).
void kaleido_batchnorm_normalize(float *output, const float *input, const float *addend, const float *mean,
                                 const float *scale, const float *shift, long rows, long channels, int relu);

/// With relu, scale, shift and addend (may be NULL) are the forward's (the mask), and g is also
/// written to masked_d_output when it is not NULL (it may be d_output); without relu, scale,
/// shift, addend and masked_d_output may be NULL and are not read.
void kaleido_batchnorm_gradient_sums(double *sums, double *centred_sums, float *masked_d_output, const float *d_output,
                                     const float *input, const float *addend, const float *mean, const float *scale,
                                     const float *shift, long rows, long channels, int relu);

/// d_input may be d_output or input: each element is read before it is written.
void kaleido_batchnorm_input_gradient(float *d_input, const float *d_output, const float *input, const float *mean,
                                      const float *a, const float *b, const float *k, const float *scale,
                                      const float *shift, long rows, long channels, int relu);

#ifdef __cplusplus
}
#endif

#endif
