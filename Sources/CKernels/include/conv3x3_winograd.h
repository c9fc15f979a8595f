#ifndef KALEIDO_CONV3X3_WINOGRAD_H
#define KALEIDO_CONV3X3_WINOGRAD_H

/// Winograd F(2×2, 3×3) for 3×3, stride 1, padding 1 convolutions over channels-last images
/// (Lavin & Gray 2016): each 2×2 block of output pixels ("tile") comes from the 4×4 input patch
/// around it through 16 products of transformed values instead of 36 multiplies:
///
///   V[ξ] = (Bᵀ d B)[ξ]                 d: the tile's 4×4 input patch, per input channel
///   U[ξ] = (G g Gᵀ)[ξ]                 g: the 3×3 kernel of one (output, input) channel pair
///   M[ξ][t, oc] = Σ_ic V[ξ][t, ic] · U[ξ][ic, oc]          16 products, one per ξ of the 4×4
///   out tile = Aᵀ M A                  2×2 output pixels, per output channel
///
///   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]   G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
///   Aᵀ = [1 1 1 0; 0 1 −1 −1]
///
/// which computes out[n,oh,ow,oc] = Σ_{kh,kw,ic} in[n, oh+kh−1, ow+kw−1, ic] · W[oc,kh,kw,ic],
/// as the direct kernel does, with 2.25× fewer multiplies in the products, rounded differently
/// (the transforms add and subtract before the products). The input gradient is the same
/// convolution of dout with W flipped in space and transposed in channels.
///
/// The work goes in blocks of tiles. A block's transformed input (16 × tiles × in channels),
/// its products for one panel of output channels (16 × tiles × panel) and that panel's
/// transformed weights stay in the L2 cache from the input transform to the output transform:
/// written out to memory whole, the transformed tiles would be 4× the activations each way and
/// the kernel memory-bound. Every output element is computed within one block in a fixed order,
/// so the bits do not depend on how blocks are shared among threads.
///
/// Channels on both sides must be multiples of `kaleido_conv3x3_panel_channels` (the direct
/// kernel's panels: 32 for AVX-512, 16 for AVX2). Calls with `kaleido_conv3x3_none` do nothing.

#ifdef __cplusplus
extern "C" {
#endif

/// Floats of the transformed weights: 16 · in_channels · out_channels (of this direction).
long kaleido_winograd_packed_weight_floats(int in_channels, int out_channels);

/// Transforms W (OC, 3, 3, IC) into U, in panels of output channels: packed[p][ξ][c][j] =
/// U[ξ] of output channel p·P + j and input channel c. With `for_input_gradient` 1, of the
/// flipped and transposed weights instead (output channels are W's input channels, c runs over
/// W's output channels). This call fills panels [first_panel, first_panel + panel_count).
void kaleido_winograd_pack_weights(int instruction_set, const float *weight, int out_channels, int in_channels,
                                   int for_input_gradient, float *packed, int first_panel, int panel_count);

/// 2×2 output tiles of the batch: ⌈height/2⌉ · ⌈width/2⌉ per image (an odd side's last tile
/// half outside the image, its outside half never written).
long kaleido_winograd_tiles(int batch, int height, int width);

/// Tiles per block: the unit of `kaleido_winograd_convolve`'s work.
int kaleido_winograd_block_tiles(int instruction_set);

/// Floats of scratch one call of `kaleido_winograd_convolve` with `in_channels` input channels
/// needs (per concurrent caller).
long kaleido_winograd_scratch_floats(int instruction_set, int in_channels);

/// Computes the output of tiles [first_tile, first_tile + tile_count) (at most one block) from
/// input (batch, height, width, in_channels) and weights transformed by
/// `kaleido_winograd_pack_weights`, into out (batch, height, width, out_channels): added onto
/// `out` when `accumulate` is 1, else written. `scratch` holds `kaleido_winograd_scratch_floats`
/// floats of this caller's own.
void kaleido_winograd_convolve(int instruction_set, const float *input, int batch, int height, int width,
                               int in_channels, const float *packed_weight, int out_channels, float *out,
                               int accumulate, long first_tile, int tile_count, float *scratch);

/// The weight gradient, as the adjoint of the Winograd forward pass, in two steps:
///
///   dM[ξ] = (A dY Aᵀ)[ξ]                 per tile and output channel (dY: the tile's 2×2 dout)
///   dU[ξ][ic, oc] = Σ_t V[ξ][t, ic] · dM[ξ][t, oc]      every tile of the batch, in order
///   dW[oc, ·, ·, ic] += Gᵀ dU G          the 3×3 gradient of each kernel
///
/// with 2.25× fewer multiplies than summing dout · input over every pixel and tap.
/// `kaleido_winograd_weight_gradient_products` writes dU of output panel `panel_index` at
/// positions [first_xi, first_xi + xi_count) into transformed_gradient (laid out as the packed
/// weights: [panel][ξ][ic][P], `kaleido_winograd_packed_weight_floats` floats); calls for
/// different (panel, positions) write disjoint parts and may run at once, each with its own
/// `kaleido_winograd_scratch_floats(instruction_set, in_channels)` floats of scratch. Every dU
/// element is one sum over the tiles in one order, however the calls are split.
/// `kaleido_winograd_weight_gradient_add` then adds Gᵀ dU G of panels [first_panel, first_panel +
/// panel_count) onto weight_gradient (OC, 3, 3, IC).
void kaleido_winograd_weight_gradient_products(int instruction_set, const float *input, const float *dout, int batch,
                                               int height, int width, int in_channels, int out_channels,
                                               int panel_index, int first_xi, int xi_count,
                                               float *transformed_gradient, float *scratch);

void kaleido_winograd_weight_gradient_add(int instruction_set, const float *transformed_gradient, int in_channels,
                                          float *weight_gradient, int first_panel, int panel_count);

#ifdef __cplusplus
}
#endif

#endif
