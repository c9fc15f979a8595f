#ifndef KALEIDO_CPU_CAPABILITY_H
#define KALEIDO_CPU_CAPABILITY_H

/// The widest vector instructions Kaleido's own kernels may use, as every kernel family's
/// dispatcher asks it (direct and Winograd 3×3 convolutions, depthwise, packed and small
/// products): 2 for AVX-512F, 1 for AVX2 with FMA, 0 for the plain loops.
///
/// It is what this CPU runs, lowered by the environment variable KALEIDO_CPU_CAPABILITY when it
/// names a narrower set (`avx2`, or `default` for the plain loops; `avx512` asks for no cap), as
/// PyTorch's ATEN_CPU_CAPABILITY and oneDNN's ONEDNN_MAX_CPU_ISA do: one binary then runs and
/// measures its AVX2 kernels on an AVX-512 machine. A cap above the CPU is no cap. The loops
/// built with target_clones (elementwise, activations, norms) are chosen by the program loader
/// from the CPU alone; they are memory-bound and give the same bits in every clone.
/// An unknown value is reported by `kaleido_cpu_capability_request` as -1.

#ifdef __cplusplus
extern "C" {
#endif

/// What this CPU runs: 2 (AVX-512F), 1 (AVX2 + FMA) or 0.
int kaleido_cpu_capability_detected(void);

/// The cap named by KALEIDO_CPU_CAPABILITY: 2 when unset or `avx512`, 1 for `avx2`, 0 for
/// `default`, -1 for anything else.
int kaleido_cpu_capability_request(void);

/// min(detected, requested); an unknown request counts as no cap (the CLI refuses it first).
int kaleido_cpu_capability(void);

#ifdef __cplusplus
}
#endif

#endif
