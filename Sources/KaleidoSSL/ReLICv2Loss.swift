import Foundation
import KaleidoTensor

/// The ReLICv2 objective (Tomasev et al. 2022) with its own backward pass.
///
/// For an anchor view v (online prediction f, rows n of this rank) and a large target view t
/// (target projection g of the whole global batch, optionally followed by a FIFO queue of past
/// target projections), with â, ĝ L2-normalised and the critic φ(a, b) = ⟨â, b̂⟩ / τ:
///
///   z[n, m]  = φ(f_v[n], g_t[m])                  m over the global batch, then the queue
///   CE_n     = −log softmax(z[n, :])[o+n]          o = this rank's offset in the global batch
///   p[n, m]  = softmax over batch columns of z[n, :]           (the anchor's view)
///   q[n, m]  = softmax_m φ(f_v[m], g_t[o+n])                   (seen from the positive x⁺)
///   KL_n     = Σ_m p[n, m] (log p[n, m] − log sg[q[n, m]])
///   loss_vt  = mean_n (α CE_n + β KL_n)
///
/// q is column o+n of the batch block of z: the same critic read from the positive's side, as
/// in ReLIC, so no extra forward pass is needed. The KL compares distributions over the batch
/// only (the queue has no anchors to read it from the other side); the contrastive term uses
/// batch and queue. The total sums loss_vt over every anchor view (L large + S small) and every
/// large target view other than itself, divided by (L + S)·L as in the paper. A view paired with
/// itself is skipped: its online and target outputs see the same pixels, so the pair asks for no
/// invariance and would let instance-specific shortcuts (colour, background) lower the loss.
/// Gradients flow into the online predictions only: targets come from the EMA network and q is
/// stopped.
public struct ReLICv2Loss: Sendable {
    public var temperature: Float
    public var alpha: Float
    public var beta: Float

    public init(temperature: Float = 0.2, alpha: Float = 1, beta: Float = 1) {
        self.temperature = temperature
        self.alpha = alpha
        self.beta = beta
    }

    /// The two parts of the loss, for logging.
    public struct Value: Sendable, Equatable {
        public var total: Float
        public var contrastive: Float
        public var divergence: Float

        public init(total: Float, contrastive: Float, divergence: Float) {
            self.total = total
            self.contrastive = contrastive
            self.divergence = divergence
        }
    }

    /// Loss and gradient for one step.
    ///
    /// - Parameters:
    ///   - predictions: online predictions per anchor view, each (N_local, D); large views first.
    ///   - globalPredictions: the same, all-gathered over ranks, each (N_global, D) (no gradient;
    ///     equal to `predictions` in a single process).
    ///   - targets: target projections of the L large views, each (N_global, D).
    ///   - queue: (Q, D) past target projections, or nil.
    ///   - offset: index of this rank's first sample in the global batch.
    ///   - dPredictions: receives dLoss/dpredictions (accumulated), one (N_local, D) per anchor view.
    ///   - skippedTargets: per anchor view, the target view it is not paired with (nil: none);
    ///     by default large view v skips target v and small views pair with every target.
    ///   - rowsPerMean: the rows this rank's share of the mean stands for: N_global / ranks. Ranks
    ///     may hold different numbers of rows (joint groups split unevenly); dividing by N_global /
    ///     ranks instead of N_local makes the average over ranks the global batch's mean. Nil: N_local.
    ///   - weight: scales the gradient (a joint step's share of this group); the value is unscaled.
    public func compute(
        predictions: [Tensor], globalPredictions: [Tensor], targets: [Tensor], queue: Tensor?,
        offset: Int, dPredictions: [Tensor], skippedTargets: [Int?]? = nil, rowsPerMean: Float? = nil, weight: Float = 1,
        pool: ComputePool
    ) -> Value {
        precondition(!targets.isEmpty && predictions.count >= targets.count, "ReLICv2 needs at least one large view")
        precondition(predictions.count == globalPredictions.count && predictions.count == dPredictions.count,
                     "one global copy and one gradient per anchor view")
        let local = predictions[0].shape[0], dimension = predictions[0].shape[1]
        let global = targets[0].shape[0], queued = queue?.shape[0] ?? 0
        let candidates = global + queued
        let pairs = Float(predictions.count * targets.count)
        let skipped = skippedTargets ?? predictions.indices.map { $0 < targets.count ? $0 : nil }
        precondition(skipped.count == predictions.count, "one skipped-target entry per anchor view")
        let rows = rowsPerMean ?? Float(local)

        // Normalised targets (+ queue) as one (global + Q, D) candidate matrix per target view.
        let normalizedTargets = targets.map { target -> Tensor in
            let matrix = Tensor(zeros: [candidates, dimension])
            normalizeRows(target.pointer, into: matrix.pointer, rows: global, columns: dimension, pool: pool)
            if let queue {
                normalizeRows(queue.pointer, into: matrix.pointer + global * dimension, rows: queued, columns: dimension, pool: pool)
            }
            return matrix
        }

        var contrastive: Double = 0, divergence: Double = 0
        let logits = Tensor(zeros: [local, candidates])
        let reverse = Tensor(zeros: [local, global])
        let dLogits = Tensor(zeros: [local, candidates])
        for (view, prediction) in predictions.enumerated() {
            let anchors = Tensor(zeros: [local, dimension]), norms = Tensor(zeros: [local])
            L2Normalize.forward(output: anchors.pointer, norms: norms.pointer, input: prediction.pointer,
                                rows: local, columns: dimension, pool: pool)
            let globalAnchors = Tensor(zeros: [global, dimension])
            normalizeRows(globalPredictions[view].pointer, into: globalAnchors.pointer, rows: global, columns: dimension, pool: pool)
            let dAnchors = Tensor(zeros: [local, dimension])

            for (targetView, candidatesOfView) in normalizedTargets.enumerated() where targetView != skipped[view] {
                // z = â · [ĝ; queue]ᵀ / τ       (N_local, global + Q)
                BLAS.sgemm(transposeA: false, transposeB: true, m: local, n: candidates, k: dimension, alpha: 1 / temperature,
                           a: anchors.pointer, lda: dimension, b: candidatesOfView.pointer, ldb: dimension,
                           beta: 0, c: logits.pointer, ldc: candidates)
                // r[n, m] = φ(f_v[m], g_t[o+n]) = ĝ[o+n] · â_globalᵀ / τ      (N_local, global)
                BLAS.sgemm(transposeA: false, transposeB: true, m: local, n: global, k: dimension, alpha: 1 / temperature,
                           a: candidatesOfView.pointer + offset * dimension, lda: dimension,
                           b: globalAnchors.pointer, ldb: dimension, beta: 0, c: reverse.pointer, ldc: global)
                let terms = rowTerms(logits: logits, reverse: reverse, dLogits: dLogits, offset: offset,
                                     global: global, candidates: candidates, scale: weight / (rows * pairs), pool: pool)
                contrastive += terms.contrastive
                divergence += terms.divergence
                // dâ += dz · [ĝ; queue] / τ
                BLAS.sgemm(transposeA: false, transposeB: false, m: local, n: dimension, k: candidates, alpha: 1 / temperature,
                           a: dLogits.pointer, lda: candidates, b: candidatesOfView.pointer, ldb: dimension,
                           beta: 1, c: dAnchors.pointer, ldc: dimension)
            }
            L2Normalize.backward(dInput: dPredictions[view].pointer, dOutput: dAnchors.pointer, output: anchors.pointer,
                                 norms: norms.pointer, rows: local, columns: dimension, pool: pool)
        }
        let meanContrastive = Float(contrastive / Double(rows * pairs))
        let meanDivergence = Float(divergence / Double(rows * pairs))
        return Value(total: alpha * meanContrastive + beta * meanDivergence,
                     contrastive: meanContrastive, divergence: meanDivergence)
    }

