// Lowers the calling thread's scheduling priority (Linux nice values are per thread, addressed
// by the kernel thread id, which glibc's gettid() exposes only under _GNU_SOURCE, unset in
// Swift's Glibc module). Returns 0 on success; a no-op elsewhere.
#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
static inline int kaleido_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}
#else
static inline int kaleido_set_thread_nice(int nice) { (void)nice; return 0; }
#endif
