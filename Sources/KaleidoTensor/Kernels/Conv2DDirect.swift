import CKernels

/// Direct 3×3, stride-1, padding-1 convolution (C, AVX-512 or AVX2): an implicit GEMM that reads
/// the activations where they lie instead of copying them into an im2col matrix that OpenBLAS
/// then copies again into its packed panels.
///
/// out[p, oc] (+)= Σ_{tap, ic} in[p shifted by tap, ic] · W[oc, tap, ic]      p over N·H·W pixels
/// in (N, H, W, IC), W packed per call into panels of 32 (AVX2: 16) output channels, out (N, H, W, OC).
///
/// The input gradient is the same operation on dout with W flipped in space and transposed in
/// channels: din[p, ic] += Σ_{tap, oc} dout[p shifted by tap, oc] · W[oc, 8 − tap, ic].
/// The weight gradient dW[oc, tap, ic] += Σ_p dout[p, oc] · in[p shifted by tap, ic] has a kernel
/// of its own (tiles of one tap × 14 (AVX2: 6) input channels × one panel).
/// Every output element is one sum in a fixed order, so the bits do not depend on how the
/// work is split across threads. Output pixels go in classes of equal border (corners, edges,
/// interior), so taps that fall wholly into the padding are skipped rather than multiplied.
/// On ResNet-18 CIFAR shapes, one thread, 32×32×64 … 4×4×512, the AVX-512 forward runs at
/// 252 / 270 / 294 / 298 GFLOP/s (counted as im2col would, padding included) where im2col +
/// sgemm gave 188 / 207 / 173 / 96.
public enum Conv2DDirect {
    /// The vector instructions the kernels run with.
    public enum InstructionSet: Int32, Sendable, CaseIterable {
        case avx2 = 1, avx512 = 2

        /// Whether this CPU runs them.
        public var isSupported: Bool { rawValue <= kaleido_conv3x3_best_instruction_set() }

        /// Output channels per weight panel: a convolution's output channels must be a multiple.
        public var panelChannels: Int { Int(kaleido_conv3x3_panel_channels(rawValue)) }
    }

    /// Which kernels 3×3 convolutions run on: one path against another is how BENCHMARKS.md
    /// measures them (`KALEIDO_CONV=im2col`, `direct` or `avx2` for `kaleido`).
    public enum Path: String, Sendable {
        /// The widest instruction set this CPU has, Winograd's products where they pay
        /// (`Conv2DWinograd.pays`), else im2col.
        case widest
        /// The same without Winograd: the direct kernels for every pass.
        case direct
        /// AVX2 where the CPU has it, else the widest; Winograd where it pays.
        case avx2
        /// im2col + sgemm everywhere.
        case im2col

        /// Whether stride-1 3×3 convolutions may run as Winograd products on this path.
        public var allowsWinograd: Bool { self == .widest || self == .avx2 }
    }

    /// Set once at startup, before any convolution is built (the CLI does it from `KALEIDO_CONV`).
    nonisolated(unsafe) public static var path = Path.widest

    /// The instruction set of `path` on this CPU, or nil: convolutions then keep im2col.
    public static var best: InstructionSet? {
        let widest = InstructionSet(rawValue: kaleido_conv3x3_best_instruction_set())
        switch path {
        case .im2col: return nil
        case .avx2: return InstructionSet.avx2.isSupported ? .avx2 : widest
        case .widest, .direct: return widest
        }
    }

    /// Packs W (OC, 3, 3, IC) into `shape.packedWeightFloats` floats: panels of output channels
    /// for the forward pass, or of input channels, flipped, for the input gradient.
    static func packWeights(_ weight: UnsafePointer<Float>, shape s: Conv2DShape, forInputGradient: Bool,
                            into packed: UnsafeMutablePointer<Float>, with set: InstructionSet, pool: ComputePool) {
        let panels = (forInputGradient ? s.inChannels : s.outChannels) / set.panelChannels
        pool.forEachRange(panels) { range in
            kaleido_conv3x3_pack_weights(set.rawValue, weight, Int32(s.outChannels), Int32(s.inChannels),
                                         forInputGradient ? 1 : 0, packed, Int32(range.lowerBound), Int32(range.count))
        }
    }

    /// Computes every output pixel of the batch, the pool's threads taking whole tiles each.
    static func run(output: UnsafeMutablePointer<Float>, accumulate: Bool, input: UnsafePointer<Float>,
                    batch: Int, height: Int, width: Int, inChannels: Int, packedWeight: UnsafePointer<Float>,
                    outChannels: Int, with set: InstructionSet, pool: ComputePool) {
        let tiles = kaleido_conv3x3_direct_tiles(set.rawValue, Int32(batch), Int32(height), Int32(width))
        pool.forEachRange(tiles) { range in
            kaleido_conv3x3_direct(set.rawValue, input, Int32(batch), Int32(height), Int32(width), Int32(inChannels),
                                   packedWeight, Int32(outChannels), output, accumulate ? 1 : 0,
                                   range.lowerBound, range.count)
        }
    }

    /// dW += Σ_pixels doutᵀ · in shifted by each tap, summed onto zeroed packed panels (each
    /// element by one thread, over the pixels in one order) and then added into dW.
    static func addWeightGradient(_ dWeight: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                  input: UnsafePointer<Float>, shape s: Conv2DShape,
                                  packed: UnsafeMutablePointer<Float>, with set: InstructionSet, pool: ComputePool) {
        pool.forEachRange(s.outChannels * s.patchSize, minimumPerThread: 1 << 16) { range in
            (packed + range.lowerBound).update(repeating: 0, count: range.count)
        }
        let tiles = kaleido_conv3x3_weight_gradient_tiles(set.rawValue, Int32(s.inChannels), Int32(s.outChannels))
        pool.forEachRange(tiles) { range in
            kaleido_conv3x3_weight_gradient(set.rawValue, input, dOutput, Int32(s.batch), Int32(s.height), Int32(s.width),
                                            Int32(s.inChannels), Int32(s.outChannels), packed,
                                            range.lowerBound, range.count)
        }
        pool.forEachRange(s.outChannels / set.panelChannels) { range in
            kaleido_conv3x3_unpack_add(set.rawValue, packed, Int32(s.inChannels), dWeight,
                                       Int32(range.lowerBound), Int32(range.count))
        }
    }
}
