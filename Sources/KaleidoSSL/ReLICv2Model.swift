import KaleidoNN
import KaleidoTensor

/// Online network f = backbone → projector → predictor and target network g = backbone →
/// projector, sharing one layer graph: the target runs the same layers on its own arena (the
/// EMA of the online one), without recording anything for a backward pass.
///
/// Arena layout: the backbone's timm/torchvision names first, then `projector.*`, then
/// `predictor.*`, so the EMA is one loop over the leading floats and the backbone exports
/// under the reference names.
public final class ReLICv2Model {
    public let backbone: BuiltNetwork
    /// The backbone up to its pooled features: every forward of this model runs it (Omnivore's
    /// dataset heads are not part of it; the supervised objective's are `classifiers`).
    public let trunk: Layer
    public let projector: Sequential
    public let predictor: Sequential
    public let online: ParameterArena
    public let target: ParameterArena
    /// Floats of backbone + projector: the part the EMA updates.
    public let targetFloats: Int
    /// Floats of the backbone alone.
    public let backboneFloats: Int
    public let projectionDimension: Int
    /// Per-dataset classifiers of the supervised objective, when configured.
    public let classifiers: DatasetHeadsLayer?

    public struct Heads: Sendable {
        public var projectorHidden: Int
        public var projection: Int
        public var predictorHidden: Int
        /// Omnivore's supervised objective: one linear head per dataset on the backbone
        /// features (`heads.<dataset>`); empty for pure self-supervision.
        public var classifiers: [DatasetHeadsLayer.Head]

        public init(projectorHidden: Int, projection: Int, predictorHidden: Int, classifiers: [DatasetHeadsLayer.Head] = []) {
            self.projectorHidden = projectorHidden
            self.projection = projection
            self.predictorHidden = predictorHidden
            self.classifiers = classifiers
        }
    }

    public init(backbone name: String, options: ModelOptions, heads: Heads, seed: UInt64) throws {
        let builder = ParameterBuilder()
        var trunkOnly = options
        trunkOnly.classes = 0
        trunkOnly.datasetHeads = []
        backbone = try ModelZoo.make(name, options: trunkOnly, builder: builder)
        trunk = backbone.trunk
        backboneFloats = builder.specs.reduce(0) { $0 + $1.count }
        projector = ProjectionHead.make(builder.child("projector"), inFeatures: backbone.featureDimension,
                                        hidden: heads.projectorHidden, outFeatures: heads.projection)
        targetFloats = builder.specs.reduce(0) { $0 + $1.count }
        predictor = ProjectionHead.make(builder.child("predictor"), inFeatures: heads.projection,
                                        hidden: heads.predictorHidden, outFeatures: heads.projection)
        projectionDimension = heads.projection
        // Registered last: outside the EMA range, the target network has no classifier.
        classifiers = heads.classifiers.isEmpty ? nil
            : DatasetHeadsLayer(builder.child("heads"), inFeatures: backbone.featureDimension, heads: heads.classifiers)
        online = builder.makeArena(seed: seed)
        target = online.copy()
    }

    /// Online predictions for a group of same-size views stacked along the batch, (V·N, P),
    /// and, when `dataset` names a classifier, its logits (V·N, classes).
    public func predict(_ views: Tensor, _ context: RunContext, dataset: String? = nil) -> (predictions: Tensor, logits: Tensor?) {
        let features = trunk.forward(views, context)
        let predictions = predictor.forward(projector.forward(features, context), context)
        guard let dataset, let classifiers else { return (predictions, nil) }
        classifiers.selected = dataset
        return (predictions, classifiers.forward(features, context))
    }

    /// Backward of the last `predict` call not yet differentiated, given the gradients of its
    /// predictions and (if it made them) logits. Only parameter gradients: nothing needs the
    /// views' gradient, so the trunk's first layer skips it.
    public func backward(_ dPredictions: Tensor, dLogits: Tensor? = nil, _ context: RunContext) {
        let dProjection = predictor.backward(dPredictions, context)
        var dFeatures = projector.backward(dProjection, context)
        if let dLogits, let classifiers {
            let dFromClassifier = classifiers.backward(dLogits, context)
            let sum = context.tensor(dFeatures.shape)
            Add.forward(output: sum.pointer, a: dFeatures.pointer, b: dFromClassifier.pointer, count: sum.count, pool: context.pool)
            dFeatures = sum
        }
        trunk.backwardWithoutInputGradient(dFeatures, consuming: false, context)
    }

    /// Target projections of stacked views, (V·N, P). `context.arena` must be the target arena.
    public func project(_ views: Tensor, _ context: RunContext) -> Tensor {
        precondition(!context.recordsForBackward && context.arena === target, "the target network runs on its arena, without recording")
        return projector.forward(trunk.forward(views, context), context)
    }

    /// Backbone features (N, F) for evaluation, with whichever arena `context` holds.
    public func features(_ images: Tensor, _ context: RunContext) -> Tensor {
        trunk.forward(images, context)
    }
}
