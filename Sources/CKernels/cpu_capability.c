// The instruction-set cap every kernel dispatcher asks (see include/cpu_capability.h).
#include "cpu_capability.h"
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int kaleido_cpu_capability_detected(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

int kaleido_cpu_capability_request(void) {
    const char *value = getenv("KALEIDO_CPU_CAPABILITY");
    if (value == NULL || value[0] == '\0' || strcasecmp(value, "avx512") == 0) return 2;
    if (strcasecmp(value, "avx2") == 0) return 1;
    if (strcasecmp(value, "default") == 0) return 0;
    return -1;
}

int kaleido_cpu_capability(void) {
    int detected = kaleido_cpu_capability_detected();
    int requested = kaleido_cpu_capability_request();
    if (requested < 0) return detected;
    return requested < detected ? requested : detected;
}
