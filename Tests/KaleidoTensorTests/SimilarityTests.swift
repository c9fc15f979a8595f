import Foundation
import Testing
@testable import KaleidoTensor

@Suite struct SimilarityTests {
    func normalize(_ input: [Float], rows: Int, columns: Int, epsilon: Float) -> (output: [Float], norms: [Float]) {
        let results = withPointers([input.map { _ in 0 }, [Float](repeating: 0, count: rows)]) { p in
            L2Normalize.forward(output: p[0], norms: p[1], input: input, rows: rows, columns: columns,
                                epsilon: epsilon, pool: .serial)
        }
        return (results[0], results[1])
    }

    /// Similarities and the gradients of a and b for one forward and backward.
    func cosine(_ a: [Float], _ b: [Float], dSimilarity: [Float]?, rowsA: Int, rowsB: Int, dimension: Int)
        -> (similarity: [Float], dA: [Float], dB: [Float]) {
        let results = withPointers([
            [Float](repeating: 0, count: rowsA * rowsB), a.map { _ in 0 }, [Float](repeating: 0, count: rowsA),
            b.map { _ in 0 }, [Float](repeating: 0, count: rowsB), a.map { _ in 0 }, b.map { _ in 0 },
        ]) { p in
            CosineSimilarityMatrix.forward(similarity: p[0], normalizedA: p[1], normsA: p[2], normalizedB: p[3],
                                           normsB: p[4], a: a, b: b, rowsA: rowsA, rowsB: rowsB,
                                           dimension: dimension, pool: .serial)
            if let dSimilarity {
                CosineSimilarityMatrix.backward(dA: p[5], dB: p[6], dSimilarity: dSimilarity, normalizedA: p[1],
                                                normsA: p[2], normalizedB: p[3], normsB: p[4], rowsA: rowsA,
                                                rowsB: rowsB, dimension: dimension, pool: .serial)
            }
        }
        return (results[0], results[5], results[6])
    }

    /// epsilon 1e-12 exercises the ordinary branch; 10 exceeds every row norm here, so the
    /// clamped branch (a constant denominator) is checked too.
    @Test(arguments: [(1, 5, Float(1e-12)), (4, 3, 1e-12), (3, 5, 10)])
    func l2NormalizeBackwardMatchesFiniteDifferences(rows: Int, columns: Int, epsilon: Float) {
        GradientCheck().run(inputs: ["input": randomValues(rows * columns, seed: 1)], forward: { v in
            normalize(v["input"]!, rows: rows, columns: columns, epsilon: epsilon).output
        }, backward: { v, dOut in
            let (output, norms) = normalize(v["input"]!, rows: rows, columns: columns, epsilon: epsilon)
            let dInput = withPointers([output.map { _ in 0 }]) { p in
                L2Normalize.backward(dInput: p[0], dOutput: dOut, output: output, norms: norms, rows: rows,
                                     columns: columns, epsilon: epsilon, pool: .serial)
            }[0]
            return ["input": dInput]
        })
    }

    @Test func l2NormalizeGivesUnitRowsAndLeavesZeroRowsAtZero() {
        let (output, norms) = normalize([3, 4, 0, 0, 0, 0], rows: 3, columns: 2, epsilon: 1e-12)
        #expect(norms == [5, 0, 0])
        #expect(output == [0.6, 0.8, 0, 0, 0, 0])
    }

    @Test(arguments: [(1, 1, 4), (3, 4, 5)])
    func cosineSimilarityBackwardMatchesFiniteDifferences(rowsA: Int, rowsB: Int, dimension: Int) {
        let inputs = ["a": randomValues(rowsA * dimension, seed: 2), "b": randomValues(rowsB * dimension, seed: 3)]
        GradientCheck().run(inputs: inputs, forward: { v in
            cosine(v["a"]!, v["b"]!, dSimilarity: nil, rowsA: rowsA, rowsB: rowsB, dimension: dimension).similarity
        }, backward: { v, dOut in
            let result = cosine(v["a"]!, v["b"]!, dSimilarity: dOut, rowsA: rowsA, rowsB: rowsB, dimension: dimension)
            return ["a": result.dA, "b": result.dB]
        })
    }

    @Test func cosineSimilarityIgnoresLengthAndMeasuresAngle() {
        // a: (1, 0) and (1, 1); b: (5, 0), (0, 2), (−3, −3).
        let similarity = cosine([1, 0, 1, 1], [5, 0, 0, 2, -3, -3], dSimilarity: nil, rowsA: 2, rowsB: 3, dimension: 2)
            .similarity
        let half = Float(0.5).squareRoot()
        let expected: [Float] = [1, 0, -half, half, half, -1]
        for (value, reference) in zip(similarity, expected) { #expect(abs(value - reference) < 1e-6) }
    }
}
