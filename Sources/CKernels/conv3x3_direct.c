// Direct 3×3 convolution (see include/conv3x3_direct.h): the loops over pixel classes, blocks
// and panels. The register tiles — the forward tile (which with flipped weights is also the
// input gradient) and the weight-gradient tile — are in conv3x3_tiles.h, compiled here once for
// AVX-512 and once for AVX2 + FMA with function attributes; the caller picks one at run time,
// so the package builds for x86-64-v3 and runs on CPUs without AVX-512.
#include "conv3x3_direct.h"
#include "cpu_capability.h"

#include <stddef.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define KALEIDO_HAS_X86 1
#else
#define KALEIDO_HAS_X86 0
#endif

enum { max_tile = 14, max_panel = 32, block_tiles = 8 };

// Pixels per run of the weight gradient: their input and output-gradient rows stay in cache
// while every tile of the thread sums over them. Per instruction set (`gradient_run`, at most
// this): 128 on the AVX-512 machine the kernels were tuned on; 32 for AVX2, where runs of 32
// keep a 64 + 64-channel run in the 32 KiB L1: on a Zen 3, the weight gradient of the 32×32 and
// 16×16 ResNet-18 shapes got 10–20 % faster, the 8×8 and 4×4 ones the same (8 and 16 were
// slower; 64 slower at 16×16). The run length does not change any sum's order: every gradient
// element adds the pixels one by one in the same order, whatever the runs.
enum { gradient_run_pixels = 128 };

// Output pixels are visited class by class. A class holds the pixels whose 3×3 window overlaps
// the image in the same taps (corners, edges, interior: at most 9 classes), so a tile of one
// class runs only the taps that touch the image instead of multiplying the padding's zeros.
// That is 4 % of the work at 32×32, 16 % at 8×8, 31 % at 4×4 and 56 % at 2×2.
typedef struct {
    int oh0, oh1, ow0, ow1;         // rows [oh0, oh1), columns [ow0, ow1)
    int taps, tap[9];               // the taps that touch the image, in order kh·3 + kw
    long pixels, first_tile;        // batch · rows · columns; tiles of the classes before
} pixel_class;

typedef void (*tile_function)(const float *const *, const pixel_class *, const long *, int, const float *,
                              float *const *, int);
typedef void (*gradient_function)(const float *const *, long, const float *const *, long, long, float *);

// One instruction set's tiles: `tile` pixels (or input channels) by `panel` output channels,
// compiled for every size up to `tile` (a class's last tile is short).
typedef struct {
    int tile, panel;
    int gradient_run;   // pixels per run of the weight gradient (see gradient_run_pixels)
    tile_function tiles[max_tile + 1];
    gradient_function gradient_tiles[max_tile + 1];
} kernel_set;

#if KALEIDO_HAS_X86
#define TILE 14
#define GRADIENT_RUN 128
#include "vector_isa_avx512.h"
#include "conv3x3_tiles.h"
#include "vector_isa_end.h"
#undef TILE
#undef GRADIENT_RUN

#define TILE 6
#define GRADIENT_RUN 32
#include "vector_isa_avx2.h"
#include "conv3x3_tiles.h"
#include "vector_isa_end.h"
#undef TILE
#undef GRADIENT_RUN
#endif

// The tiles of an instruction set, or none where this build has no x86 kernels.
static const kernel_set *kernels_for(int instruction_set) {
#if KALEIDO_HAS_X86
    if (instruction_set == kaleido_conv3x3_avx512) return &kernels_avx512;
    if (instruction_set == kaleido_conv3x3_avx2) return &kernels_avx2;
#else
    (void)instruction_set;
#endif
    return 0;
}

int kaleido_conv3x3_best_instruction_set(void) {
#if KALEIDO_HAS_X86
    switch (kaleido_cpu_capability()) {
    case 2: return kaleido_conv3x3_avx512;
    case 1: return kaleido_conv3x3_avx2;
    }
#endif
    return kaleido_conv3x3_none;
}

int kaleido_conv3x3_panel_channels(int instruction_set) {
    const kernel_set *k = kernels_for(instruction_set);
    return k ? k->panel : max_panel;
}

// Splits 0..<size into ranges whose pixels see the same kernel rows: first, middle, last.
static int border_ranges(int size, int ranges[3][2]) {
    if (size <= 2) {
        for (int i = 0; i < size; i++) { ranges[i][0] = i; ranges[i][1] = i + 1; }
        return size;
    }
    ranges[0][0] = 0; ranges[0][1] = 1;
    ranges[1][0] = 1; ranges[1][1] = size - 1;
    ranges[2][0] = size - 1; ranges[2][1] = size;
    return 3;
}

