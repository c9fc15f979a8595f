// Byte planes of fp32 words for checkpoint shards: plane b holds byte b of every word, so the
// sign/exponent bytes (plane 3) sit together and compress, while the mantissa planes are noise.
//
//   shuffle:   planes[b * stride + i] = byte b of words[i]      for i < count, b < 4
//   unshuffle: words[i] = planes[i] | planes[stride + i] << 8 | … << 24
//
// A save shuffles every float of the state, so this pass is part of what a background save takes
// from training: the scalar loop moved 2.7 GB/s on the Xeon of BENCHMARKS.md, the AVX2 one 9.6.
// AVX2 is picked at run time, so one binary serves AVX2 and older x86-64 CPUs (and ARM, scalar).
// Header-only, like crc32c.h, so the system-library target needs no C compilation step.
#include <stddef.h>
#include <stdint.h>

static inline void kaleido_shuffle_planes4_scalar(const uint32_t *words, size_t count, uint8_t *planes, size_t stride,
                                                  size_t from) {
    for (size_t i = from; i < count; i++) {
        uint32_t w = words[i];
        planes[i] = (uint8_t)w;
        planes[stride + i] = (uint8_t)(w >> 8);
        planes[2 * stride + i] = (uint8_t)(w >> 16);
        planes[3 * stride + i] = (uint8_t)(w >> 24);
    }
}

static inline void kaleido_unshuffle_planes4_scalar(const uint8_t *planes, size_t stride, size_t count, uint32_t *words,
                                                    size_t from) {
    for (size_t i = from; i < count; i++) {
        words[i] = (uint32_t)planes[i] | (uint32_t)planes[stride + i] << 8 | (uint32_t)planes[2 * stride + i] << 16 |
                   (uint32_t)planes[3 * stride + i] << 24;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

// Within each 16-byte lane, a 4 × 4 byte transpose: byte b of word w goes to 4b + w. It is its
// own inverse, so it both groups bytes by plane and puts them back into words.
__attribute__((target("avx2")))
static inline __m256i kaleido_transpose_4x4_bytes(__m256i x) {
    const __m256i transpose = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                               0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm256_shuffle_epi8(x, transpose);
}

// 32 words per iteration. Within each 16-byte lane the transpose groups the bytes by plane;
// a cross-lane dword permute makes each 64-bit quarter one plane's 8 bytes; unpacking the
// quarters of four registers and swapping 128-bit halves gives one 32-byte row per plane.
__attribute__((target("avx2")))
static inline void kaleido_shuffle_planes4_avx2(const uint32_t *words, size_t count, uint8_t *planes, size_t stride) {
    const __m256i quarters = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(words + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(words + i + 8));
        __m256i c = _mm256_loadu_si256((const __m256i *)(words + i + 16));
        __m256i d = _mm256_loadu_si256((const __m256i *)(words + i + 24));
        // quarter q of each register: plane q's bytes of its 8 words
        a = _mm256_permutevar8x32_epi32(kaleido_transpose_4x4_bytes(a), quarters);
        b = _mm256_permutevar8x32_epi32(kaleido_transpose_4x4_bytes(b), quarters);
        c = _mm256_permutevar8x32_epi32(kaleido_transpose_4x4_bytes(c), quarters);
        d = _mm256_permutevar8x32_epi32(kaleido_transpose_4x4_bytes(d), quarters);
        __m256i ab02 = _mm256_unpacklo_epi64(a, b), ab13 = _mm256_unpackhi_epi64(a, b);
        __m256i cd02 = _mm256_unpacklo_epi64(c, d), cd13 = _mm256_unpackhi_epi64(c, d);
        _mm256_storeu_si256((__m256i *)(planes + i), _mm256_permute2x128_si256(ab02, cd02, 0x20));
        _mm256_storeu_si256((__m256i *)(planes + stride + i), _mm256_permute2x128_si256(ab13, cd13, 0x20));
        _mm256_storeu_si256((__m256i *)(planes + 2 * stride + i), _mm256_permute2x128_si256(ab02, cd02, 0x31));
        _mm256_storeu_si256((__m256i *)(planes + 3 * stride + i), _mm256_permute2x128_si256(ab13, cd13, 0x31));
    }
    kaleido_shuffle_planes4_scalar(words, count, planes, stride, i);
}

// The inverse, step by step backwards: rows of 32 bytes per plane → 64-bit quarters → words.
__attribute__((target("avx2")))
static inline void kaleido_unshuffle_planes4_avx2(const uint8_t *planes, size_t stride, size_t count, uint32_t *words) {
    const __m256i halves = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    size_t i = 0;
    for (; i + 32 <= count; i += 32) {
        __m256i p0 = _mm256_loadu_si256((const __m256i *)(planes + i));
        __m256i p1 = _mm256_loadu_si256((const __m256i *)(planes + stride + i));
        __m256i p2 = _mm256_loadu_si256((const __m256i *)(planes + 2 * stride + i));
        __m256i p3 = _mm256_loadu_si256((const __m256i *)(planes + 3 * stride + i));
        __m256i ab02 = _mm256_permute2x128_si256(p0, p2, 0x20), cd02 = _mm256_permute2x128_si256(p0, p2, 0x31);
        __m256i ab13 = _mm256_permute2x128_si256(p1, p3, 0x20), cd13 = _mm256_permute2x128_si256(p1, p3, 0x31);
        __m256i a = _mm256_unpacklo_epi64(ab02, ab13), b = _mm256_unpackhi_epi64(ab02, ab13);
        __m256i c = _mm256_unpacklo_epi64(cd02, cd13), d = _mm256_unpackhi_epi64(cd02, cd13);
        // each register now holds its 8 words' planes as quarters; undo the permute, then the transpose
        a = kaleido_transpose_4x4_bytes(_mm256_permutevar8x32_epi32(a, halves));
        b = kaleido_transpose_4x4_bytes(_mm256_permutevar8x32_epi32(b, halves));
        c = kaleido_transpose_4x4_bytes(_mm256_permutevar8x32_epi32(c, halves));
        d = kaleido_transpose_4x4_bytes(_mm256_permutevar8x32_epi32(d, halves));
        _mm256_storeu_si256((__m256i *)(words + i), a);
        _mm256_storeu_si256((__m256i *)(words + i + 8), b);
        _mm256_storeu_si256((__m256i *)(words + i + 16), c);
        _mm256_storeu_si256((__m256i *)(words + i + 24), d);
    }
    kaleido_unshuffle_planes4_scalar(planes, stride, count, words, i);
}

static inline int kaleido_byte_shuffle_has_avx2(void) { return __builtin_cpu_supports("avx2"); }
#endif

static inline void kaleido_shuffle_planes4(const uint32_t *words, size_t count, uint8_t *planes, size_t stride) {
#if defined(__x86_64__)
    if (kaleido_byte_shuffle_has_avx2()) { kaleido_shuffle_planes4_avx2(words, count, planes, stride); return; }
#endif
    kaleido_shuffle_planes4_scalar(words, count, planes, stride, 0);
}

static inline void kaleido_unshuffle_planes4(const uint8_t *planes, size_t stride, size_t count, uint32_t *words) {
#if defined(__x86_64__)
    if (kaleido_byte_shuffle_has_avx2()) { kaleido_unshuffle_planes4_avx2(planes, stride, count, words); return; }
#endif
    kaleido_unshuffle_planes4_scalar(planes, stride, count, words, 0);
}
