import CKernels
import Foundation

/// Geometry of multi-head self-attention over B independent token sets (Swin windows ×
/// images, or whole images for a plain ViT).
public struct AttentionShape: Equatable, Sendable {
    /// Token sets (for Swin: images × windows), heads, tokens per set, dimension per head.
    public let batch, heads, tokens, headDim: Int
    /// Distinct masks (windows per image) when a mask is used: set b uses mask[b % maskWindows].
    public let maskWindows: Int

    public init(batch: Int, heads: Int, tokens: Int, headDim: Int, maskWindows: Int = 1) {
        precondition(batch >= 1 && heads >= 1 && tokens >= 1 && headDim >= 1 && maskWindows >= 1,
                     "bad attention geometry B\(batch) h\(heads) L\(tokens) D\(headDim) nW\(maskWindows)")
        self.batch = batch; self.heads = heads; self.tokens = tokens; self.headDim = headDim
        self.maskWindows = maskWindows
    }

    /// Width of a qkv row: three groups (q, k, v) of heads × headDim.
    public var qkvWidth: Int { 3 * heads * headDim }
    public var outputWidth: Int { heads * headDim }
    /// Floats of the probabilities cache (B, heads, L, L); the backward needs the same again.
    public var probabilityFloats: Int { batch * heads * tokens * tokens }
    public var workspaceFloats: Int { probabilityFloats }
    /// Two products of L·L·D multiply-adds per head and set.
    public var forwardFLOPs: Double { 4 * Double(batch * heads) * Double(tokens * tokens * headDim) }
}

/// Scaled dot-product attention with an additive bias and mask, reading packed qkv.
///
/// For set b and head h, with Q, K, V the (L, D) slices of qkv:
///   S = scale · Q Kᵀ + bias[h] + mask[b mod nW]        (L, L)
///   P = softmax_rows(S)                                (L, L), cached for the backward
///   O = P V                                            (L, D)
/// qkv is (B, L, 3, heads, D) — the output of one Linear with 3·heads·D features, read in place
/// through leading dimensions, so no transpose is copied; out is (B, L, heads, D); bias is
/// (heads, L, L) (Swin's relative position bias already gathered), mask is (nW, L, L) with
/// 0 or a large negative value (shifted windows).
///
/// Swin's windows make these products tiny (L = 16 or 49 tokens, D = 16 or 32) and countless
/// (one per window, head and image): as OpenBLAS calls they ran at 16–60 GFLOP/s on two cores,
/// paying more for each call's buffers and packing than for its arithmetic. They run in
/// `kaleido_small_gemm` (CKernels/small_gemm.c) instead, reading Q, K, V and dO where they lie;
/// only Kᵀ (forward) and Vᵀ (backward) are copied, per set and head, into the thread's scratch.
/// Every element is one sum in a fixed order, whatever the thread count.
public enum Attention {
    public static func forward(
        output: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, bias: UnsafePointer<Float>?, mask: UnsafePointer<Float>?,
        shape s: AttentionShape, scale: Float, pool: ComputePool
    ) {
        let l = s.tokens, d = s.headDim, width = s.qkvWidth
        forEachSetAndHead(s, qkv: qkv, pool: pool) { item, b, h, q, k, v, kT in
            let p = probabilities + item * l * l
            transpose(k, rows: l, columns: d, stride: width, into: kT)
            product(m: l, n: l, k: d, alpha: scale, a: q, aRow: width, b: kT, ldb: l, c: p, ldc: l)
            kaleido_attention_softmax(p, Int32(l), bias.map { $0 + h * l * l },
                                      mask.map { $0 + (b % s.maskWindows) * l * l })
            product(m: l, n: d, k: l, a: p, aRow: l, b: v, ldb: width,
                    c: output + b * l * s.outputWidth + h * d, ldc: s.outputWidth)
        }
    }

