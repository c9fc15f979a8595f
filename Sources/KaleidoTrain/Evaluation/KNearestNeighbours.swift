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

    public struct Result: Codable, Sendable, Equatable {
        public var top1: Double
        public var top5: Double
    }

    /// Top-1 accuracy on `test`.
    public func top1(train: FeatureSet, test: FeatureSet, classes: Int, pool: ComputePool) -> Double {
        evaluate(train: train, test: test, classes: classes, pool: pool).top1
    }

    /// Top-1 and top-5 accuracy on `test`: a row counts for top-k when its class is among the k
    /// classes with the largest vote (and got a vote at all).
    public func evaluate(train: FeatureSet, test: FeatureSet, classes: Int, pool: ComputePool) -> Result {
        let d = train.dimension
        let trainNormalized = train.normalizedFeatures(pool: pool), testNormalized = test.normalizedFeatures(pool: pool)
        let similarity = Tensor(zeros: [test.count, train.count])
        BLAS.sgemm(transposeA: false, transposeB: true, m: test.count, n: train.count, k: d,
                   a: testNormalized.pointer, lda: d, b: trainNormalized.pointer, ldb: d, c: similarity.pointer, ldc: train.count)
        let neighbours = min(k, train.count)
        // Per row: 1 + the number of classes with strictly more votes than the true one (0: no vote).
        let ranks = Tensor(zeros: [test.count])
        pool.forEachRange(test.count) { rows in
            var votes = [Double](repeating: 0, count: classes)
            for row in rows {
                let scores = similarity.pointer + row * train.count
                let nearest = Self.largest(neighbours, of: scores, count: train.count)
                for c in 0..<classes { votes[c] = 0 }
                for index in nearest { votes[Int(train.labels[index])] += exp(Double(scores[index] / temperature)) }
                let own = votes[Int(test.labels[row])]
                // Ties go against the true class for top-1 (the lower class index wins, as argmax does).
                let label = Int(test.labels[row])
                let ahead = votes.indices.filter { votes[$0] > own || (votes[$0] == own && $0 < label) }.count
                ranks.pointer[row] = own > 0 ? Float(1 + ahead) : 0
            }
        }
        let values = ranks.array
        func share(_ k: Int) -> Double {
            test.count == 0 ? 0 : Double(values.filter { $0 >= 1 && $0 <= Float(k) }.count) / Double(test.count)
        }
        return Result(top1: share(1), top5: share(5))
    }

    /// Indices of the `k` largest scores, ties to the lower index (a bounded insertion list: k is small).
    static func largest(_ k: Int, of scores: UnsafePointer<Float>, count: Int) -> [Int] {
        var best: [Int] = []
        best.reserveCapacity(k + 1)
        for i in 0..<count {
            if best.count == k, let last = best.last, scores[i] <= scores[last] { continue }
            var position = best.count
            while position > 0 && scores[best[position - 1]] < scores[i] { position -= 1 }
            best.insert(i, at: position)
            if best.count > k { best.removeLast() }
        }
        return best
    }
}
