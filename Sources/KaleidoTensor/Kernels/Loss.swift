import Foundation

/// Softmax cross-entropy with label smoothing, averaged over rows, as PyTorch's
/// `F.cross_entropy(logits, target, label_smoothing: ε)` with reduction "mean":
///
/// loss = (1/R) Σ_r −Σ_k q[r, k] · log p[r, k],   p = softmax(logits[r, :])
/// q = (1 − ε) · onehot(target[r]) + ε/K   for class indices
/// q = (1 − ε) · target[r, :] + ε/K        for target distributions
/// logits and the cached probabilities are (R, K) for R rows and K classes.
///
/// Target distributions are used as given: like PyTorch, rows that do not sum to 1 are not
/// renormalised, which is why the gradient carries the factor Σ_k q[r, k].
public enum CrossEntropy {
    /// What each row of logits is compared with.
    public enum Targets {
        /// (R) class indices in 0..<K. PyTorch's ignore_index is not supported.
        case classIndices(UnsafePointer<Int32>)
        /// (R, K) target distributions (mixup labels, a teacher's probabilities).
        case distributions(UnsafePointer<Float>)
    }

    /// Returns the mean loss and overwrites `probabilities` with softmax(logits).
    public static func forward(
        probabilities: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, targets: Targets,
        rows: Int, classes: Int, labelSmoothing: Float = 0, pool: ComputePool
    ) -> Float {
        precondition((0...1).contains(labelSmoothing), "label smoothing \(labelSmoothing) is outside [0, 1]")
        let rowLosses = UnsafeMutablePointer<Double>.allocate(capacity: rows)
        defer { rowLosses.deallocate() }
        pool.forEachRowRange(rows, columns: classes) { range in
            for r in range {
                let z = logits + r * classes, p = probabilities + r * classes
                let (maximum, sum) = Softmax.exponentiateRow(output: p, input: z, columns: classes)
                let inverseSum = 1 / sum
                for k in 0..<classes { p[k] *= inverseSum }
                // −Σ q log p with log p = z − lse, split into the target and the uniform part of q;
                // taking log p from the logits rather than from p stays finite when p underflows.
                let logSumExp = Double(maximum) + log(Double(sum))
                var sumLogits = 0.0
                for k in 0..<classes { sumLogits += Double(z[k]) }
                let targetPart = Double(targets.sum(row: r, classes: classes)) * logSumExp
                    - targets.dot(row: r, classes: classes, with: z)
                let uniformPart = logSumExp - sumLogits / Double(classes)
                rowLosses[r] = Double(1 - labelSmoothing) * targetPart + Double(labelSmoothing) * uniformPart
            }
        }
        // Summed serially so the loss does not depend on the thread count.
        var total = 0.0
        for r in 0..<rows { total += rowLosses[r] }
        return Float(total / Double(rows))
    }

    /// dlogits[r, k] += scale · (p[r, k] · Σ_j q[r, j] − q[r, k]) / R
    /// (Σ_j q[r, j] = 1 for class indices and for target rows that sum to 1.)
    /// `scale` is dL/dloss, the weight of this loss in the total.
    public static func backward(
        dLogits: UnsafeMutablePointer<Float>, probabilities: UnsafePointer<Float>, targets: Targets,
        rows: Int, classes: Int, labelSmoothing: Float = 0, scale: Float = 1, pool: ComputePool
    ) {
        let rowScale = scale / Float(rows)
        let uniformTarget = labelSmoothing / Float(classes)
        pool.forEachRowRange(rows, columns: classes) { range in
            for r in range {
                let p = probabilities + r * classes, dz = dLogits + r * classes
                let targetMass = (1 - labelSmoothing) * targets.sum(row: r, classes: classes) + labelSmoothing
                for k in 0..<classes { dz[k] += rowScale * (p[k] * targetMass - uniformTarget) }
                targets.add(row: r, classes: classes, times: -rowScale * (1 - labelSmoothing), to: dz)
            }
        }
    }
}

extension CrossEntropy {
    /// `forward` then `backward` against class labels, for a head trained on this loss alone:
    /// returns the mean loss over the labels.count rows of `logits` (R, K) and adds dL/dlogits
    /// onto `dLogits` (zeroed by the caller); `probabilities` (R, K) is scratch.
    public static func lossAndGradient(
        dLogits: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
        labels: [Int32], classes: Int, pool: ComputePool
    ) -> Float {
        labels.withUnsafeBufferPointer { labels in
            let targets = Targets.classIndices(labels.baseAddress!)
            let loss = forward(probabilities: probabilities, logits: logits, targets: targets, rows: labels.count,
                               classes: classes, pool: pool)
            backward(dLogits: dLogits, probabilities: probabilities, targets: targets, rows: labels.count,
                     classes: classes, pool: pool)
            return loss
        }
    }
}

extension CrossEntropy.Targets {
    /// The class index of row r, checked.
    private func index(row r: Int, classes: Int, _ indices: UnsafePointer<Int32>) -> Int {
        let k = Int(indices[r])
        precondition((0..<classes).contains(k), "target class \(k) of row \(r) is outside 0..<\(classes)")
        return k
    }

    /// Σ_k t[r, k]
    func sum(row r: Int, classes: Int) -> Float {
        switch self {
        case .classIndices: return 1
        case .distributions(let t):
            var sum: Float = 0
            for k in 0..<classes { sum += t[r * classes + k] }
            return sum
        }
    }

    /// Σ_k t[r, k] · values[k], in Float64.
    func dot(row r: Int, classes: Int, with values: UnsafePointer<Float>) -> Double {
        switch self {
        case .classIndices(let indices):
            return Double(values[index(row: r, classes: classes, indices)])
        case .distributions(let t):
            var dot = 0.0
            for k in 0..<classes { dot += Double(t[r * classes + k]) * Double(values[k]) }
            return dot
        }
    }

    /// values[k] += alpha · t[r, k]
    func add(row r: Int, classes: Int, times alpha: Float, to values: UnsafeMutablePointer<Float>) {
        switch self {
        case .classIndices(let indices):
            values[index(row: r, classes: classes, indices)] += alpha
        case .distributions(let t):
            for k in 0..<classes { values[k] += alpha * t[r * classes + k] }
        }
    }
}
