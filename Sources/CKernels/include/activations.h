#ifndef KALEIDO_ACTIVATIONS_H
#define KALEIDO_ACTIVATIONS_H

/// Exact GELU (PyTorch's default `nn.GELU()`), forward and backward side by side:
///
///   out  = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))
///   din += dout · (Φ(x) + x · φ(x)),   φ(x) = exp(−x²/2) / √(2π)
///
/// over `count` floats of any shape. erf and exp are the branch-free polynomials of Kaleido's
/// `VectorMath` (Swift), evaluated in the same order with no fused multiply-adds, so every
/// instruction set gives the same bits as the Swift code and as each other. The loops are
/// compiled three times (AVX-512F, x86-64-v3 with AVX2, baseline) and the widest one this CPU
/// runs is picked when the program loads: 16 lanes where a Swift loop built for x86-64-v3 has 8.

#ifdef __cplusplus
extern "C" {
#endif

void kaleido_gelu_forward(float *output, const float *input, long count);
void kaleido_gelu_backward(float *d_input, const float *d_output, const float *input, long count);

/// Window attention's softmax, one set and head, in place over its (rows, rows) scores S:
///
///   S += bias + mask   (either may be null: it adds nothing)
///   S[r, j] = exp(S[r, j] − max_j S[r, ·]) / Σ_j exp(S[r, j] − max_j S[r, ·])
///
/// A row whose maximum is −∞ (fully masked) becomes zeros. exp is `VectorMath.exp`'s
/// polynomial and the sums go in `Softmax.exponentiate`'s order, so the bits are those of the
/// Swift loops (a test checks it), on every clone.
void kaleido_attention_softmax(float *scores, int rows, const float *bias, const float *mask);

#ifdef __cplusplus
}
#endif

#endif
