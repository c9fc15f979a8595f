// Copies whose destination nothing reads soon: a background save's staging copy (the training
// state into the staging buffer, at the step boundary, while training waits), and a shard's
// frames into the direct-I/O buffers, which only the disk reads.
//
// The staging copy is far larger than the caches (410 MB for ResNet-50 + AdamW at one rank), and nothing
// reads the destination until the save's codec does, long after. A plain memcpy of pieces this
// size writes through the caches: every destination line is first read from memory (read for
// ownership), then evicted, and it flushes the training's working set on the way. Non-temporal
// stores skip both: on the Zen 4 of BENCHMARKS.md one thread copied 377 MB in 19–21 ms this way
// against 33–35 ms with memcpy (two threads: the same; the copy is bound by the memory bus).
//
//   copy:  destination[i] = source[i]  for i < bytes
//
// Header-only, like crc32c.h, so the system-library target needs no C compilation step.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

// Streams whole 32-byte lines once the destination is aligned; the head and tail go by memcpy.
__attribute__((target("avx2")))
static inline void kaleido_copy_streaming_avx2(uint8_t *destination, const uint8_t *source, size_t bytes) {
    size_t head = (32 - ((uintptr_t)destination & 31)) & 31;
    if (head > bytes) head = bytes;
    memcpy(destination, source, head);
    size_t i = head;
    for (; i + 128 <= bytes; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(source + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(source + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(source + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(source + i + 96));
        _mm256_stream_si256((__m256i *)(destination + i), a);
        _mm256_stream_si256((__m256i *)(destination + i + 32), b);
        _mm256_stream_si256((__m256i *)(destination + i + 64), c);
        _mm256_stream_si256((__m256i *)(destination + i + 96), d);
    }
    memcpy(destination + i, source + i, bytes - i);
    // Non-temporal stores are weakly ordered: make them visible before the caller hands the
    // buffer to another thread.
    _mm_sfence();
}
#endif

static inline void kaleido_copy_streaming(void *destination, const void *source, size_t bytes) {
#if defined(__x86_64__)
    // Below a few pages the read-for-ownership saving is lost in the fence.
    if (bytes >= (64 << 10) && __builtin_cpu_supports("avx2")) {
        kaleido_copy_streaming_avx2((uint8_t *)destination, (const uint8_t *)source, bytes);
        return;
    }
#endif
    memcpy(destination, source, bytes);
}
