// Which cores a thread may run on (Linux). glibc's sched_getaffinity, sched_setaffinity and
// sched_getcpu, and their cpu_set_t macros, exist only under _GNU_SOURCE, which Swift's Glibc
// module does not set: hence raw system calls on a plain bit mask. Elsewhere every call fails.
#ifndef KALEIDO_THREAD_AFFINITY_H
#define KALEIDO_THREAD_AFFINITY_H

#include <stdint.h>
#include <string.h>

/// Room for 1024 cores, glibc's CPU_SETSIZE.
#define KALEIDO_CORE_MASK_WORDS 16
typedef struct { uint64_t words[KALEIDO_CORE_MASK_WORDS]; } kaleido_core_mask;

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

/// The calling thread's cores into `mask`; 0 on success.
static inline int kaleido_thread_cores(kaleido_core_mask *mask) {
    memset(mask, 0, sizeof *mask);
    // The raw call returns the bytes of mask the kernel filled (its cpumask size) on success.
    return syscall(SYS_sched_getaffinity, 0, sizeof *mask, mask) > 0 ? 0 : -1;
}

/// Restricts the calling thread to the cores of `mask`; 0 on success. Threads it starts later
/// inherit the mask.
static inline int kaleido_set_thread_cores(const kaleido_core_mask *mask) {
    return syscall(SYS_sched_setaffinity, 0, sizeof *mask, mask) == 0 ? 0 : -1;
}

/// The core the calling thread runs on now, or -1.
static inline int kaleido_current_core(void) {
    unsigned core = 0;
    return syscall(SYS_getcpu, &core, NULL, NULL) == 0 ? (int)core : -1;
}
#else
static inline int kaleido_thread_cores(kaleido_core_mask *mask) { memset(mask, 0, sizeof *mask); return -1; }
static inline int kaleido_set_thread_cores(const kaleido_core_mask *mask) { (void)mask; return -1; }
static inline int kaleido_current_core(void) { return -1; }
#endif

#endif
