// Winograd F(2×2, 3×3) convolution (see include/conv3x3_winograd.h): the weight transform and
// the choice of instruction set. The block — input transform, products, output transform — is
// in conv3x3_winograd_tiles.h, compiled here once for AVX-512 and once for AVX2 + FMA.
#include "conv3x3_winograd.h"
#include "conv3x3_direct.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define KALEIDO_HAS_X86 1
#else
#define KALEIDO_HAS_X86 0
#endif

enum { max_panel = 32 };

// Where tile `tile` of the batch is: image n, top-left output pixel (oy, ox), and which of its
// 2×2 pixels lie inside the image (an odd side's last tile hangs over by one).
typedef struct {
    long n;
    int oy, ox;
    int inside[2][2];
} winograd_tile;

static inline winograd_tile tile_at(long tile, int height, int width) {
    int tiles_h = (height + 1) / 2, tiles_w = (width + 1) / 2;
    winograd_tile g;
    g.n = tile / ((long)tiles_h * tiles_w);
    g.oy = 2 * (int)(tile / tiles_w % tiles_h);
    g.ox = 2 * (int)(tile % tiles_w);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) g.inside[a][b] = g.oy + a < height && g.ox + b < width;
    return g;
}

typedef void (*winograd_block_function)(const float *, int, int, int, const float *, int, float *, int, long, int,
                                        float *);
typedef void (*winograd_gradient_function)(const float *, const float *, int, int, int, int, int, int, int, int,
                                           float *, float *);

// One instruction set's kernels: `rows` tiles (or input channels) per register tile, `block`
// tiles per block, output channels in panels of `panel`.
typedef struct {
    int rows, block, panel;
    winograd_block_function run;
    winograd_gradient_function gradient_panel;
} winograd_set;

#if KALEIDO_HAS_X86
// Blocks of 28 tiles (112 output pixels): at 256 input channels the block's transformed input
// (16 × 28 × 256 floats, 459 KB), its products for one panel (57 KB) and the panel's weights
// (512 KB) share the 2 MB L2 of the Xeons with AVX-512. Blocks of 56 and 84 were no faster.
#define ROWS 14
#define BLOCK 28
#include "vector_isa_avx512.h"
#include "conv3x3_winograd_tiles.h"
#include "vector_isa_end.h"
#undef ROWS
#undef BLOCK

// Blocks of 24 tiles: at 128 input channels, 197 KB + 25 KB + 128 KB, within a Zen 3's 512 KB
// L2. Against blocks of 12, within the noise on the 2 MB L2 where they were measured.
#define ROWS 6
#define BLOCK 24
#include "vector_isa_avx2.h"
#include "conv3x3_winograd_tiles.h"
#include "vector_isa_end.h"
#undef ROWS
#undef BLOCK
#endif

static const winograd_set *winograd_for(int instruction_set) {
#if KALEIDO_HAS_X86
    if (instruction_set == kaleido_conv3x3_avx512) return &winograd_avx512;
    if (instruction_set == kaleido_conv3x3_avx2) return &winograd_avx2;
#else
    (void)instruction_set;
#endif
    return 0;
}

long kaleido_winograd_packed_weight_floats(int in_channels, int out_channels) {
    return 16L * in_channels * out_channels;
}

long kaleido_winograd_tiles(int batch, int height, int width) {
    return (long)batch * ((height + 1) / 2) * ((width + 1) / 2);
}

int kaleido_winograd_block_tiles(int instruction_set) {
    const winograd_set *set = winograd_for(instruction_set);
    return set ? set->block : 1;
}

long kaleido_winograd_scratch_floats(int instruction_set, int in_channels) {
    const winograd_set *set = winograd_for(instruction_set);
    return set ? 16L * set->block * (in_channels + set->panel) : 0;
}


// U = G g Gᵀ for `n` kernels side by side: g[tap][j] is tap (kh·3 + kw) of kernel j, and
// U[ξ] of kernel j goes to u + ξ·xi_stride + j. The loop over j is what the compiler vectorises.
static void transform_kernels(const float (*restrict g)[max_panel], int n, float *restrict u, long xi_stride) {
    for (int j = 0; j < n; j++) {
        float t[4][3];  // G g
        for (int k = 0; k < 3; k++) {
            float g0 = g[k][j], g1 = g[3 + k][j], g2 = g[6 + k][j];
            t[0][k] = g0;
            t[1][k] = 0.5f * (g0 + g1 + g2);
            t[2][k] = 0.5f * (g0 - g1 + g2);
            t[3][k] = g2;
        }
        for (int i = 0; i < 4; i++) {  // (G g) Gᵀ
            u[(i * 4 + 0) * xi_stride + j] = t[i][0];
            u[(i * 4 + 1) * xi_stride + j] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
            u[(i * 4 + 2) * xi_stride + j] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
            u[(i * 4 + 3) * xi_stride + j] = t[i][2];
        }
    }
}

