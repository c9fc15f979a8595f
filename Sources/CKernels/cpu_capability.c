// The instruction-set cap every kernel dispatcher asks (see include/cpu_capability.h).
#include "cpu_capability.h"

// Set once at startup, before any thread runs a kernel; read by the dispatchers afterwards.
static int capability_cap = 2;

int kaleido_cpu_capability_detected(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

void kaleido_cpu_capability_set_cap(int cap) { capability_cap = cap < 0 ? 0 : cap > 2 ? 2 : cap; }

int kaleido_cpu_capability(void) {
    int detected = kaleido_cpu_capability_detected();
    return capability_cap < detected ? capability_cap : detected;
}
