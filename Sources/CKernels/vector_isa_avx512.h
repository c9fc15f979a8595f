// The vector vocabulary of a kernel template compiled for AVX-512F: a .c file defines its own
// tile sizes, includes this, then the template, then vector_isa_end.h (see vector_isa_avx2.h
// for the other instruction set). One header per set keeps the two instantiations of every
// template from spelling the same macros twice.
#define ISA avx512
#define ISA_TARGET "avx512f"
#define VEC __m512
#define LANES 16
#define VEC_LOAD _mm512_loadu_ps
#define VEC_STORE _mm512_storeu_ps
#define VEC_FMA _mm512_fmadd_ps
#define VEC_ADD _mm512_add_ps
#define VEC_SUB _mm512_sub_ps
#define VEC_SET1 _mm512_set1_ps
#define VEC_ZERO _mm512_setzero_ps
