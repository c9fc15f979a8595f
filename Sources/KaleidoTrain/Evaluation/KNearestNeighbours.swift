import Foundation
import KaleidoTensor

/// Weighted k-nearest-neighbour classification on cosine similarity (Wu et al. 2018, as in
/// DINO and solo-learn): each of the k most similar training features votes for its class with
/// weight exp(similarity / T).
public struct KNearestNeighbours {
    public var k: Int
    public var temperature: Float

    public init(k: Int = 20, temperature: Float = 0.07) {
        self.k = k
        self.temperature = temperature
    }

    /// Top-1 accuracy on `test`.
    public func top1(train: FeatureSet, test: FeatureSet, classes: Int, pool: ComputePool) -> Double {
        let d = train.dimension
        let trainNormalized = normalized(train.features, pool: pool), testNormalized = normalized(test.features, pool: pool)
        let similarity = Tensor(zeros: [test.count, train.count])
        BLAS.sgemm(transposeA: false, transposeB: true, m: test.count, n: train.count, k: d,
                   a: testNormalized.pointer, lda: d, b: trainNormalized.pointer, ldb: d, c: similarity.pointer, ldc: train.count)
        let neighbours = min(k, train.count)
        let correct = Tensor(zeros: [test.count])
        pool.forEachRange(test.count) { rows in
            var votes = [Double](repeating: 0, count: classes)
            for row in rows {
                let scores = similarity.pointer + row * train.count
                // Indices of the k highest similarities (partial selection; k is small).
                let nearest = (0..<train.count).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(neighbours)
                for c in 0..<classes { votes[c] = 0 }
                for index in nearest { votes[Int(train.labels[index])] += exp(Double(scores[index] / temperature)) }
                let predicted = votes.indices.max { votes[$0] < votes[$1] || (votes[$0] == votes[$1] && $0 > $1) }!
                correct.pointer[row] = predicted == Int(test.labels[row]) ? 1 : 0
            }
        }
        return test.count == 0 ? 0 : Double(correct.array.reduce(0, +)) / Double(test.count)
    }

    private func normalized(_ features: Tensor, pool: ComputePool) -> Tensor {
        let out = Tensor(zeros: features.shape), norms = Tensor(zeros: [features.shape[0]])
        L2Normalize.forward(output: out.pointer, norms: norms.pointer, input: features.pointer,
                            rows: features.shape[0], columns: features.shape[1], pool: pool)
        return out
    }
}
