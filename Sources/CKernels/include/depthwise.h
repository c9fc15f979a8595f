#ifndef KALEIDO_DEPTHWISE_H
#define KALEIDO_DEPTHWISE_H

/// AVX-512 inner loops of the depthwise K×K convolution over channels-last images (ConvNeXt's
/// 7×7): 16 channels per register where the Swift loops (built for x86-64-v3) hold 8. Every
/// output lane of the correlation is the same chain of fused multiply-adds in the same order as
/// the Swift `Correlation`, so for channel counts that are multiples of 8 both give the same
/// bits; channels past the last multiple of 8 are masked lanes here and scalar sums there. The
/// weight gradient sums in another order than the Swift loop (below).

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when this CPU runs the AVX-512F loops below, else 0 (then they must not be called).
int kaleido_depthwise_avx512_available(void);

/// One image's correlation over a zero-padded copy `padded` ((height + 2·padding) rows of
/// `padded_width` pixels × `channels`):
///   out[oh,ow,c] (= or += when `accumulate`) start[c] + Σ_{kh,kw} padded[oh·s+kh, ow·s+kw, c] · W[kh,kw,c]
/// `start` may be NULL (zero). Kernel rows, and for single pixels columns, that fall on the
/// padding are skipped, as the Swift loop does.
void kaleido_depthwise_correlate_avx512(const float *padded, const float *weight, const float *start, int accumulate,
                                        float *output, int height, int width, int padding, int stride,
                                        int out_height, int out_width, int kernel, int channels);

/// One kernel row's weight gradient from one row of output pixels:
///   partial[kw, c] += Σ_{ow < out_width} input_row[ow·stride + kw, c] · gradient_row[ow, c]   for kw < kernel
/// `input_row` is a zero-padded input row (taps on the padding add zero products), `partial`
/// the K×C slab of kernel row kh. Each (kw, 16 channels) is one register summing the pixels in
/// order, all K of them in flight, so each gradient vector loaded feeds K multiply-adds (the
/// Swift loop reloads it per tap). The sums are ordered differently from the Swift loop's.
void kaleido_depthwise_weight_gradient_row_avx512(float *partial, const float *input_row, const float *gradient_row,
                                                  int out_width, int stride, int kernel, int channels);

#ifdef __cplusplus
}
#endif

#endif
