import Foundation
import Testing
@testable import KaleidoTensor

@Suite struct LossTests {
    enum TargetKind: Sendable { case classIndices([Int32]), distributions([Float]) }

    /// Runs `body` with the targets as the kernel's `Targets`.
    func withTargets<Result>(_ targets: TargetKind, _ body: (CrossEntropy.Targets) -> Result) -> Result {
        switch targets {
        case .classIndices(let indices): indices.withUnsafeBufferPointer { body(.classIndices($0.baseAddress!)) }
        case .distributions(let values): values.withUnsafeBufferPointer { body(.distributions($0.baseAddress!)) }
        }
    }

    func forward(_ logits: [Float], _ targets: TargetKind, rows: Int, classes: Int, smoothing: Float)
        -> (loss: Float, probabilities: [Float]) {
        var loss: Float = 0
        let probabilities = withPointers([logits.map { _ in 0 }]) { p in
            loss = withTargets(targets) { t in
                CrossEntropy.forward(probabilities: p[0], logits: logits, targets: t, rows: rows, classes: classes,
                                     labelSmoothing: smoothing, pool: .serial)
            }
        }[0]
        return (loss, probabilities)
    }

    func backward(_ logits: [Float], _ targets: TargetKind, rows: Int, classes: Int, smoothing: Float,
                  scale: Float) -> [Float] {
        let probabilities = forward(logits, targets, rows: rows, classes: classes, smoothing: smoothing).probabilities
        return withPointers([logits.map { _ in 0 }]) { p in
            withTargets(targets) { t in
                CrossEntropy.backward(dLogits: p[0], probabilities: probabilities, targets: t, rows: rows,
                                      classes: classes, labelSmoothing: smoothing, scale: scale, pool: .serial)
            }
        }[0]
    }

    /// −(1/R) Σ_r Σ_k q[r, k] · log softmax(logits[r])_k in Float64, with q given in full.
    func referenceLoss(_ logits: [Float], smoothedTargets q: [Double], rows: Int, classes: Int) -> Double {
        var total = 0.0
        for r in 0..<rows {
            let z = logits[(r * classes)..<((r + 1) * classes)].map(Double.init)
            let logSumExp = log(z.map { exp($0) }.reduce(0, +))
            for k in 0..<classes { total -= q[r * classes + k] * (z[k] - logSumExp) }
        }
        return total / Double(rows)
    }

    func checkGradient(_ targets: TargetKind, rows: Int, classes: Int, smoothing: Float) {
        GradientCheck().run(inputs: ["logits": randomValues(rows * classes, seed: 1, scale: 3)], forward: { v in
            [forward(v["logits"]!, targets, rows: rows, classes: classes, smoothing: smoothing).loss]
        }, backward: { v, dLoss in
            ["logits": backward(v["logits"]!, targets, rows: rows, classes: classes, smoothing: smoothing, scale: dLoss[0])]
        })
    }

    @Test(arguments: [(1, 4, Float(0)), (5, 7, 0), (5, 7, 0.1)])
    func classIndexBackwardMatchesFiniteDifferences(rows: Int, classes: Int, smoothing: Float) {
        let targets = (0..<rows).map { Int32(($0 * 3 + 1) % classes) }
        checkGradient(.classIndices(targets), rows: rows, classes: classes, smoothing: smoothing)
    }

    @Test(arguments: [(1, 4, Float(0)), (3, 5, 0.2)])
    func distributionBackwardMatchesFiniteDifferences(rows: Int, classes: Int, smoothing: Float) {
        // Positive weights that deliberately do not sum to one per row, as PyTorch allows.
        let targets = randomValues(rows * classes, seed: 2).map { $0 + 1.2 }
        checkGradient(.distributions(targets), rows: rows, classes: classes, smoothing: smoothing)
    }

