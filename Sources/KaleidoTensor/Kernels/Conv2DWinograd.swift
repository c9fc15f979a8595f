import CKernels

/// Winograd F(2×2, 3×3) for stride-1, padding-1 3×3 convolutions (C, AVX-512 or AVX2; see
/// CKernels/include/conv3x3_winograd.h for the transforms): each 2×2 block of output pixels
/// takes 16 products per channel pair instead of the direct kernel's 36 multiplies.
///
/// out[p, oc] (+)= Σ_{tap, ic} in[p shifted by tap, ic] · W[oc, tap, ic]      (N, H, W, IC) → (N, H, W, OC)
/// computed as out tile = Aᵀ [Σ_ic (Bᵀ d B)[ξ] · (G g Gᵀ)[ξ]] A over the 16 positions ξ.
///
/// The forward pass and the input gradient (dout with W flipped and transposed) run this way;
/// the weight gradient stays on the direct kernel. Results differ from the direct kernel's in
/// the last bits (the transforms add before they multiply) and are the same for any thread
/// count: each output element is computed inside one block, in one order.
public enum Conv2DWinograd {
    /// Whether a convolution of this geometry runs as Winograd products: 3×3, stride 1,
    /// padding 1, both channel counts in whole panels of the direct kernel, and outputs of at
    /// least 8×8 pixels, below which the 2×2 tiles of a side overhang or cover few pixels and
    /// the direct kernel's skipped padding taps make up most of Winograd's gain.
    public static func pays(batch: Int, height: Int, width: Int, inChannels: Int, outChannels: Int,
                            kernel: Int, stride: Int, padding: Int, direct: Conv2DDirect.InstructionSet?) -> Bool {
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
}
