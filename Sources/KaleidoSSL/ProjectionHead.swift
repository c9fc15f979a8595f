import KaleidoNN

/// The BYOL/ReLICv2 MLP used for both the projector and the predictor:
/// Linear(in → hidden) → BatchNorm → ReLU → Linear(hidden → out).
/// Names: `<prefix>.0` (linear), `.1` (batch norm), `.3` (linear), as the PyTorch Sequential.
public enum ProjectionHead {
    public static func make(_ builder: ParameterBuilder, inFeatures: Int, hidden: Int, outFeatures: Int) -> Sequential {
        Sequential("mlp \(inFeatures)→\(hidden)→\(outFeatures)", [
            LinearLayer(builder.child(0), inFeatures: inFeatures, outFeatures: hidden, initialization: .pytorchDefault),
            BatchNormLayer(builder.child(1), channels: hidden, reluAfter: true),  // `.2`, the ReLU, has no parameters
            LinearLayer(builder.child(3), inFeatures: hidden, outFeatures: outFeatures, initialization: .pytorchDefault),
        ])
    }
}
