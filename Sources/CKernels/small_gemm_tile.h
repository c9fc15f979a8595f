// The register tile of the small matrix products, written once and compiled once per
// instruction set: small_gemm.c includes this file with
//   TILE_FN     the tile function's name          TILE_TARGET  the target attribute's string
//   VEC, MASK   vector type of LANES floats, and the type of a tail mask
//   ROWS_MAX    the most rows a tile of this set holds
//   VEC_ZERO(), VEC_SET1(x), VEC_LOADU(p), VEC_LOAD_MASKED(p, m), VEC_STOREU(p, v),
//   VEC_STORE_MASKED(p, m, v), VEC_FMA(a, b, c) = a·b + c, VEC_MUL, VEC_ADD
//
// C rows [row, row + R), vectors [vector, vector + NV) of LANES columns; the last vector of the
// matrix is masked to the columns that exist when n is not a multiple of LANES (`tail`). Every
// element is one fused chain over i in order, then scaled by alpha, then added: the same bits
// for every instruction set. The parameters are undefined at the end, ready for the next set.
__attribute__((target(TILE_TARGET), always_inline))
static inline void TILE_FN(const int R, const int NV, int row, int vector, int last_vector_masked, MASK tail,
                           int k, float alpha, const float *a, long a_row, long a_step,
                           const float *b, long ldb, float *c, long ldc, int accumulate) {
    VEC acc[ROWS_MAX][4];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) acc[r][v] = VEC_ZERO();
    const float *a0 = a + (long)row * a_row;
    const float *b0 = b + (long)LANES * vector;
    for (int i = 0; i < k; i++) {
        const float *bi = b0 + (long)i * ldb;
        VEC bv[4];
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++)
            bv[v] = (v == NV - 1 && last_vector_masked) ? VEC_LOAD_MASKED(bi + LANES * v, tail) : VEC_LOADU(bi + LANES * v);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; r++) {
            VEC ar = VEC_SET1(a0[r * a_row + (long)i * a_step]);
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) acc[r][v] = VEC_FMA(ar, bv[v], acc[r][v]);
        }
    }
    const VEC scale = VEC_SET1(alpha);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        float *cr = c + (long)(row + r) * ldc + (long)LANES * vector;
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) {
            int masked = v == NV - 1 && last_vector_masked;
            VEC x = VEC_MUL(acc[r][v], scale);
            if (accumulate) x = VEC_ADD(masked ? VEC_LOAD_MASKED(cr + LANES * v, tail) : VEC_LOADU(cr + LANES * v), x);
            if (masked) VEC_STORE_MASKED(cr + LANES * v, tail, x);
            else VEC_STOREU(cr + LANES * v, x);
        }
    }
}

#undef TILE_FN
#undef TILE_TARGET
#undef VEC
#undef MASK
#undef LANES
#undef ROWS_MAX
#undef VEC_ZERO
#undef VEC_SET1
#undef VEC_LOADU
#undef VEC_LOAD_MASKED
#undef VEC_STOREU
#undef VEC_STORE_MASKED
#undef VEC_FMA
#undef VEC_MUL
#undef VEC_ADD
