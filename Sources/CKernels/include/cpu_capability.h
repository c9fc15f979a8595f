#ifndef KALEIDO_CPU_CAPABILITY_H
#define KALEIDO_CPU_CAPABILITY_H

/// The widest vector instructions Kaleido's own kernels may use, as every kernel family's
/// dispatcher asks it (direct and Winograd 3×3 convolutions, depthwise, packed and small
/// products): 2 for AVX-512F, 1 for AVX2 with FMA, 0 for the plain loops.
///
/// It is what this CPU runs, lowered by a cap the program sets once at startup, before any
/// kernel is chosen (the CLI sets it from KALEIDO_CPU_CAPABILITY, as PyTorch reads
/// ATEN_CPU_CAPABILITY): one binary then runs and measures its AVX2 kernels on an AVX-512 CPU.
/// A cap above the CPU is no cap. The loops built with target_clones (elementwise, activations,
/// norms) are chosen by the program loader from the CPU alone; they are memory-bound and give the
/// same bits in every clone.

#ifdef __cplusplus
extern "C" {
#endif

/// What this CPU runs: 2 (AVX-512F), 1 (AVX2 + FMA) or 0.
int kaleido_cpu_capability_detected(void);

/// Lowers what the kernels use to `cap` (2, 1 or 0; 2 when never called). Call before the first
/// kernel runs: dispatchers that have chosen keep their choice.
void kaleido_cpu_capability_set_cap(int cap);

/// min(detected, cap).
int kaleido_cpu_capability(void);

#ifdef __cplusplus
}
#endif

#endif
