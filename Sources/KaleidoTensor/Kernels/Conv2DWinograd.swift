import CKernels

/// Winograd F(2×2, 3×3) for stride-1, padding-1 3×3 convolutions (C, AVX-512 or AVX2; see
/// CKernels/include/conv3x3_winograd.h for the transforms): each 2×2 block of output pixels
/// takes 16 products per channel pair instead of the direct kernel's 36 multiplies.
///
/// out[p, oc] (+)= Σ_{tap, ic} in[p shifted by tap, ic] · W[oc, tap, ic]      (N, H, W, IC) → (N, H, W, OC)
/// computed as out tile = Aᵀ [Σ_ic (Bᵀ d B)[ξ] · (G g Gᵀ)[ξ]] A over the 16 positions ξ.
///
/// The forward pass, the input gradient (dout with W flipped and transposed) and the weight
/// gradient (the adjoint of the forward pass's transforms) run this way. Results differ from the
/// direct kernel's in the last bits (the transforms add before they multiply) and are the same
/// for any thread count: each output element is computed inside one block, each weight-gradient
/// element summed over the tiles in one order by one thread.
public enum Conv2DWinograd {
    /// Whether a convolution of this geometry runs as Winograd products: 3×3, stride 1,
    /// padding 1, both channel counts in whole panels of the direct kernel, and outputs of at
    /// least 8×8 pixels. Below that the direct kernel's skipped padding taps make up much of
    /// Winograd's gain, and the layers there are wide: at 4×4×512 and 7×7×512 (`kaleido bench
    /// kernels --only conv3x3`, AVX-512) the products were no faster than the direct kernel, their
    /// transformed weights (16 MB) streaming from memory for every block of tiles.
    public static func pays(height: Int, width: Int, inChannels: Int, outChannels: Int, kernel: Int, stride: Int,
                            padding: Int, direct: Conv2DDirect.InstructionSet?) -> Bool {
        guard let direct, kernel == 3, stride == 1, padding == 1 else { return false }
        let panel = direct.panelChannels
        return inChannels % panel == 0 && outChannels % panel == 0 && min(height, width) >= minimumSide
    }

    /// The smallest output side that runs as Winograd products (see `pays`).
    public static let minimumSide = 8

    /// out = in ⊛ W (or, `forInputGradient`, din = dout ⊛ W flipped and transposed): transforms
    /// the weights into the workspace's packed area, then the pool's threads take blocks of
    /// tiles in turn, each lane with its own slice of the workspace's Winograd scratch.
    static func convolve(output: UnsafeMutablePointer<Float>, accumulate: Bool, input: UnsafePointer<Float>,
                         weight: UnsafePointer<Float>, forInputGradient: Bool, shape s: Conv2DShape,
                         workspace: UnsafeMutablePointer<Float>, lanes: Int, with set: Conv2DDirect.InstructionSet,
                         pool: ComputePool) {
        precondition(s.winograd && s.direct == set, "\(s) does not run as Winograd products with \(set)")
        let inChannels = forInputGradient ? s.outChannels : s.inChannels
        let outChannels = forInputGradient ? s.inChannels : s.outChannels
        let packed = workspace + s.packedWeightOffset(lanes: lanes)
        pool.forEachRange(outChannels / set.panelChannels) { range in
            kaleido_winograd_pack_weights(set.rawValue, weight, Int32(s.outChannels), Int32(s.inChannels),
                                          forInputGradient ? 1 : 0, packed, Int32(range.lowerBound), Int32(range.count))
        }
        let tiles = kaleido_winograd_tiles(Int32(s.batch), Int32(s.height), Int32(s.width))
        let block = Int(kaleido_winograd_block_tiles(set.rawValue))
        let scratch = workspace + s.winogradScratchOffset(lanes: lanes)
        pool.forEachPiece((tiles + block - 1) / block, lanes: lanes) { lane, piece in
            let first = piece * block
            kaleido_winograd_convolve(set.rawValue, input, Int32(s.batch), Int32(s.height), Int32(s.width),
                                      Int32(inChannels), packed, Int32(outChannels), output, accumulate ? 1 : 0,
                                      first, Int32(min(block, tiles - first)),
                                      scratch + lane * s.winogradScratchFloats)
        }
    }

    /// dW += the weight gradient. The transformed gradient dU goes to the workspace's packed
    /// area (free during the backward pass of the weights), one piece per output panel and group
    /// of the 16 positions: with fewer panels than threads the positions are split too, each
    /// piece transforming its tiles again (a 32-channel layer on AVX-512 is one panel, which
    /// would otherwise leave a thread idle). Each dU element is summed by one piece over every
    /// tile in order, so the split changes no bit. Then each panel's Gᵀ dU G is added to dW.
    static func addWeightGradient(_ dWeight: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                  input: UnsafePointer<Float>, shape s: Conv2DShape, workspace: UnsafeMutablePointer<Float>,
                                  lanes: Int, with set: Conv2DDirect.InstructionSet, pool: ComputePool) {
        precondition(s.winograd && s.direct == set, "\(s) does not run as Winograd products with \(set)")
        let transformed = workspace + s.packedWeightOffset(lanes: lanes)
        let scratch = workspace + s.winogradScratchOffset(lanes: lanes)
        let panels = s.outChannels / set.panelChannels
        var groups = 1
        while panels * groups < min(lanes, pool.threads), groups < 16 { groups *= 2 }
        let positions = 16 / groups
        pool.forEachPiece(panels * groups, lanes: lanes) { lane, piece in
            kaleido_winograd_weight_gradient_products(set.rawValue, input, dOutput, Int32(s.batch), Int32(s.height),
                                                      Int32(s.width), Int32(s.inChannels), Int32(s.outChannels),
                                                      Int32(piece / groups), Int32(piece % groups * positions),
                                                      Int32(positions), transformed,
                                                      scratch + lane * s.winogradScratchFloats)
        }
        pool.forEachRange(panels) { range in
            kaleido_winograd_weight_gradient_add(set.rawValue, transformed, Int32(s.inChannels), dWeight,
                                                 Int32(range.lowerBound), Int32(range.count))
        }
    }
}
