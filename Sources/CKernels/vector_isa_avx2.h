// The vector vocabulary of a kernel template compiled for AVX2 + FMA (see vector_isa_avx512.h).
#define ISA avx2
#define ISA_TARGET "avx2,fma"
#define VEC __m256
#define LANES 8
#define VEC_LOAD _mm256_loadu_ps
#define VEC_STORE _mm256_storeu_ps
#define VEC_FMA _mm256_fmadd_ps
#define VEC_ADD _mm256_add_ps
#define VEC_SUB _mm256_sub_ps
#define VEC_SET1 _mm256_set1_ps
#define VEC_ZERO _mm256_setzero_ps
