#ifndef KALEIDO_ELEMENTWISE_H
#define KALEIDO_ELEMENTWISE_H

/// Element-wise loops of KaleidoTensor's `Add`, `ReLU`, `Scale` and drop path, over `count`
/// floats (or rows × channels). Each writes element i from element i of its inputs only, so the
/// output may be one of the inputs itself: a backward pass writes an input gradient over the
/// output gradient it consumes (`Layer.backward(consuming:)`), and the forward ReLU runs in place.
/// A loop the compiler vectorises on its own checks at run time that output and inputs do not
/// overlap, and runs its scalar version when they are the same array; these loops are marked
/// safe instead. Compiled three times (AVX-512F, x86-64-v3, baseline), the widest the CPU runs
/// picked when the program loads; no fused multiply-adds, so every clone gives the same bits.
///
///   kaleido_add:             out = a + b, or max(a + b, 0) with relu (NaN stays NaN, as Swift's max)
///   kaleido_relu:            out = max(x, 0)
///   kaleido_relu_backward:   dinp = dout where x > 0, else 0
///   kaleido_scale_channels:  out[m, c] = x[m, c] · scale[c]
///   kaleido_scale_add:       out = (accumulate ? out : 0) + x · factor

#ifdef __cplusplus
extern "C" {
#endif

void kaleido_add(float *output, const float *a, const float *b, long count, int relu);
void kaleido_relu(float *output, const float *input, long count);
void kaleido_relu_backward(float *d_input, const float *d_output, const float *input, long count);
void kaleido_scale_channels(float *output, const float *input, const float *scale, long rows, long channels);
void kaleido_scale_add(float *output, const float *input, float factor, long count, int accumulate);

#ifdef __cplusplus
}
#endif

#endif
