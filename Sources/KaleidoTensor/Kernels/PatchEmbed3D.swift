/// Geometry of a 3-D patch embedding: a convolution whose kernel equals its stride
/// (Omnivore's 2×4×4), so patches do not overlap. Input sizes must be multiples of the patch;
/// the model pads (or repeats frames of) its input first.
public struct PatchEmbed3DShape: Equatable, Sendable {
    public let batch, frames, height, width, inChannels, outChannels: Int
    public let patchFrames, patchHeight, patchWidth: Int

    public init(batch: Int, frames: Int, height: Int, width: Int, inChannels: Int, outChannels: Int,
                patchFrames: Int, patchHeight: Int, patchWidth: Int) {
        precondition(frames % patchFrames == 0 && height % patchHeight == 0 && width % patchWidth == 0,
                     "input \(frames)×\(height)×\(width) is not a multiple of the patch \(patchFrames)×\(patchHeight)×\(patchWidth)")
        self.batch = batch; self.frames = frames; self.height = height; self.width = width
        self.inChannels = inChannels; self.outChannels = outChannels
        self.patchFrames = patchFrames; self.patchHeight = patchHeight; self.patchWidth = patchWidth
    }

    public var outFrames: Int { frames / patchFrames }
    public var outHeight: Int { height / patchHeight }
    public var outWidth: Int { width / patchWidth }
    /// Rows of the patch matrix (one per output token) and its width.
    public var tokens: Int { batch * outFrames * outHeight * outWidth }
    public var patchSize: Int { patchFrames * patchHeight * patchWidth * inChannels }
    public var workspaceFloats: Int { tokens * patchSize }
    public var forwardFLOPs: Double { 2 * Double(tokens) * Double(patchSize) * Double(outChannels) }
}

/// 3-D patch embedding, channels-last.
///
/// out[n,t,h,w,oc] = b[oc] + Σ_{kt,kh,kw,ic} in[n, t·PT+kt, h·PH+kh, w·PW+kw, ic] · W[oc,kt,kh,kw,ic]
/// in is (N, T, H, W, IC), weight is (OC, PT, PH, PW, IC), bias (OC) or nil,
/// out is (N, T/PT, H/PH, W/PW, OC). With P the (tokens, PT·PH·PW·IC) patch matrix: out = P · Wᵀ.
public enum PatchEmbed3D {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        shape s: PatchEmbed3DShape, workspace: UnsafeMutablePointer<Float>, pool: ComputePool
    ) {
        movePatches(s, video: UnsafeMutablePointer(mutating: input), patches: workspace, toPatches: true, pool: pool)
        Linear.forward(output: output, input: workspace, weight: weight, bias: bias,
                       rows: s.tokens, inChannels: s.patchSize, outChannels: s.outChannels, pool: pool)
    }

    /// dW += doutᵀ · P,  db += Σ dout,  dP = dout · W scattered back into din (patches do not
    /// overlap, so every input element receives exactly one value).
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        shape s: PatchEmbed3DShape, workspace: UnsafeMutablePointer<Float>, pool: ComputePool
    ) {
        if dWeight != nil {
            movePatches(s, video: UnsafeMutablePointer(mutating: input), patches: workspace, toPatches: true, pool: pool)
        }
        Linear.backward(dInput: nil, dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: workspace, weight: weight,
                        rows: s.tokens, inChannels: s.patchSize, outChannels: s.outChannels, pool: pool)
        guard let dInput else { return }
        BLAS.sgemm(transposeA: false, transposeB: false, m: s.tokens, n: s.patchSize, k: s.outChannels,
                   a: dOutput, lda: s.outChannels, b: weight, ldb: s.patchSize, beta: 0, c: workspace, ldc: s.patchSize)
        movePatches(s, video: dInput, patches: workspace, toPatches: false, pool: pool)
    }

    /// Copies between the video and its patch matrix: gathers patches when `toPatches`,
    /// otherwise adds the patch matrix back into the video. A patch row is PW·IC contiguous
    /// floats of the video.
    private static func movePatches(_ s: PatchEmbed3DShape, video: UnsafeMutablePointer<Float>, patches: UnsafeMutablePointer<Float>,
                                    toPatches: Bool, pool: ComputePool) {
        let run = s.patchWidth * s.inChannels
        pool.forEachRange(s.tokens, minimumPerThread: 16) { tokens in
            for token in tokens {
                var rest = token
                let w = rest % s.outWidth; rest /= s.outWidth
                let h = rest % s.outHeight; rest /= s.outHeight
                let t = rest % s.outFrames
                let n = rest / s.outFrames
                var patch = patches + token * s.patchSize
                for kt in 0..<s.patchFrames {
                    for kh in 0..<s.patchHeight {
                        let frame = n * s.frames + t * s.patchFrames + kt
                        let pixel = video + ((frame * s.height + h * s.patchHeight + kh) * s.width + w * s.patchWidth) * s.inChannels
                        if toPatches {
                            patch.update(from: pixel, count: run)
                        } else {
                            for i in 0..<run { pixel[i] += patch[i] }
                        }
                        patch += run
                    }
                }
            }
        }
    }
}
