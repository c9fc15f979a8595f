#ifndef KALEIDO_LAYERNORM_H
#define KALEIDO_LAYERNORM_H

/// LayerNorm over the last dimension of `rows` rows of `channels` floats, the per-row part of
/// forward and backward (the weight and bias gradients, sums over rows, stay in Swift):
///
///   forward:  μ = mean_c(x), rstd = 1/√(mean_c((x − μ)²) + ε),  out = (x − μ)·rstd·w + b
///   backward: dinp = rstd · (dx̂ − mean_c(dx̂) − x̂ · mean_c(dx̂ · x̂)),  dx̂ = dout·w, x̂ = (x − μ)·rstd (written)
///
/// `weight` and `bias` may be NULL (1 and 0). Each row's sums keep 16 partial sums (one 512-bit
/// register, or two of 256 bits) added in a fixed tree, then the channels past the last multiple
/// of 16 in order, with no fused multiply-adds: every instruction-set clone (AVX-512F, x86-64-v3,
/// baseline, picked when the program loads) gives the same bits, whatever the thread split.

#ifdef __cplusplus
extern "C" {
#endif

void kaleido_layernorm_forward(float *output, float *mean, float *rstd, const float *input, const float *weight,
                               const float *bias, long rows, long channels, float epsilon);

void kaleido_layernorm_input_gradient(float *d_input, const float *d_output, const float *input, const float *weight,
                                      const float *mean, const float *rstd, long rows, long channels);

#ifdef __cplusplus
}
#endif

#endif
