import Foundation
import KaleidoNN
import KaleidoTensor

/// A linear classifier trained on frozen features: the standard measure of what
/// self-supervised pretraining learned.
///
/// Features are standardised with the training split's mean and variance (a BatchNorm without
/// affine parameters, as solo-learn and MAE's probes do), then a softmax regression is trained
/// by one of three solvers, all deterministic:
/// - `adamw`: AdamW on full-batch gradients, warmup and cosine (the probe after pretraining);
/// - `sgd`: mini-batch SGD with momentum 0.9 and a cosine schedule, batches in a seeded order
///   (the classic linear-evaluation protocol);
/// - `lbfgs`: L-BFGS (10 pairs of history, backtracking Armijo line search) on the full-batch
///   L2-regularised loss, as scikit-learn's `LogisticRegression` and CLIP's probe do;
///   `epochs` is then the iteration budget.
public struct LinearProbe {
    public enum Solver: String, Codable, Sendable, CaseIterable {
        case adamw, sgd, lbfgs
    }

    public var epochs: Int
    public var learningRate: Float
    public var weightDecay: Float
    public var solver: Solver
    /// Mini-batch size of the SGD solver.
    public var batchSize = 256

    public init(epochs: Int = 100, learningRate: Float = 0.05, weightDecay: Float = 1e-4, solver: Solver = .adamw) {
        self.epochs = epochs
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.solver = solver
    }

    public struct Result: Codable, Sendable, Equatable {
        public var top1: Double
        public var top5: Double
        public var trainTop1: Double
    }

    public func evaluate(train: FeatureSet, test: FeatureSet, classes: Int, pool: ComputePool) -> Result {
        let d = train.dimension
        let (mean, scale) = standardisation(train)
        let xTrain = standardised(train, mean: mean, scale: scale), xTest = standardised(test, mean: mean, scale: scale)
        if solver != .adamw {
            let regression = SoftmaxRegression(inputs: d, classes: classes)
            let weights = solver == .lbfgs
                ? regression.lbfgs(x: xTrain, labels: train.labels, l2: weightDecay, iterations: epochs, pool: pool)
                : regression.sgd(x: xTrain, labels: train.labels, l2: weightDecay, epochs: epochs, learningRate: learningRate,
                                 batchSize: batchSize, pool: pool)
            let trainScores = regression.logits(xTrain, weights, pool: pool), testScores = regression.logits(xTest, weights, pool: pool)
            return Result(top1: FeatureSet.accuracy(scores: testScores.pointer, classes: classes, labels: test.labels, k: 1),
                          top5: FeatureSet.accuracy(scores: testScores.pointer, classes: classes, labels: test.labels, k: min(5, classes)),
                          trainTop1: FeatureSet.accuracy(scores: trainScores.pointer, classes: classes, labels: train.labels, k: 1))
        }

        let builder = ParameterBuilder()
        let classifier = LinearLayer(builder, inFeatures: d, outFeatures: classes, initialization: .zeros)
        let arena = builder.makeArena(seed: 0)
        let optimizer = OptimizerSettings(kind: .adamw, weightDecay: weightDecay).make(for: arena)
        let schedule = WarmupCosineSchedule(base: Double(learningRate), warmupSteps: max(1, epochs / 10), totalSteps: epochs)
        let context = RunContext(arena: arena, pool: pool, training: true)
        let targets = train.labels
        let probabilities = Tensor(zeros: [train.count, classes])
        for epoch in 0..<epochs {
            arena.zeroGradients()
            let logits = classifier.forward(xTrain, context)
            let dLogits = context.tensor(logits.shape, zeroed: true)
            _ = CrossEntropy.lossAndGradient(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                             logits: logits.pointer, labels: targets, classes: classes, pool: pool)
            _ = classifier.backward(dLogits, context)
            optimizer.step(arena, learningRate: Float(schedule.value(at: epoch)), pool: pool)
            context.activations.reset()
        }
        context.recordsForBackward = false
        let trainScores = classifier.forward(xTrain, context)
        let testScores = classifier.forward(xTest, context)
        return Result(top1: FeatureSet.accuracy(scores: testScores.pointer, classes: classes, labels: test.labels, k: 1),
                      top5: FeatureSet.accuracy(scores: testScores.pointer, classes: classes, labels: test.labels, k: min(5, classes)),
                      trainTop1: FeatureSet.accuracy(scores: trainScores.pointer, classes: classes, labels: train.labels, k: 1))
    }

    private func standardisation(_ set: FeatureSet) -> (mean: [Float], scale: [Float]) {
        let d = set.dimension, n = set.count
        var mean = [Double](repeating: 0, count: d), variance = [Double](repeating: 0, count: d)
        for row in 0..<n { for c in 0..<d { mean[c] += Double(set.features.pointer[row * d + c]) } }
        for c in 0..<d { mean[c] /= Double(max(n, 1)) }
        for row in 0..<n {
            for c in 0..<d {
                let x = Double(set.features.pointer[row * d + c]) - mean[c]
                variance[c] += x * x
            }
        }
        return (mean.map(Float.init), variance.map { Float(1 / ($0 / Double(max(n, 1)) + 1e-6).squareRoot()) })
    }

    private func standardised(_ set: FeatureSet, mean: [Float], scale: [Float]) -> Tensor {
        let d = set.dimension
        let out = Tensor(zeros: set.features.shape)
        for row in 0..<set.count {
            for c in 0..<d { out.pointer[row * d + c] = (set.features.pointer[row * d + c] - mean[c]) * scale[c] }
        }
        return out
    }
}
