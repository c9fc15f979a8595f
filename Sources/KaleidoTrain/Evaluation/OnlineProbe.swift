import KaleidoNN
import KaleidoSSL
import KaleidoTensor

/// A linear classifier trained alongside pretraining on the pooled backbone features of the
/// first large view (solo-learn's online linear evaluation), to watch representations improve
/// without stopping the run.
///
/// Detached: it runs its own forward of the online backbone in eval mode (BatchNorm running
/// statistics, nothing recorded), so neither the encoder's gradients nor its BatchNorm
/// statistics see it. Its classifier lives in its own arena with its own AdamW (constant
/// learning rate, no weight decay). Accuracy and loss are measured on each batch before the
/// classifier learns from it, so they are not training-set scores of that batch, and averaged
/// over the logging interval. Under MPI only the coordinator probes, on its share of the batch.
public final class OnlineProbe {
    let model: ReLICv2Model
    let classifier: LinearLayer
    let arena: ParameterArena
    let optimizer: Optimizer
    let learningRate: Float
    let encoderContext: RunContext
    let probeContext: RunContext
    private var hits = 0, seen = 0, lossSum = 0.0, batches = 0

    public init(model: ReLICv2Model, classes: Int, learningRate: Double, pool: ComputePool) {
        precondition(classes >= 1, "the online probe needs the number of classes")
        self.model = model
        let builder = ParameterBuilder()
        classifier = LinearLayer(builder, inFeatures: model.backbone.featureDimension, outFeatures: classes, initialization: .zeros)
        arena = builder.makeArena(seed: 0)
        optimizer = OptimizerSettings(kind: .adamw, weightDecay: 0).make(for: arena)
        self.learningRate = Float(learningRate)
        encoderContext = RunContext(arena: model.online, pool: pool, training: false, recordsForBackward: false)
        probeContext = RunContext(arena: arena, pool: pool, training: true)
    }

    /// One probe step on the first large view of `batch`.
    public func update(_ batch: MultiViewBatch) {
        let n = batch.samples
        defer { encoderContext.resetActivations(); probeContext.resetActivations() }
        let features = model.features(batch.large.slice(0..<n), encoderContext)
        // Standardised per batch: raw pooled features change scale as the encoder trains.
        let d = features.shape[1]
        let x = probeContext.tensor(features.shape)
        for c in 0..<d {
            var mean: Float = 0, square: Float = 0
            for row in 0..<n { mean += features.pointer[row * d + c] }
            mean /= Float(n)
            for row in 0..<n { let v = features.pointer[row * d + c] - mean; square += v * v }
            let scale = 1 / (square / Float(n) + 1e-5).squareRoot()
            for row in 0..<n { x.pointer[row * d + c] = (features.pointer[row * d + c] - mean) * scale }
        }
        arena.zeroGradients()
        let logits = classifier.forward(x, probeContext)
        let classes = logits.shape[1]
        let probabilities = probeContext.tensor(logits.shape), dLogits = probeContext.tensor(logits.shape, zeroed: true)
        let loss = CrossEntropy.lossAndGradient(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                                logits: logits.pointer, labels: batch.labels, classes: classes,
                                                pool: probeContext.pool)
        hits += Int((FeatureSet.accuracy(scores: logits.pointer, classes: classes, labels: batch.labels, k: 1) * Double(n)).rounded())
        seen += n
        lossSum += Double(loss)
        batches += 1
        probeContext.backward { _ = classifier.backward(dLogits, probeContext) }
        optimizer.step(arena, learningRate: learningRate, pool: probeContext.pool)
    }

    /// Mean accuracy and loss since the last call (`online_probe_acc`, `online_probe_loss`), then resets.
    public func drain() -> [String: Double] {
        defer { hits = 0; seen = 0; lossSum = 0; batches = 0 }
        guard batches > 0 else { return [:] }
        return ["online_probe_acc": Double(hits) / Double(seen), "online_probe_loss": lossSum / Double(batches)]
    }
}
