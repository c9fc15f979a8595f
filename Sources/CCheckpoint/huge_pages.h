// Buffers a shard is written from with O_DIRECT, on 2 MiB pages where the kernel has them.
//
// A direct write hands the block layer the buffer's physical pages. In 4 KiB pages a 4 MiB write
// is 1024 segments, and a virtio disk taking 254 segments per request splits it into five or six
// requests, each a round trip to the host and an interrupt on a core that is training. On 2 MiB
// pages it is two segments and one request: on the Zen 4 VM of BENCHMARKS.md, 300 MiB written
// this way took 80 disk interrupts instead of 605, and 0.08–0.09 s instead of 0.13–0.14.
// Transparent huge pages are commonly enabled only for memory that asks (`madvise` mode), hence
// the advice; without them the buffer is ordinary memory and everything works as before.
//
// Header-only, like crc32c.h, so the system-library target needs no C compilation step.
#include <stddef.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

enum { KALEIDO_HUGE_PAGE_BYTES = 2 << 20 };

// `bytes` of memory aligned to 2 MiB and advised for huge pages; NULL when out of memory.
// Free with free().
static inline void *kaleido_allocate_huge_pages(size_t bytes) {
    void *memory = NULL;
    if (posix_memalign(&memory, KALEIDO_HUGE_PAGE_BYTES, bytes) != 0) return NULL;
#if defined(__linux__)
#if defined(MADV_HUGEPAGE)
    (void)madvise(memory, bytes, MADV_HUGEPAGE);   // only advice: refused, the pages are small
#else
    (void)madvise(memory, bytes, 14 /* MADV_HUGEPAGE */);
#endif
#endif
    return memory;
}
