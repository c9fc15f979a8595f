// Ends an instantiation begun with vector_isa_avx512.h or vector_isa_avx2.h.
#undef ISA
#undef ISA_TARGET
#undef VEC
#undef LANES
#undef VEC_LOAD
#undef VEC_STORE
#undef VEC_FMA
#undef VEC_ADD
#undef VEC_SUB
#undef VEC_SET1
#undef VEC_ZERO
