// AVX-512 loops of the depthwise convolution (see include/depthwise.h). The correlation mirrors
// the Swift `Correlation` in DepthwiseConv2D.swift lane for lane, only the register width
// differs; the weight gradient's row pass has its own order of sums.
#include "depthwise.h"
#include "cpu_capability.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f")))
#define INLINE __attribute__((target("avx512f"), always_inline)) static inline

// Lanes of the 16-channel group starting at c0 that exist.
INLINE __mmask16 lanes(int c0, int channels) {
    int left = channels - c0;
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

INLINE __m512 load(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }

// start (or 0), plus the destination when accumulating: the Swift `initial`, in that order.
INLINE __m512 initial(const float *destination, const float *start, int accumulate, __mmask16 m) {
    __m512 value = start ? load(start, m) : _mm512_setzero_ps();
    if (accumulate) value = _mm512_add_ps(value, load(destination, m));
    return value;
}

// The kernel taps k of output index `index` whose padded input index index·s + k lies inside
// the image rather than on the padding: [*first, *last).
INLINE void taps(int index, int size, int padding, int stride, int kernel, int *first, int *last) {
    int base = index * stride;
    int low = padding - base > 0 ? padding - base : 0;
    int high = kernel < size + padding - base ? kernel : size + padding - base;
    *first = low;
    *last = high > low ? high : low;
}

// P adjacent output pixels (8 or 4) × 16 channels, one chain per pixel over every tap of the
// rows inside the image.
INLINE void tile(const int P, float *destination, const float *source, const float *filter, int row_first, int row_last,
                 const float *start, int accumulate, long row_floats, long step, int kernel, int channels, __mmask16 m) {
    __m512 acc[8];
#pragma clang loop unroll(full)
    for (int p = 0; p < P; p++) acc[p] = initial(destination + (long)p * channels, start, accumulate, m);
    for (int kh = row_first; kh < row_last; kh++) {
        const float *row = source + kh * row_floats;
        const float *tap_weights = filter + (long)kh * kernel * channels;
        for (int kw = 0; kw < kernel; kw++) {
            __m512 w = load(tap_weights + (long)kw * channels, m);
            const float *p0 = row + (long)kw * channels;
#pragma clang loop unroll(full)
            for (int p = 0; p < P; p++) acc[p] = _mm512_fmadd_ps(load(p0 + p * step, m), w, acc[p]);
        }
    }
#pragma clang loop unroll(full)
    for (int p = 0; p < P; p++) _mm512_mask_storeu_ps(destination + (long)p * channels, m, acc[p]);
}

// One output pixel × 16 channels over the taps inside the image; even and odd kernel rows in
// separate sums, added at the end.
INLINE void pixel(float *destination, const float *source, const float *filter, int row_first, int row_last,
                  int column_first, int column_last, const float *start, int accumulate, long row_floats, int kernel,
                  int channels, __mmask16 m) {
    __m512 even = initial(destination, start, accumulate, m), odd = _mm512_setzero_ps();
    for (int kh = row_first; kh < row_last; kh++) {
        for (int kw = column_first; kw < column_last; kw++) {
            __m512 product_a = load(source + kh * row_floats + (long)kw * channels, m);
            __m512 product_b = load(filter + ((long)kh * kernel + kw) * channels, m);
            if ((kh & 1) == 0) even = _mm512_fmadd_ps(product_a, product_b, even);
            else odd = _mm512_fmadd_ps(product_a, product_b, odd);
        }
    }
    _mm512_mask_storeu_ps(destination, m, _mm512_add_ps(even, odd));
}

TARGET void kaleido_depthwise_correlate_avx512(const float *padded, const float *weight, const float *start, int accumulate,
                                               float *output, int height, int width, int padding, int stride,
                                               int out_height, int out_width, int kernel, int channels) {
    const long c = channels, row_floats = (long)(width + 2 * padding) * c, step = (long)stride * c;
    for (int oh = 0; oh < out_height; oh++) {
        float *out_row = output + (long)oh * out_width * c;
        const float *top = padded + (long)oh * stride * row_floats;
        int row_first, row_last;
        taps(oh, height, padding, stride, kernel, &row_first, &row_last);
        for (int ow = 0; ow < out_width;) {
            int pixels = out_width - ow < 8 ? out_width - ow : 8;
            for (int c0 = 0; c0 < channels; c0 += 16) {
                __mmask16 m = lanes(c0, channels);
                float *destination = out_row + ow * c + c0;
                const float *source = top + ow * step + c0, *filter = weight + c0;
                const float *bias = start ? start + c0 : 0;
                int first_single = 0;
                if (pixels == 8) {
                    tile(8, destination, source, filter, row_first, row_last, bias, accumulate, row_floats, step, kernel, channels, m);
                    first_single = 8;
                } else if (pixels >= 4) {
                    tile(4, destination, source, filter, row_first, row_last, bias, accumulate, row_floats, step, kernel, channels, m);
                    first_single = 4;
                }
                for (int p = first_single; p < pixels; p++) {
                    int column_first, column_last;
                    taps(ow + p, width, padding, stride, kernel, &column_first, &column_last);
                    pixel(destination + p * c, source + p * step, filter, row_first, row_last, column_first, column_last,
                          bias, accumulate, row_floats, kernel, channels, m);
                }
            }
            ow += pixels;
        }
    }
}

// K taps (a compile-time constant in each instantiation, so the sums stay in registers).
INLINE void weight_gradient_row(const int K, float *partial, const float *input_row, const float *gradient_row,
                                int out_width, long step, long channels) {
    for (long c0 = 0; c0 < channels; c0 += 16) {
        __mmask16 m = lanes((int)c0, (int)channels);
        __m512 acc[7];
#pragma clang loop unroll(full)
        for (int kw = 0; kw < K; kw++) acc[kw] = _mm512_setzero_ps();
        for (int ow = 0; ow < out_width; ow++) {
            __m512 g = load(gradient_row + ow * channels + c0, m);
            const float *x = input_row + ow * step + c0;
#pragma clang loop unroll(full)
            for (int kw = 0; kw < K; kw++) acc[kw] = _mm512_fmadd_ps(load(x + kw * channels, m), g, acc[kw]);
        }
#pragma clang loop unroll(full)
        for (int kw = 0; kw < K; kw++) {
            float *target = partial + kw * channels + c0;
            _mm512_mask_storeu_ps(target, m, _mm512_add_ps(load(target, m), acc[kw]));
        }
    }
}

TARGET void kaleido_depthwise_weight_gradient_row_avx512(float *partial, const float *input_row, const float *gradient_row,
                                                         int out_width, int stride, int kernel, int channels) {
    const long step = (long)stride * channels;
    switch (kernel) {
    case 7: weight_gradient_row(7, partial, input_row, gradient_row, out_width, step, channels); break;
    case 5: weight_gradient_row(5, partial, input_row, gradient_row, out_width, step, channels); break;
    case 3: weight_gradient_row(3, partial, input_row, gradient_row, out_width, step, channels); break;
    default:
        // Other kernel sizes one tap at a time.
        for (int kw = 0; kw < kernel; kw++)
            weight_gradient_row(1, partial + (long)kw * channels, input_row + (long)kw * channels, gradient_row, out_width, step, channels);
    }
}

int kaleido_depthwise_avx512_available(void) {
    return kaleido_cpu_capability() >= 2;
}

#else
int kaleido_depthwise_avx512_available(void) { return 0; }
void kaleido_depthwise_correlate_avx512(const float *padded, const float *weight, const float *start, int accumulate,
                                        float *output, int height, int width, int padding, int stride,
                                        int out_height, int out_width, int kernel, int channels) {}
void kaleido_depthwise_weight_gradient_row_avx512(float *partial, const float *input_row, const float *gradient_row,
                                                  int out_width, int stride, int kernel, int channels) {}
#endif