// packed[p][ξ][c][j] = U[ξ] of (output j of panel p, input c), from the kernels
//   forward:        g(kh, kw) = W[p·P + j, kh, kw, c]              c < IC
//   input gradient: g(kh, kw) = W[c, 2 − kh, 2 − kw, p·P + j]      c < OC
// gathered per c into g[tap][j] (the input gradient's are contiguous in j already).
void kaleido_winograd_pack_weights(int instruction_set, const float *weight, int out_channels, int in_channels,
                                   int for_input_gradient, float *packed, int first_panel, int panel_count) {
    const winograd_set *set = winograd_for(instruction_set);
    if (!set) return;
    int panel = set->panel, inputs = for_input_gradient ? out_channels : in_channels;
    float g[9][max_panel];
    for (int p = first_panel; p < first_panel + panel_count; p++)
        for (int c = 0; c < inputs; c++) {
            for (int tap = 0; tap < 9; tap++)
                for (int j = 0; j < panel; j++)
                    g[tap][j] = for_input_gradient
                        ? weight[((long)c * 9 + 8 - tap) * in_channels + p * panel + j]
                        : weight[((long)(p * panel + j) * 9 + tap) * in_channels + c];
            transform_kernels(g, panel, packed + ((long)p * 16 * inputs + c) * panel, (long)inputs * panel);
        }
}

void kaleido_winograd_convolve(int instruction_set, const float *input, int batch, int height, int width,
                               int in_channels, const float *packed_weight, int out_channels, float *out,
                               int accumulate, long first_tile, int tile_count, float *scratch) {
    const winograd_set *set = winograd_for(instruction_set);
    if (!set || tile_count <= 0) return;
    (void)batch;
    set->run(input, height, width, in_channels, packed_weight, out_channels, out, accumulate, first_tile,
             tile_count < set->block ? tile_count : set->block, scratch);
}

void kaleido_winograd_weight_gradient_products(int instruction_set, const float *input, const float *dout, int batch,
                                               int height, int width, int in_channels, int out_channels,
                                               int panel_index, int first_xi, int xi_count,
                                               float *transformed_gradient, float *scratch) {
    const winograd_set *set = winograd_for(instruction_set);
    if (!set) return;
    set->gradient_panel(input, dout, batch, height, width, in_channels, out_channels, panel_index, first_xi, xi_count,
                        transformed_gradient + (long)panel_index * 16 * in_channels * set->panel, scratch);
}

// dW[p·P + j, kh, kw, ic] += (Gᵀ dU G)[kh][kw], dU[ξ] = transformed[p][ξ][ic][j]: the adjoint of
// `transform_kernels`, Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1].
void kaleido_winograd_weight_gradient_add(int instruction_set, const float *transformed_gradient, int in_channels,
                                          float *weight_gradient, int first_panel, int panel_count) {
    const winograd_set *set = winograd_for(instruction_set);
    if (!set) return;
    int panel = set->panel;
    for (int p = first_panel; p < first_panel + panel_count; p++) {
        const float *du = transformed_gradient + (long)p * 16 * in_channels * panel;
        for (int j = 0; j < panel; j++) {
            float *row = weight_gradient + (long)(p * panel + j) * 9 * in_channels;
            for (int c = 0; c < in_channels; c++) {
                float d[4][4], s[3][4];
                for (int xi = 0; xi < 16; xi++) d[xi / 4][xi % 4] = du[((long)xi * in_channels + c) * panel + j];
                for (int l = 0; l < 4; l++) {  // Gᵀ dU
                    s[0][l] = d[0][l] + 0.5f * (d[1][l] + d[2][l]);
                    s[1][l] = 0.5f * (d[1][l] - d[2][l]);
                    s[2][l] = 0.5f * (d[1][l] + d[2][l]) + d[3][l];
                }
                for (int k = 0; k < 3; k++) {  // (Gᵀ dU) G
                    row[(k * 3 + 0) * in_channels + c] += s[k][0] + 0.5f * (s[k][1] + s[k][2]);
                    row[(k * 3 + 1) * in_channels + c] += 0.5f * (s[k][1] - s[k][2]);
                    row[(k * 3 + 2) * in_channels + c] += 0.5f * (s[k][1] + s[k][2]) + s[k][3];
                }
            }
        }
    }
}
