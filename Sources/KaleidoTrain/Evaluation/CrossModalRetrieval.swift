import Foundation
import KaleidoTensor

/// Cross-modal nearest-neighbour retrieval by class (Omnivore's zero-shot transfer check): each
/// query (e.g. an image) retrieves its k most cosine-similar items of another modality (e.g.
/// videos); recall@k is the share of queries with at least one same-class item among them.
///
/// Chance is what a random ranking scores: with N gallery items of which n_c share the query's
/// class, P(hit within k) = 1 − Π_{i<k} (N − n_c − i) / (N − i), averaged over the queries.
public struct CrossModalRetrieval {
    public var ks: [Int]

    public init(ks: [Int] = [1, 5]) { self.ks = ks }

    public struct Result: Sendable, Equatable {
        /// recall@k and chance@k by k.
        public var recall: [Int: Double]
        public var chance: [Int: Double]
        public var queries: Int
        public var gallery: Int
    }

    public func evaluate(query: FeatureSet, gallery: FeatureSet, pool: ComputePool) -> Result {
        let d = query.dimension
        precondition(gallery.dimension == d, "query features \(d)-d, gallery \(gallery.dimension)-d")
        let q = query.normalizedFeatures(pool: pool), g = gallery.normalizedFeatures(pool: pool)
        let similarity = Tensor(zeros: [query.count, gallery.count])
        BLAS.sgemm(transposeA: false, transposeB: true, m: query.count, n: gallery.count, k: d,
                   a: q.pointer, lda: d, b: g.pointer, ldb: d, c: similarity.pointer, ldc: gallery.count)
        let deepest = min(ks.max() ?? 1, gallery.count)
        // Rank (1-based) of the first same-class neighbour within the deepest k; 0 if none.
        let firstHit = Tensor(zeros: [query.count])
        pool.forEachRange(query.count) { rows in
            for row in rows {
                let nearest = KNearestNeighbours.largest(deepest, of: similarity.pointer + row * gallery.count, count: gallery.count)
                if let rank = nearest.firstIndex(where: { gallery.labels[$0] == query.labels[row] }) {
                    firstHit.pointer[row] = Float(rank + 1)
                }
            }
        }
        var perClass: [Int32: Int] = [:]
        for label in gallery.labels { perClass[label, default: 0] += 1 }
        let hits = firstHit.array
        var recall: [Int: Double] = [:], chance: [Int: Double] = [:]
        for k in ks {
            let n = Double(max(query.count, 1))
            recall[k] = Double(hits.filter { $0 >= 1 && $0 <= Float(k) }.count) / n
            chance[k] = query.labels.reduce(0.0) { $0 + Self.chance(k: k, gallery: gallery.count, sameClass: perClass[$1] ?? 0) } / n
        }
        return Result(recall: recall, chance: chance, queries: query.count, gallery: gallery.count)
    }

    /// P(at least one of k random gallery items shares the class), sampling without replacement.
    static func chance(k: Int, gallery n: Int, sameClass: Int) -> Double {
        var miss = 1.0
        for i in 0..<min(k, n) { miss *= Double(max(0, n - sameClass - i)) / Double(n - i) }
        return 1 - miss
    }
}
