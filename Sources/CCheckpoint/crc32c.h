// CRC-32C with the CPU's own instruction where there is one. SSE 4.2's crc32 (x86-64, 2008 on)
// and ARMv8's crc32c compute exactly the Castagnoli CRC, 8 bytes per instruction: about 8 GB/s
// on one core, five times the table method, so checksumming a shard no longer shows in a save.
// Header-only, so the system-library target needs no C compilation step.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>

static inline int kaleido_crc32c_hardware(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    return (ecx & bit_SSE4_2) != 0;
}

// Takes and returns the CRC register before final inversion (the caller inverts once).
__attribute__((target("sse4.2")))
static inline uint32_t kaleido_crc32c_update(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
        p++;
        n--;
    }
    return c32;
}

#elif defined(__aarch64__)

static inline int kaleido_crc32c_hardware(void) {
#if defined(__ARM_FEATURE_CRC32)
    return 1;
#else
    return 0;
#endif
}

#if defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
static inline uint32_t kaleido_crc32c_update(uint32_t crc, const unsigned char *p, size_t n) {
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        crc = __crc32cd(crc, word);
        p += 8;
        n -= 8;
    }
    while (n > 0) { crc = __crc32cb(crc, *p); p++; n--; }
    return crc;
}
#else
static inline uint32_t kaleido_crc32c_update(uint32_t crc, const unsigned char *p, size_t n) { (void)p; (void)n; return crc; }
#endif

#else

static inline int kaleido_crc32c_hardware(void) { return 0; }
static inline uint32_t kaleido_crc32c_update(uint32_t crc, const unsigned char *p, size_t n) { (void)p; (void)n; return crc; }

#endif
