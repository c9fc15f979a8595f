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

#endif
