#ifndef KALEIDO_DEPTHWISE_H
#define KALEIDO_DEPTHWISE_H

/// AVX-512 inner loops of the depthwise K×K convolution over channels-last images (ConvNeXt's
/// 7×7): 16 channels per register where the Swift loops (built for x86-64-v3) hold 8. Every
/// output lane is the same chain of fused multiply-adds in the same order as the Swift
/// `Correlation` and `DepthwiseConv2D.dotAlongRow`, so for channel counts that are multiples of
/// 8 both give the same bits; channels past the last multiple of 8 are masked lanes here and
/// scalar sums there.

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

/// target[c] += Σ_{j < count} a[j·source_step + c] · b[j·channels + c]: one weight-gradient tap
/// over a row of output pixels, four partial sums per lane.
void kaleido_depthwise_dot_along_row_avx512(float *target, const float *a, const float *b, int count,
                                            long source_step, int channels);

#ifdef __cplusplus
}
#endif

#endif