static int pixel_classes(int batch, int height, int width, int tile, pixel_class classes[9]) {
    int rows[3][2], columns[3][2];
    int row_ranges = border_ranges(height, rows), column_ranges = border_ranges(width, columns);
    int count = 0;
    long tiles = 0;
    for (int r = 0; r < row_ranges; r++)
        for (int c = 0; c < column_ranges; c++) {
            pixel_class *k = &classes[count++];
            k->oh0 = rows[r][0]; k->oh1 = rows[r][1]; k->ow0 = columns[c][0]; k->ow1 = columns[c][1];
            k->taps = 0;
            for (int kh = 0; kh < 3; kh++)
                for (int kw = 0; kw < 3; kw++) {
                    int ih = k->oh0 + kh - 1, iw = k->ow0 + kw - 1;
                    if (ih >= 0 && ih < height && iw >= 0 && iw < width) k->tap[k->taps++] = kh * 3 + kw;
                }
            k->pixels = (long)batch * (k->oh1 - k->oh0) * (k->ow1 - k->ow0);
            k->first_tile = tiles;
            tiles += (k->pixels + tile - 1) / tile;
        }
    return count;
}

// The batch pixel index (n·H + oh)·W + ow of the class's q-th pixel, in the order (n, oh, ow).
static inline long class_pixel(const pixel_class *c, int height, int width, long q) {
    long rows = c->oh1 - c->oh0, columns = c->ow1 - c->ow0;
    long n = q / (rows * columns), r = q % (rows * columns);
    return (n * height + c->oh0 + r / columns) * width + c->ow0 + r % columns;
}

// How far each of the class's taps reads from the pixel's own input row, in floats.
static inline void tap_offsets(const pixel_class *c, int width, int channels, long offset[9]) {
    for (int t = 0; t < c->taps; t++)
        offset[t] = ((long)(c->tap[t] / 3 - 1) * width + (c->tap[t] % 3 - 1)) * channels;
}

// packed[panel p][tap][c_in][j] = forward:        W[p·P + j, kh, kw, c_in]
//                                 input gradient: W[c_in, 2 − kh, 2 − kw, p·P + j]
// for panels of P channels. Loops run along W's rows (contiguous reads); the strided writes stay
// within one panel (9·IC·P floats: 74 KB at 64 input channels and P = 32), which is in cache.
void kaleido_conv3x3_pack_weights(int instruction_set, const float *weight, int out_channels, int in_channels,
                                  int for_input_gradient, float *packed, int first_panel, int panel_count) {
    int panel = kaleido_conv3x3_panel_channels(instruction_set);
    if (!for_input_gradient) {
        for (int p = first_panel; p < first_panel + panel_count; p++)
            for (int j = 0; j < panel; j++) {
                const float *row = weight + (size_t)(p * panel + j) * 9 * in_channels;
                for (int tap = 0; tap < 9; tap++)
                    for (int c = 0; c < in_channels; c++)
                        packed[(((size_t)p * 9 + tap) * in_channels + c) * panel + j] = row[tap * in_channels + c];
            }
        return;
    }
    for (int p = first_panel; p < first_panel + panel_count; p++)
        for (int oc = 0; oc < out_channels; oc++)
            for (int tap = 0; tap < 9; tap++) {
                const float *source = weight + ((size_t)oc * 9 + (8 - tap)) * in_channels + p * panel;
                float *dst = packed + (((size_t)p * 9 + tap) * out_channels + oc) * panel;
                for (int j = 0; j < panel; j++) dst[j] = source[j];
            }
}

// dW[oc, tap, ic] += packed[oc / P][tap][ic][oc % P]
void kaleido_conv3x3_unpack_add(int instruction_set, const float *packed, int in_channels, float *weight_gradient,
                                int first_panel, int panel_count) {
    int panel = kaleido_conv3x3_panel_channels(instruction_set);
    for (int p = first_panel; p < first_panel + panel_count; p++)
        for (int j = 0; j < panel; j++) {
            float *row = weight_gradient + (size_t)(p * panel + j) * 9 * in_channels;
            for (int tap = 0; tap < 9; tap++)
                for (int c = 0; c < in_channels; c++)
                    row[tap * in_channels + c] += packed[(((size_t)p * 9 + tap) * in_channels + c) * panel + j];
        }
}

long kaleido_conv3x3_direct_tiles(int instruction_set, int batch, int height, int width) {
    const kernel_set *k = kernels_for(instruction_set);
    if (!k) return 0;
    pixel_class classes[9];
    int count = pixel_classes(batch, height, width, k->tile, classes);
    const pixel_class *last = &classes[count - 1];
    return last->first_tile + (last->pixels + k->tile - 1) / k->tile;
}

