import KaleidoTensor

/// Frozen features of a labelled split: (N, D) rows and their class labels.
public struct FeatureSet {
    public let features: Tensor
    public let labels: [Int32]
    public var count: Int { labels.count }
    public var dimension: Int { features.shape[1] }

    public init(features: Tensor, labels: [Int32]) {
        precondition(features.rank == 2 && features.shape[0] == labels.count,
                     "features \(features.shape) for \(labels.count) labels")
        self.features = features
        self.labels = labels
    }

    /// The rows scaled to unit length: cosine similarities become dot products.
    func normalizedFeatures(pool: ComputePool) -> Tensor {
        let out = Tensor(zeros: features.shape), norms = Tensor(zeros: [count])
        L2Normalize.forward(output: out.pointer, norms: norms.pointer, input: features.pointer, rows: count, columns: dimension, pool: pool)
        return out
    }

    /// Top-k accuracy of `scores` (N, K) against the labels: the share of rows whose label is
    /// among their k highest scores.
    static func accuracy(scores: UnsafePointer<Float>, classes: Int, labels: [Int32], k: Int) -> Double {
        var hits = 0
        for (n, label) in labels.enumerated() {
            let row = scores + n * classes
            let own = row[Int(label)]
            // Rank = how many classes score strictly higher (ties count in the label's favour).
            var higher = 0
            for c in 0..<classes where row[c] > own { higher += 1 }
            if higher < k { hits += 1 }
        }
        return labels.isEmpty ? 0 : Double(hits) / Double(labels.count)
    }
}