    /// Per row n: the cross-entropy against column o+n, the KL of the batch-column softmax from
    /// the reverse softmax, and their gradient with respect to the logits (scaled by `scale`):
    ///   dz[n, k] = α (softmax(z)[k] − [k = o+n]) + β p_k (log p_k − log q_k − KL_n)  (k < global)
    private func rowTerms(logits: Tensor, reverse: Tensor, dLogits: Tensor, offset: Int, global: Int, candidates: Int,
                          scale: Float, pool: ComputePool) -> (contrastive: Double, divergence: Double) {
        let rows = logits.shape[0]
        let perRow = Tensor(zeros: [rows, 2])
        pool.forEachRange(rows) { range in
            for n in range {
                let z = logits.pointer + n * candidates, r = reverse.pointer + n * global
                let dz = dLogits.pointer + n * candidates
                let positive = offset + n
                // Full softmax over batch and queue, for the contrastive term.
                let fullMax = (0..<candidates).reduce(-Float.infinity) { max($0, z[$1]) }
                var fullSum: Double = 0
                for k in 0..<candidates { fullSum += Double(expf(z[k] - fullMax)) }
                let logFullSum = Float(log(fullSum))
                let crossEntropy = -(z[positive] - fullMax - logFullSum)
                // Batch-column softmax p and reverse softmax q, in log space.
                let batchMax = (0..<global).reduce(-Float.infinity) { max($0, z[$1]) }
                var batchSum: Double = 0
                for k in 0..<global { batchSum += Double(expf(z[k] - batchMax)) }
                let logBatchSum = Float(log(batchSum))
                let reverseMax = (0..<global).reduce(-Float.infinity) { max($0, r[$1]) }
                var reverseSum: Double = 0
                for k in 0..<global { reverseSum += Double(expf(r[k] - reverseMax)) }
                let logReverseSum = Float(log(reverseSum))
                var kl: Double = 0
                for k in 0..<global {
                    let logP = z[k] - batchMax - logBatchSum, logQ = r[k] - reverseMax - logReverseSum
                    kl += Double(expf(logP)) * Double(logP - logQ)
                }
                for k in 0..<candidates {
                    var gradient = alpha * (expf(z[k] - fullMax - logFullSum) - (k == positive ? 1 : 0))
                    if k < global {
                        let logP = z[k] - batchMax - logBatchSum, logQ = r[k] - reverseMax - logReverseSum
                        gradient += beta * expf(logP) * (logP - logQ - Float(kl))
                    }
                    dz[k] = gradient * scale
                }
                perRow.pointer[2 * n] = crossEntropy
                perRow.pointer[2 * n + 1] = Float(kl)
            }
        }
        // Summed in row order so the value does not depend on the thread count.
        var contrastive: Double = 0, divergence: Double = 0
        for n in 0..<rows {
            contrastive += Double(perRow.pointer[2 * n])
            divergence += Double(perRow.pointer[2 * n + 1])
        }
        return (contrastive, divergence)
    }

    private func normalizeRows(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, rows: Int, columns: Int,
                               pool: ComputePool) {
        let norms = Tensor(zeros: [max(rows, 1)])
        withExtendedLifetime(norms) {
            L2Normalize.forward(output: output, norms: norms.pointer, input: input, rows: rows, columns: columns, pool: pool)
        }
    }
}