void kaleido_conv3x3_direct(int instruction_set, const float *input, int batch, int height, int width,
                            int in_channels, const float *packed_weight, int out_channels, float *out, int accumulate,
                            long first_tile, long tile_count) {
    const kernel_set *kernels = kernels_for(instruction_set);
    if (!kernels) return;
    int tile = kernels->tile, panel = kernels->panel;
    pixel_class classes[9];
    int class_count = pixel_classes(batch, height, width, tile, classes);
    size_t panel_floats = (size_t)9 * in_channels * panel;
    long end = first_tile + tile_count;
    int k = 0;
    // A block of tiles of one class meets every weight panel before the next block starts: its
    // input rows stay in cache across the panels.
    for (long block = first_tile; block < end;) {
        while (k + 1 < class_count && classes[k + 1].first_tile <= block) k++;
        const pixel_class *c = &classes[k];
        long class_end = k + 1 < class_count ? classes[k + 1].first_tile : end;
        long block_end = block + block_tiles;
        if (block_end > end) block_end = end;
        if (block_end > class_end) block_end = class_end;
        long tap_offset[9];
        tap_offsets(c, width, in_channels, tap_offset);
        // The block's pixels in the class's order (n, oh, ow): where each is centred in the
        // input and where its output row starts.
        const float *centers[max_tile * block_tiles];
        long out_row[max_tile * block_tiles];
        int tile_size[block_tiles];
        for (long t = block; t < block_end; t++) {
            long first = (t - c->first_tile) * tile;
            long size = c->pixels - first < tile ? c->pixels - first : tile;
            tile_size[t - block] = (int)size;
            for (long i = 0; i < size; i++) {
                long pixel = class_pixel(c, height, width, first + i);
                centers[(t - block) * tile + i] = input + pixel * in_channels;
                out_row[(t - block) * tile + i] = pixel * out_channels;
            }
        }
        for (int p = 0; p < out_channels / panel; p++) {
            const float *weight_panel = packed_weight + p * panel_floats;
            for (long t = block; t < block_end; t++) {
                long base = (t - block) * tile;
                float *outs[max_tile];
                for (int i = 0; i < tile_size[t - block]; i++) outs[i] = out + out_row[base + i] + p * panel;
                kernels->tiles[tile_size[t - block]](centers + base, c, tap_offset, in_channels, weight_panel, outs,
                                                     accumulate);
            }
        }
        block = block_end;
    }
}

long kaleido_conv3x3_weight_gradient_tiles(int instruction_set, int in_channels, int out_channels) {
    const kernel_set *k = kernels_for(instruction_set);
    if (!k) return 0;
    return 9L * ((in_channels + k->tile - 1) / k->tile) * (out_channels / k->panel);
}

void kaleido_conv3x3_weight_gradient(int instruction_set, const float *input, const float *dout, int batch,
                                     int height, int width, int in_channels, int out_channels,
                                     float *packed_gradient, long first_tile, long tile_count) {
    const kernel_set *kernels = kernels_for(instruction_set);
    if (!kernels) return;
    int tile = kernels->tile, panel = kernels->panel;
    pixel_class classes[9];
    int class_count = pixel_classes(batch, height, width, tile, classes);
    int groups = (in_channels + tile - 1) / tile, panels = out_channels / panel;
    for (int k = 0; k < class_count; k++) {
        const pixel_class *c = &classes[k];
        long tap_offset[9];
        tap_offsets(c, width, in_channels, tap_offset);
        int tap_index[9];  // tap → its place among the class's taps, or −1
        for (int tap = 0; tap < 9; tap++) tap_index[tap] = -1;
        for (int t = 0; t < c->taps; t++) tap_index[c->tap[t]] = t;
        long run_length = kernels->gradient_run;
        for (long run = 0; run < c->pixels; run += run_length) {
            long pixels = c->pixels - run < run_length ? c->pixels - run : run_length;
            const float *centers[gradient_run_pixels], *dout_rows[gradient_run_pixels];
            for (long i = 0; i < pixels; i++) {
                long pixel = class_pixel(c, height, width, run + i);
                centers[i] = input + pixel * in_channels;
                dout_rows[i] = dout + pixel * out_channels;
            }
            // Tile t = (tap · groups + group) · panels + panel.
            for (long t = first_tile; t < first_tile + tile_count; t++) {
                int tap = (int)(t / ((long)groups * panels)), group = (int)(t / panels % groups), p = (int)(t % panels);
                if (tap_index[tap] < 0) continue;
                int channels = in_channels - group * tile < tile ? in_channels - group * tile : tile;
                float *gradient = packed_gradient + (((size_t)p * 9 + tap) * in_channels + group * tile) * panel;
                kernels->gradient_tiles[channels](centers, tap_offset[tap_index[tap]] + group * tile, dout_rows,
                                                  (long)p * panel, pixels, gradient);
            }
        }
    }
}
