import Testing
import KaleidoTensor
@testable import KaleidoTrain

@Suite struct EvaluationTests {
    /// `classes` Gaussian clusters in `dimension` dimensions; `spread` controls the overlap.
    func clusters(count: Int, classes: Int, dimension: Int, spread: Float, seed: UInt64, centres: UInt64 = 1) -> FeatureSet {
        var centreRNG = SplitMix64(seed: centres)
        let means = (0..<classes).map { _ in (0..<dimension).map { _ in centreRNG.normal() } }
        var rng = SplitMix64(seed: seed)
        var values: [Float] = [], labels: [Int32] = []
        for n in 0..<count {
            let label = n % classes
            labels.append(Int32(label))
            values += means[label].map { $0 + spread * rng.normal() }
        }
        return FeatureSet(features: Tensor(shape: [count, dimension], values: values), labels: labels)
    }

    @Test func linearProbeSeparatesSeparableClassesAndNotNoise() {
        let train = clusters(count: 200, classes: 5, dimension: 16, spread: 0.3, seed: 1)
        let test = clusters(count: 100, classes: 5, dimension: 16, spread: 0.3, seed: 2)
        let result = LinearProbe(epochs: 60).evaluate(train: train, test: test, classes: 5, pool: .serial)
        #expect(result.top1 > 0.95 && result.top5 == 1)

        // Labels unrelated to the features: the probe cannot beat chance by much on new data.
        let noiseTrain = clusters(count: 200, classes: 5, dimension: 16, spread: 0.3, seed: 3, centres: 8)
        let shuffled = FeatureSet(features: noiseTrain.features, labels: noiseTrain.labels.map { ($0 * 7 + 3) % 5 }.shuffledDeterministically())
        let noise = LinearProbe(epochs: 60).evaluate(train: shuffled, test: test, classes: 5, pool: .serial)
        #expect(noise.top1 < 0.45)
    }

    @Test func knnVotesWithTheNearestNeighbours() {
        let train = clusters(count: 150, classes: 3, dimension: 8, spread: 0.2, seed: 4)
        let test = clusters(count: 60, classes: 3, dimension: 8, spread: 0.2, seed: 5)
        #expect(KNearestNeighbours(k: 10).top1(train: train, test: test, classes: 3, pool: ComputePool(threads: 2)) > 0.95)
        let blurred = clusters(count: 60, classes: 3, dimension: 8, spread: 20, seed: 6)
        #expect(KNearestNeighbours(k: 10).top1(train: train, test: blurred, classes: 3, pool: .serial) < 0.7)
    }

    @Test func topKAccuracyCountsRanks() {
        let scores: [Float] = [0.1, 0.9, 0.0,   // label 1: rank 0
                               0.5, 0.2, 0.3]   // label 2: rank 1
        #expect(FeatureSet.accuracy(scores: scores, classes: 3, labels: [1, 2], k: 1) == 0.5)
        #expect(FeatureSet.accuracy(scores: scores, classes: 3, labels: [1, 2], k: 2) == 1)
    }
}

extension Array {
    /// A fixed permutation, so tests are reproducible.
    func shuffledDeterministically() -> [Element] {
        var rng = SplitMix64(seed: 42)
        return shuffled(using: &rng)
    }
}