    @Test func lossMatchesTheDefinitionForBothTargetKinds() {
        let (rows, classes, smoothing) = (3, 4, Float(0.1))
        let logits = randomValues(rows * classes, seed: 3, scale: 4)
        let indices: [Int32] = [2, 0, 3]
        let distributions = randomValues(rows * classes, seed: 4).map { $0 + 1 }
        let uniform = Double(smoothing) / Double(classes)
        let oneHotQ = (0..<(rows * classes)).map { i in
            (Int32(i % classes) == indices[i / classes] ? 1 - Double(smoothing) : 0) + uniform
        }
        let softQ = distributions.map { (1 - Double(smoothing)) * Double($0) + uniform }
        let indexLoss = forward(logits, .classIndices(indices), rows: rows, classes: classes, smoothing: smoothing).loss
        let softLoss = forward(logits, .distributions(distributions), rows: rows, classes: classes, smoothing: smoothing).loss
        let indexReference = referenceLoss(logits, smoothedTargets: oneHotQ, rows: rows, classes: classes)
        let softReference = referenceLoss(logits, smoothedTargets: softQ, rows: rows, classes: classes)
        #expect(abs(Double(indexLoss) - indexReference) < 1e-5)
        #expect(abs(Double(softLoss) - softReference) < 1e-5)
    }

    /// The one-call form gives forward's loss and adds backward's gradient onto what is there.
    @Test func lossAndGradientIsForwardThenBackward() {
        let rows = 6, classes = 5
        let logits = randomValues(rows * classes, seed: 31)
        let labels: [Int32] = [0, 4, 2, 2, 1, 3]
        let before = randomValues(rows * classes, seed: 32)
        var loss: Float = 0
        let dLogits = withPointers([before, logits.map { _ in 0 }]) { p in
            loss = CrossEntropy.lossAndGradient(dLogits: p[0], probabilities: p[1], logits: logits, labels: labels,
                                                classes: classes, pool: .serial)
        }[0]
        let expected = backward(logits, .classIndices(labels), rows: rows, classes: classes, smoothing: 0, scale: 1)
        #expect(loss == forward(logits, .classIndices(labels), rows: rows, classes: classes, smoothing: 0).loss)
        // backward adds in two steps, so onto a nonzero start the last bit may differ.
        #expect(zip(dLogits, zip(before, expected).map { $0 + $1 }).allSatisfy { abs($0 - $1) <= 1e-6 })
    }

    @Test func oneHotDistributionsAgreeWithClassIndices() {
        let (rows, classes, smoothing) = (4, 5, Float(0.3))
        let logits = randomValues(rows * classes, seed: 5, scale: 3)
        let indices: [Int32] = [4, 1, 1, 0]
        let oneHot = (0..<(rows * classes)).map { i -> Float in Int32(i % classes) == indices[i / classes] ? 1 : 0 }
        let byIndex = forward(logits, .classIndices(indices), rows: rows, classes: classes, smoothing: smoothing)
        let byDistribution = forward(logits, .distributions(oneHot), rows: rows, classes: classes, smoothing: smoothing)
        #expect(abs(byIndex.loss - byDistribution.loss) < 1e-6)
        #expect(byIndex.probabilities == byDistribution.probabilities)
        let gradientByIndex = backward(logits, .classIndices(indices), rows: rows, classes: classes, smoothing: smoothing, scale: 2)
        let gradientByDistribution = backward(logits, .distributions(oneHot), rows: rows, classes: classes,
                                              smoothing: smoothing, scale: 2)
        for (a, b) in zip(gradientByIndex, gradientByDistribution) { #expect(abs(a - b) < 1e-7) }
    }

    @Test func uniformLogitsGiveLogKAndStayFiniteWhenProbabilitiesUnderflow() {
        let uniform = forward([Float](repeating: 0.5, count: 10), .classIndices([7]), rows: 1, classes: 10, smoothing: 0)
        #expect(abs(uniform.loss - log(10)) < 1e-6)
        // The target's probability underflows to 0 in Float32, but the loss is still 200.
        let confident = forward([200, 0], .classIndices([1]), rows: 1, classes: 2, smoothing: 0.1)
        #expect(confident.probabilities[1] == 0)
        #expect(abs(confident.loss - (0.95 * 200)) < 1e-3)
    }
}
