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
    public let projector: Sequential
    public let predictor: Sequential
    public let online: ParameterArena
    public let target: ParameterArena
    /// Floats of backbone + projector: the part the EMA updates.
    public let targetFloats: Int
    /// Floats of the backbone alone.
    public let backboneFloats: Int
    public let projectionDimension: Int

    public struct Heads: Sendable {
        public var projectorHidden: Int
        public var projection: Int
        public var predictorHidden: Int
        public init(projectorHidden: Int, projection: Int, predictorHidden: Int) {
            self.projectorHidden = projectorHidden
            self.projection = projection
            self.predictorHidden = predictorHidden
        }
    }

    public init(backbone name: String, options: ModelOptions, heads: Heads, seed: UInt64) throws {
        let builder = ParameterBuilder()
        backbone = try ModelZoo.make(name, options: options, builder: builder)
        backboneFloats = builder.specs.reduce(0) { $0 + $1.count }
        projector = ProjectionHead.make(builder.child("projector"), inFeatures: backbone.featureDimension,
                                        hidden: heads.projectorHidden, outFeatures: heads.projection)
        targetFloats = builder.specs.reduce(0) { $0 + $1.count }
        predictor = ProjectionHead.make(builder.child("predictor"), inFeatures: heads.projection,
                                        hidden: heads.predictorHidden, outFeatures: heads.projection)
        projectionDimension = heads.projection
        online = builder.makeArena(seed: seed)
        target = online.copy()
    }

    /// Online predictions for a group of same-size views stacked along the batch, (V·N, P).
    public func predict(_ views: Tensor, _ context: RunContext) -> Tensor {
        let features = backbone.network.forward(views, context)
        return predictor.forward(projector.forward(features, context), context)
    }

    /// Backward of the last `predict` call not yet differentiated; returns the input gradient.
    @discardableResult
    public func backward(_ dPredictions: Tensor, _ context: RunContext) -> Tensor {
        let dProjection = predictor.backward(dPredictions, context)
        return backbone.network.backward(projector.backward(dProjection, context), context)
    }

    /// Target projections of stacked views, (V·N, P). `context.arena` must be the target arena.
    public func project(_ views: Tensor, _ context: RunContext) -> Tensor {
        precondition(!context.recordsForBackward && context.arena === target, "the target network runs on its arena, without recording")
        return projector.forward(backbone.network.forward(views, context), context)
    }

    /// Backbone features (N, F) for evaluation, with whichever arena `context` holds.
    public func features(_ images: Tensor, _ context: RunContext) -> Tensor {
        backbone.network.forward(images, context)
    }
}
