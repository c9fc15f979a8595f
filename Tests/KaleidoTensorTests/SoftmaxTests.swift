import Foundation
import Testing
@testable import KaleidoTensor

@Suite struct SoftmaxTests {
    enum Kind: CaseIterable { case softmax, logSoftmax }

    func forward(_ kind: Kind, _ input: [Float], rows: Int, columns: Int) -> [Float] {
        withPointers([input.map { _ in 0 }]) { p in
            switch kind {
            case .softmax: Softmax.forward(output: p[0], input: input, rows: rows, columns: columns, pool: .serial)
            case .logSoftmax: LogSoftmax.forward(output: p[0], input: input, rows: rows, columns: columns, pool: .serial)
            }
        }[0]
    }

    @Test(arguments: Kind.allCases, [(1, 1), (1, 5), (3, 7)])
    func backwardMatchesFiniteDifferences(kind: Kind, shape: (rows: Int, columns: Int)) {
        let (rows, columns) = shape
        GradientCheck().run(inputs: ["input": randomValues(rows * columns, seed: 1, scale: 3)], forward: { v in
            forward(kind, v["input"]!, rows: rows, columns: columns)
        }, backward: { v, dOut in
            let output = forward(kind, v["input"]!, rows: rows, columns: columns)
            let dInput = withPointers([output.map { _ in 0 }]) { p in
                switch kind {
                case .softmax:
                    Softmax.backward(dInput: p[0], dOutput: dOut, output: output, rows: rows, columns: columns, pool: .serial)
                case .logSoftmax:
                    LogSoftmax.backward(dInput: p[0], dOutput: dOut, output: output, rows: rows, columns: columns, pool: .serial)
                }
            }[0]
            return ["input": dInput]
        })
    }

    @Test func softmaxRowsSumToOneAndSurviveHugeLogits() {
        let input: [Float] = [1000, 1001, 999, -5, 0, 5]
        let output = forward(.softmax, input, rows: 2, columns: 3)
        #expect(output.allSatisfy { $0.isFinite && $0 > 0 })
        for row in 0..<2 { #expect(abs(output[row * 3..<row * 3 + 3].reduce(0, +) - 1) < 1e-6) }
        // The first row equals the softmax of [1, 2, 0]: only differences matter.
        let e: [Float] = [exp(1), exp(2), exp(0)]
        let sum = e.reduce(0, +)
        for j in 0..<3 { #expect(abs(output[j] - e[j] / sum) < 1e-6) }
    }

    @Test func logSoftmaxIsTheLogarithmOfSoftmax() {
        let input = randomValues(12, seed: 2, scale: 4)
        let probabilities = forward(.softmax, input, rows: 3, columns: 4)
        let logProbabilities = forward(.logSoftmax, input, rows: 3, columns: 4)
        for (p, logP) in zip(probabilities, logProbabilities) { #expect(abs(log(p) - logP) < 1e-5) }
        let hugeLogits = forward(.logSoftmax, [2000, 0], rows: 1, columns: 2)
        #expect(hugeLogits == [0, -2000])
    }
}
