// CLONED: compile a function three times — AVX-512F, x86-64-v3 (AVX2 + FMA), baseline — and let
// the program loader pick the widest this CPU runs (an ELF ifunc). Elsewhere, one plain build.
// The files using it also turn off fused multiply-adds, so every clone gives the same bits.
#ifndef KALEIDO_CLONED_H
#define KALEIDO_CLONED_H

#if defined(__x86_64__) && defined(__ELF__)
#define CLONED __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define CLONED
#endif

// Before a loop whose iteration i reads element i of its inputs and writes element i of its
// output and nothing else: vectorised without the run-time overlap check a vectorised loop
// otherwise makes, which takes the scalar loop when the output is one of the inputs (a backward
// writing over the gradient it consumes, a ReLU in place).
#define EACH_ELEMENT _Pragma("clang loop vectorize(assume_safety)")

#endif