    /// dP = dO Vᵀ;  dS = P ⊙ (dP − rowsum(dP ⊙ P));
    /// dQ += scale · dS K;  dK += scale · dSᵀ Q;  dV += Pᵀ dO;  dbias[h] += Σ_b dS.
    /// dS is kept for every set in `workspace` so the bias gradient is summed over sets in a
    /// fixed order after the parallel part (deterministic for any thread count).
    public static func backward(
        dQKV: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
        shape s: AttentionShape, scale: Float, workspace: UnsafeMutablePointer<Float>, pool: ComputePool
    ) {
        let l = s.tokens, d = s.headDim, width = s.qkvWidth, heads = s.heads
        forEachSetAndHead(s, qkv: qkv, pool: pool) { item, b, h, q, k, v, vT in
            let dq = dQKV + b * l * width + h * d
            let dk = dq + heads * d, dv = dq + 2 * heads * d
            let dOut = dOutput + b * l * s.outputWidth + h * d
            let p = probabilities + item * l * l
            let dS = workspace + item * l * l
            transpose(v, rows: l, columns: d, stride: width, into: vT)
            product(m: l, n: l, k: d, a: dOut, aRow: s.outputWidth, b: vT, ldb: l, c: dS, ldc: l)
            softmaxBackwardRows(dScores: dS, probabilities: p, rows: l)
            product(m: l, n: d, k: l, alpha: scale, a: dS, aRow: l, b: k, ldb: width, c: dq, ldc: width, accumulate: true)
            // dSᵀ and Pᵀ: A(r, i) = dS[i, r], read down the columns.
            product(m: l, n: d, k: l, alpha: scale, a: dS, aRow: 1, aStep: l, b: q, ldb: width, c: dk, ldc: width, accumulate: true)
            product(m: l, n: d, k: l, a: p, aRow: 1, aStep: l, b: dOut, ldb: s.outputWidth, c: dv, ldc: width, accumulate: true)
        }
        guard let dBias else { return }
        pool.forEachRange(heads) { range in
            for h in range {
                let target = dBias + h * l * l
                for b in 0..<s.batch {
                    let source = workspace + (b * heads + h) * l * l
                    for i in 0..<(l * l) { target[i] += source[i] }
                }
            }
        }
    }

    /// Calls `body(item, b, h, Q, K, V, scratch)` for every set b and head h (item = b·heads + h)
    /// on `pool`'s threads, with that set and head's (L, D) slices of qkv and a scratch of D·L
    /// floats per thread (for Kᵀ or Vᵀ).
    @inline(__always) static func forEachSetAndHead(
        _ s: AttentionShape, qkv: UnsafePointer<Float>, pool: ComputePool,
        _ body: (_ item: Int, _ set: Int, _ head: Int, _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>,
                 _ v: UnsafePointer<Float>, _ scratch: UnsafeMutablePointer<Float>) -> Void
    ) {
        let l = s.tokens, d = s.headDim, width = s.qkvWidth, heads = s.heads
        pool.forEachRange(s.batch * heads) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: d * l) { scratch in
                for item in range {
                    let b = item / heads, h = item % heads
                    let q = qkv + b * l * width + h * d
                    body(item, b, h, q, q + heads * d, q + 2 * heads * d, scratch.baseAddress!)
                }
            }
        }
    }

    /// Which of `kaleido_small_gemm`'s tiles this CPU runs: 2 AVX-512, 1 AVX2, 0 plain loops (asked once).
    static let vectorized: Int32 = kaleido_small_gemm_vectorized()

    /// C (m×n) (+)= alpha · A B with A(r, i) = a[r·aRow + i·aStep] and B's rows `ldb` apart.
    @inline(__always) static func product(
        m: Int, n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>, aRow: Int, aStep: Int = 1,
        b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false
    ) {
        kaleido_small_gemm(vectorized, Int32(m), Int32(n), Int32(k), alpha, a, aRow, aStep, b, ldb, c, ldc, accumulate ? 1 : 0)
    }

    /// out (columns × rows) = the transpose of the rows × columns matrix at `m`, rows `stride` apart.
    @inline(__always) static func transpose(_ m: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int,
                                            into out: UnsafeMutablePointer<Float>) {
        kaleido_small_transpose(vectorized, Int32(rows), Int32(columns), m, stride, out)
    }

    /// dS = P ⊙ (dP − Σ_j dP_j P_j), row by row, in place over dP.
    @inline(__always) static func softmaxBackwardRows(dScores: UnsafeMutablePointer<Float>, probabilities: UnsafePointer<Float>, rows: Int) {
        for r in 0..<rows {
            let dp = dScores + r * rows, p = probabilities + r * rows
            var dot: Float = 0
            for j in 0..<rows { dot += dp[j] * p[j] }
            for j in 0..<rows { dp[j] = p[j] * (dp[j] - dot) }
        }
    }
}
