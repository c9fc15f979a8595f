// CRC-32C with the CPU's own instruction where there is one. SSE 4.2's crc32 (x86-64, 2008 on)
// and ARMv8's crc32c compute exactly the Castagnoli CRC, 8 bytes per instruction: 5.5–6 GB/s on
// one core in one chain, twice that in three (below, x86-64), several times the table method.
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

// The instruction's latency is three cycles and it issues every cycle, so one dependent chain
// uses a third of it. Three lanes of KALEIDO_CRC32C_LANE bytes run side by side, and their
// registers are joined by the linear map "append LANE zero bytes": reg(r, A‖B) =
// shift(r) ⊕ reg(0, B). `shift_table[k·256 + b]` is that map applied to byte b at position k of
// the register (built by `CRC32C.laneShiftTable`). One thread of the Xeon of BENCHMARKS.md:
// 5.5–6.2 GB/s with one chain, 12.4–12.7 GB/s with three.
#define KALEIDO_CRC32C_LANE 8192

static inline uint32_t kaleido_crc32c_shift(const uint32_t *shift_table, uint32_t crc) {
    return shift_table[crc & 0xff] ^ shift_table[256 + ((crc >> 8) & 0xff)] ^
           shift_table[512 + ((crc >> 16) & 0xff)] ^ shift_table[768 + (crc >> 24)];
}

__attribute__((target("sse4.2")))
static inline uint32_t kaleido_crc32c_update_3way(uint32_t crc, const unsigned char *p, size_t n,
                                                  const uint32_t *shift_table) {
    const size_t lane = KALEIDO_CRC32C_LANE;
    while (n >= 3 * lane) {
        uint64_t c0 = crc, c1 = 0, c2 = 0;
        const unsigned char *end = p + lane;
        do {
            uint64_t w0, w1, w2;
            memcpy(&w0, p, 8);
            memcpy(&w1, p + lane, 8);
            memcpy(&w2, p + 2 * lane, 8);
            c0 = __builtin_ia32_crc32di(c0, w0);
            c1 = __builtin_ia32_crc32di(c1, w1);
            c2 = __builtin_ia32_crc32di(c2, w2);
            p += 8;
        } while (p < end);
        crc = kaleido_crc32c_shift(shift_table, (uint32_t)c0) ^ (uint32_t)c1;
        crc = kaleido_crc32c_shift(shift_table, crc) ^ (uint32_t)c2;
        p += 2 * lane;
        n -= 3 * lane;
    }
    return kaleido_crc32c_update(crc, p, n);
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

#if !defined(__x86_64__)
#define KALEIDO_CRC32C_LANE 8192
static inline uint32_t kaleido_crc32c_update_3way(uint32_t crc, const unsigned char *p, size_t n,
                                                  const uint32_t *shift_table) {
    (void)shift_table;
    return kaleido_crc32c_update(crc, p, n);
}
#endif
