import Foundation
import KaleidoTensor

/// Multinomial logistic regression on fixed features, the model of the linear probe's SGD and
/// L-BFGS solvers. x is (N, D), the parameters θ are W (D, K) row-major followed by b (K):
///
///   logits = x W + b,   L(θ) = mean_n CE(softmax(logits_n), y_n) + (λ/2) ‖W‖²
///   ∂L/∂W = xᵀ (P − Y) / N + λ W,   ∂L/∂b = Σ_n (P − Y)_n / N
struct SoftmaxRegression {
    let inputs: Int
    let classes: Int

    var parameterCount: Int { inputs * classes + classes }

    func logits(_ x: Tensor, _ theta: [Float], pool: ComputePool) -> Tensor {
        let n = x.shape[0]
        let out = Tensor(zeros: [n, classes])
        for row in 0..<n { theta.withUnsafeBufferPointer { (out.pointer + row * classes).update(from: $0.baseAddress! + inputs * classes, count: classes) } }
        theta.withUnsafeBufferPointer { w in
            BLAS.sgemm(transposeA: false, transposeB: false, m: n, n: classes, k: inputs, a: x.pointer, lda: inputs,
                       b: w.baseAddress!, ldb: classes, beta: 1, c: out.pointer, ldc: classes)
        }
        return out
    }

    /// L(θ) on `x`, and ∂L/∂θ into `gradient`.
    func loss(_ x: Tensor, labels: [Int32], theta: [Float], l2: Float, gradient: inout [Float], pool: ComputePool) -> Double {
        let n = x.shape[0]
        let scores = logits(x, theta, pool: pool)
        let probabilities = Tensor(zeros: scores.shape), dLogits = Tensor(zeros: scores.shape)
        let crossEntropy = CrossEntropy.lossAndGradient(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                                        logits: scores.pointer, labels: labels, classes: classes, pool: pool)
        var penalty = 0.0
        gradient.withUnsafeMutableBufferPointer { g in
            // ∂W = xᵀ dLogits (dLogits already carries the 1/N).
            BLAS.sgemm(transposeA: true, transposeB: false, m: inputs, n: classes, k: n, a: x.pointer, lda: inputs,
                       b: dLogits.pointer, ldb: classes, c: g.baseAddress!, ldc: classes)
            for i in 0..<(inputs * classes) {
                g[i] += l2 * theta[i]
                penalty += Double(theta[i]) * Double(theta[i])
            }
            for k in 0..<classes {
                var sum: Float = 0
                for row in 0..<n { sum += dLogits.pointer[row * classes + k] }
                g[inputs * classes + k] = sum
            }
        }
        return Double(crossEntropy) + 0.5 * Double(l2) * penalty
    }

    /// L-BFGS (Nocedal & Wright, algorithm 7.4) from θ = 0 with `history` correction pairs; each
    /// step backtracks from step length 1 until the Armijo condition holds.
    func lbfgs(x: Tensor, labels: [Int32], l2: Float, iterations: Int, history: Int = 10, pool: ComputePool) -> [Float] {
        let p = parameterCount
        var theta = [Float](repeating: 0, count: p), gradient = [Float](repeating: 0, count: p)
        var value = loss(x, labels: labels, theta: theta, l2: l2, gradient: &gradient, pool: pool)
        var s: [[Double]] = [], y: [[Double]] = [], rho: [Double] = []
        func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
        for _ in 0..<iterations {
            // Two-loop recursion: direction = −H ∇L.
            var q = gradient.map(Double.init)
            var alphas = [Double](repeating: 0, count: s.count)
            for i in stride(from: s.count - 1, through: 0, by: -1) {
                alphas[i] = rho[i] * dot(s[i], q)
                for j in 0..<p { q[j] -= alphas[i] * y[i][j] }
            }
            // Initial Hessian scale sᵀy / yᵀy of the newest pair; before any, a unit-length first step.
            let gamma = s.isEmpty ? 1 / max(dot(q, q).squareRoot(), 1e-12) : dot(s.last!, y.last!) / dot(y.last!, y.last!)
            for j in 0..<p { q[j] *= gamma }
            for i in 0..<s.count {
                let beta = rho[i] * dot(y[i], q)
                for j in 0..<p { q[j] += s[i][j] * (alphas[i] - beta) }
            }
            let direction = q.map { -$0 }
            let slope = zip(direction, gradient).reduce(0.0) { $0 + $1.0 * Double($1.1) }
            guard slope < 0 else { break }
            var step = 1.0
            var candidate = theta, candidateGradient = gradient, candidateValue = value
            var accepted = false
            for _ in 0..<30 {
                for j in 0..<p { candidate[j] = theta[j] + Float(step * direction[j]) }
                candidateValue = loss(x, labels: labels, theta: candidate, l2: l2, gradient: &candidateGradient, pool: pool)
                if candidateValue <= value + 1e-4 * step * slope { accepted = true; break }
                step *= 0.5
            }
            guard accepted else { break }
            let sNew = (0..<p).map { Double(candidate[$0]) - Double(theta[$0]) }
            let yNew = (0..<p).map { Double(candidateGradient[$0]) - Double(gradient[$0]) }
            let curvature = dot(sNew, yNew)
            if curvature > 1e-10 {
                s.append(sNew); y.append(yNew); rho.append(1 / curvature)
                if s.count > history { s.removeFirst(); y.removeFirst(); rho.removeFirst() }
            }
            let improvement = value - candidateValue
            theta = candidate; gradient = candidateGradient; value = candidateValue
            if improvement < 1e-9 * max(1, abs(value)) { break }
        }
        return theta
    }

    /// Mini-batch SGD with momentum 0.9 and a cosine learning rate; batch order is a seeded
    /// permutation per epoch.
    func sgd(x: Tensor, labels: [Int32], l2: Float, epochs: Int, learningRate: Float, batchSize: Int,
             momentum: Float = 0.9, seed: UInt64 = 0, pool: ComputePool) -> [Float] {
        let n = x.shape[0], p = parameterCount, batch = max(1, min(batchSize, n))
        let batchesPerEpoch = (n + batch - 1) / batch, total = max(1, epochs * batchesPerEpoch)
        var theta = [Float](repeating: 0, count: p), gradient = [Float](repeating: 0, count: p)
        var velocity = [Float](repeating: 0, count: p)
        var step = 0
        for epoch in 0..<epochs {
            var rng = SplitMix64(keys: seed, UInt64(epoch))
            var order = Array(0..<n)
            rng.shuffle(&order)
            for start in stride(from: 0, to: n, by: batch) {
                let rows = order[start..<min(n, start + batch)]
                let xb = Tensor(zeros: [rows.count, inputs])
                for (r, row) in rows.enumerated() { (xb.pointer + r * inputs).update(from: x.pointer + row * inputs, count: inputs) }
                _ = loss(xb, labels: rows.map { labels[$0] }, theta: theta, l2: l2, gradient: &gradient, pool: pool)
                let lr = learningRate * Float(0.5 * (1 + cos(Double.pi * Double(step) / Double(total))))
                for j in 0..<p {
                    velocity[j] = momentum * velocity[j] + gradient[j]
                    theta[j] -= lr * velocity[j]
                }
                step += 1
            }
        }
        return theta
    }
}
