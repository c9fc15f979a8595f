// Scheduling of the background checkpoint writer's threads. Linux schedules threads one by one,
// addressed by the kernel thread id, which glibc's gettid() and SCHED_IDLE expose only under
// _GNU_SOURCE (unset in Swift's Glibc module), hence the raw syscall numbers. No-ops elsewhere.
#if defined(__linux__)
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
// Lowers the calling thread to SCHED_IDLE (Linux 2.6.23+: it runs only on a core no normal
// thread wants), falling back to nice 19. Returns 1 for SCHED_IDLE, 0 for nice, -1 for neither.
static inline int kaleido_make_thread_idle_priority(void) {
    struct sched_param param = { 0 };
    long tid = syscall(SYS_gettid);
    if (syscall(SYS_sched_setscheduler, tid, 5 /* SCHED_IDLE */, &param) == 0) return 1;
    return setpriority(PRIO_PROCESS, (id_t)tid, 19) == 0 ? 0 : -1;
}
#else
static inline int kaleido_make_thread_idle_priority(void) { return -1; }
#endif
