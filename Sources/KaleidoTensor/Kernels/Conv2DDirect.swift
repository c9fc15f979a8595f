import CKernels
import Foundation

/// Direct 3×3, stride-1, padding-1 convolution (C, AVX-512): an implicit GEMM that reads the
/// activations where they lie instead of copying them into an im2col matrix that OpenBLAS then
/// copies again into its packed panels.
///
/// out[p, oc] (+)= Σ_{tap, ic} in[p shifted by tap, ic] · W[oc, tap, ic]      p over N·H·W pixels
/// in (N, H, W, IC), W packed per call into panels of 32 output channels, out (N, H, W, OC).
///
/// The input gradient is the same operation on dout with W flipped in space and transposed in
/// channels: din[p, ic] += Σ_{tap, oc} dout[p shifted by tap, oc] · W[oc, 8 − tap, ic].
/// The weight gradient dW[oc, tap, ic] += Σ_p dout[p, oc] · in[p shifted by tap, ic] has a kernel
/// of its own (tiles of one tap × 14 input × 32 output channels).
/// Every output element is one sum in a fixed order, so the bits do not depend on how the
/// work is split across threads. Output pixels go in classes of equal border (corners, edges,
/// interior), so taps that fall wholly into the padding are skipped rather than multiplied.
/// On ResNet-18 CIFAR shapes, one thread, 32×32×64 … 4×4×512, it runs at 252 / 270 / 294 / 298
/// GFLOP/s (counted as im2col would, padding included) where im2col + sgemm gave 188 / 207 / 173 / 96.
public enum Conv2DDirect {
    /// Whether this CPU has the kernel's instructions (AVX-512F); else convolutions keep im2col.
    /// `KALEIDO_CONV_IM2COL=1` in the environment keeps im2col anyway, to measure one against
    /// the other (BENCHMARKS.md).
    public static let isAvailable: Bool =
        kaleido_conv3x3_direct_available() == 1 && ProcessInfo.processInfo.environment["KALEIDO_CONV_IM2COL"] != "1"

    /// Output channels per weight panel: the convolution's output channels must be a multiple.
    public static let panelChannels = kaleido_conv3x3_panel_channels

    /// Packs W (OC, 3, 3, IC) into `shape.packedWeightFloats` floats: panels of 32 output
    /// channels for the forward pass, or of 32 input channels, flipped, for the input gradient.
    static func packWeights(_ weight: UnsafePointer<Float>, shape s: Conv2DShape, forInputGradient: Bool,
                            into packed: UnsafeMutablePointer<Float>, pool: ComputePool) {
        let panels = (forInputGradient ? s.inChannels : s.outChannels) / panelChannels
        pool.forEachRange(panels) { range in
            kaleido_conv3x3_pack_weights(weight, Int32(s.outChannels), Int32(s.inChannels), forInputGradient ? 1 : 0,
                                         packed, Int32(range.lowerBound), Int32(range.count))
        }
    }

    /// Computes every output pixel of the batch, the pool's threads taking whole tiles each.
    static func run(output: UnsafeMutablePointer<Float>, accumulate: Bool, input: UnsafePointer<Float>,
                    batch: Int, height: Int, width: Int, inChannels: Int, packedWeight: UnsafePointer<Float>,
                    outChannels: Int, pool: ComputePool) {
        let tiles = kaleido_conv3x3_direct_tiles(Int32(batch), Int32(height), Int32(width))
        pool.forEachRange(tiles) { range in
            kaleido_conv3x3_direct(input, Int32(batch), Int32(height), Int32(width), Int32(inChannels), packedWeight,
                                   Int32(outChannels), output, accumulate ? 1 : 0, range.lowerBound, range.count)
        }
    }

    /// dW += Σ_pixels doutᵀ · in shifted by each tap, summed onto zeroed packed panels (each
    /// element by one thread, over the pixels in one order) and then added into dW.
    static func addWeightGradient(_ dWeight: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                  input: UnsafePointer<Float>, shape s: Conv2DShape,
                                  packed: UnsafeMutablePointer<Float>, pool: ComputePool) {
        let floats = s.packedWeightFloats
        pool.forEachRange(floats, minimumPerThread: 1 << 16) { range in
            (packed + range.lowerBound).update(repeating: 0, count: range.count)
        }
        let tiles = kaleido_conv3x3_weight_gradient_tiles(Int32(s.inChannels), Int32(s.outChannels))
        pool.forEachRange(tiles) { range in
            kaleido_conv3x3_weight_gradient(input, dOutput, Int32(s.batch), Int32(s.height), Int32(s.width),
                                            Int32(s.inChannels), Int32(s.outChannels), packed,
                                            range.lowerBound, range.count)
        }
        pool.forEachRange(s.outChannels / panelChannels) { range in
            kaleido_conv3x3_unpack_add(packed, Int32(s.inChannels), dWeight,
                                       Int32(range.lowerBound), Int32(range.count))
        }
    }
}
