#ifndef KALEIDO_CONV3X3_DIRECT_H
#define KALEIDO_CONV3X3_DIRECT_H

/// Direct 3×3, stride 1, padding 1 convolution over channels-last images, as an implicit GEMM:
/// the products read the input where it lies (no im2col matrix, no packing of the activations)
/// and the weights are packed once per call into panels of output channels.
///
/// out[n,oh,ow,oc] (+)= Σ_{kh,kw,ic} in[n, oh+kh−1, ow+kw−1, ic] · W[oc,kh,kw,ic]
///
/// The input gradient of such a convolution is the same convolution of the output gradient with
/// the weights flipped in space and transposed in channels, so one kernel serves both passes;
/// the weight gradient has a kernel of its own. Taps that would read only padding are skipped.
/// Each result element is one sum in a fixed order, whatever the split of the work across
/// threads: the bits do not depend on the thread count (they do on the instruction set).
///
/// Every call names the instruction set its tiles run with; packed buffers and tile counts
/// belong to that set. Calls with `kaleido_conv3x3_none` do nothing.

#ifdef __cplusplus
extern "C" {
#endif

enum { kaleido_conv3x3_none = 0, kaleido_conv3x3_avx2 = 1, kaleido_conv3x3_avx512 = 2 };

/// The widest instruction set this CPU runs the kernels with (AVX-512F, else AVX2 with FMA),
/// or none: callers then fall back to im2col + sgemm.
int kaleido_conv3x3_best_instruction_set(void);

/// Output channels per packed panel (32 for AVX-512, 16 for AVX2); the convolution's output
/// channels must be a multiple.
int kaleido_conv3x3_panel_channels(int instruction_set);

/// Packs W (OC, 3, 3, IC) for the forward pass (`for_input_gradient` 0: panels over OC of
/// (tap, ic, panel oc)), or flipped and transposed for the input gradient (1: panels over IC of
/// (tap, oc, panel ic)). `packed` holds OC·9·IC floats; this call fills panels
/// [first_panel, first_panel + panel_count) (threads may fill disjoint ranges).
void kaleido_conv3x3_pack_weights(int instruction_set, const float *weight, int out_channels, int in_channels,
                                  int for_input_gradient, float *packed, int first_panel, int panel_count);

/// Tiles of the batch's output pixels: the unit `kaleido_conv3x3_direct` splits its work in.
long kaleido_conv3x3_direct_tiles(int instruction_set, int batch, int height, int width);

/// Computes output tiles [first_tile, first_tile + tile_count) (of `kaleido_conv3x3_direct_tiles`)
/// from input (batch, height, width, in_channels) and weights packed by
/// `kaleido_conv3x3_pack_weights` with out_channels panels, into out (batch, height, width,
/// out_channels). Adds onto `out` when `accumulate` is 1, else overwrites it. Threads may
/// compute disjoint tile ranges at once.
void kaleido_conv3x3_direct(int instruction_set, const float *input, int batch, int height, int width,
                            int in_channels, const float *packed_weight, int out_channels, float *out, int accumulate,
                            long first_tile, long tile_count);

/// Tiles of the weight gradient (one tap × a tile of input channels × one panel), the unit
/// `kaleido_conv3x3_weight_gradient` splits its work in.
long kaleido_conv3x3_weight_gradient_tiles(int instruction_set, int in_channels, int out_channels);

/// Adds Σ_pixels dout[p, oc] · in[p shifted by tap, ic] onto `packed_gradient` (laid out as
/// the forward pass's packed weights, OC·9·IC floats) for tiles [first_tile, first_tile +
/// tile_count). Every element is summed over the pixels in one fixed order, whoever computes it.
void kaleido_conv3x3_weight_gradient(int instruction_set, const float *input, const float *dout, int batch,
                                     int height, int width, int in_channels, int out_channels,
                                     float *packed_gradient, long first_tile, long tile_count);

/// dW (OC, 3, 3, IC) += the packed gradient, for panels [first_panel, first_panel + panel_count).
void kaleido_conv3x3_unpack_add(int instruction_set, const float *packed, int in_channels, float *weight_gradient,
                                int first_panel, int panel_count);

#ifdef __cplusplus
}
#endif

#endif
