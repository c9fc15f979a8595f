import KaleidoTensor

/// ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s").
///
/// Hierarchical models follow timm's `convnext.py` (1.0.x), names included, so a Kaleido arena
/// exports to a timm `convnext_*` state dict that loads with `strict=True`:
///
///     stem.0                       patchify conv P×P stride P, with bias
///     stem.1                       LayerNorm
///     stages.{i}.downsample.{0,1}  LayerNorm, then 2×2 stride-2 conv with bias (i ≥ 1)
///     stages.{i}.blocks.{j}.       conv_dw, norm, mlp.fc1, mlp.fc2, gamma
///     head.norm, head.fc           NormMlpClassifierHead: average pool → LayerNorm → linear
///
/// timm keeps `head.norm` when `num_classes=0` and drops only `head.fc`; so does Kaleido, so the
/// pooled features are layer-normalised in both and a feature extractor still loads strictly.
///
/// Isotropic models (paper §3.3) are not in timm; they follow the official
/// facebookresearch/ConvNeXt `models/convnext_isotropic.py` and its names: `stem` (a 16×16
/// stride-16 conv with bias and, as there, no LayerNorm after it), `blocks.{j}.` with `dwconv`,
/// `norm`, `pwconv1`, `pwconv2`, `gamma`, then `norm` after pooling and `head`. The official
/// isotropic models are trained without layer scale (`layer_scale_init_value=0`), so the presets
/// have no `gamma`; set `layerScaleInit` to add it.
///
/// Every block runs depthwise K×K conv → LayerNorm → linear C→4C → GELU → linear 4C→C → layer
/// scale → drop path, added to the block's input. Activations are channels-last, so the
/// "channels_last" LayerNorm of the reference and its linear layers apply to them directly.
public enum ConvNeXt {
    /// The macro design.
    public enum Kind: Sendable, Equatable {
        /// Patchify stem + LayerNorm, stages separated by LayerNorm + 2×2 stride-2 convolutions.
        case hierarchical
        /// Patchify stem only, one stage at constant resolution and width.
        case isotropic
    }

    public struct Config: Sendable {
        public var kind: Kind
        /// Blocks per stage (one stage for isotropic models).
        public var depths: [Int]
        /// Channels per stage.
        public var dims: [Int]
        /// Side and stride of the patchify stem: 4 in the paper (16 isotropic). 2 suits 32-px
        /// inputs: it replaces only the stem convolution, as the PyTorch benchmark reference does
        /// with `convnext_atto`, keeping a 16×16 first stage. (timm's own `patch_size=2` instead
        /// adds a stage-0 downsampling to keep the total stride at 32; that is not modelled.)
        public var stemPatch: Int
        /// Side of the depthwise convolution.
        public var kernel = 7
        /// Hidden width of the block MLP over its input width.
        public var mlpRatio = 4
        /// timm's `conv_mlp`: the block MLP is a pair of 1×1 convolutions rather than linear
        /// layers. Numerically the same on channels-last activations; it only changes the PyTorch
        /// shape of `mlp.fc{1,2}.weight` to (OC, IC, 1, 1). timm's atto/femto/pico/nano use it.
        public var convMLP = false
        /// Initial layer-scale γ; nil for no layer scale (no `gamma` parameters).
        public var layerScaleInit: Float? = 1e-6
        /// Stochastic depth rate of the last block; block k of n gets rate·k/(n−1), as timm's
        /// `calculate_drop_path_rates` and the official repository.
        public var dropPath: Float = 0
        /// Classifier weights start scaled by this (timm's `head_init_scale`).
        public var headInitScale: Float = 1
        /// Classifier outputs; 0 for a feature extractor (normalised pooled features out).
        public var classes = 0
        public var inChannels = 3
        /// LayerNorm ε everywhere (1e-6 in timm and the official code).
        public var epsilon: Float = 1e-6

        public init(kind: Kind = .hierarchical, depths: [Int], dims: [Int], stemPatch: Int? = nil, convMLP: Bool = false,
                    layerScaleInit: Float? = 1e-6, classes: Int = 0) {
            self.kind = kind
            self.depths = depths
            self.dims = dims
            self.stemPatch = stemPatch ?? (kind == .isotropic ? 16 : 4)
            self.convMLP = convMLP
            self.layerScaleInit = layerScaleInit
            self.classes = classes
        }

        // timm's variants; atto…nano are timm's own small models, with conv_mlp=True.
        public static let atto = Config(depths: [2, 2, 6, 2], dims: [40, 80, 160, 320], convMLP: true)
        public static let femto = Config(depths: [2, 2, 6, 2], dims: [48, 96, 192, 384], convMLP: true)
        public static let pico = Config(depths: [2, 2, 6, 2], dims: [64, 128, 256, 512], convMLP: true)
        public static let nano = Config(depths: [2, 2, 8, 2], dims: [80, 160, 320, 640], convMLP: true)
        public static let tiny = Config(depths: [3, 3, 9, 3], dims: [96, 192, 384, 768])
        public static let small = Config(depths: [3, 3, 27, 3], dims: [96, 192, 384, 768])
        public static let base = Config(depths: [3, 3, 27, 3], dims: [128, 256, 512, 1024])
        public static let large = Config(depths: [3, 3, 27, 3], dims: [192, 384, 768, 1536])
        public static let xlarge = Config(depths: [3, 3, 27, 3], dims: [256, 512, 1024, 2048])
        // The official repository's isotropic models.
        public static let isotropicSmall = Config(kind: .isotropic, depths: [18], dims: [384], layerScaleInit: nil)
        public static let isotropicBase = Config(kind: .isotropic, depths: [18], dims: [768], layerScaleInit: nil)
        public static let isotropicLarge = Config(kind: .isotropic, depths: [36], dims: [1024], layerScaleInit: nil)

        /// Channels of the pooled features (the classifier's input).
        public var featureDimension: Int { dims.last! }

        /// How far the last stage's grid is below the input's: an input side must be a multiple.
        public var totalStride: Int { stemPatch << (kind == .hierarchical ? dims.count - 1 : 0) }

        func validate() {
            precondition(!depths.isEmpty && depths.count == dims.count, "ConvNeXt: depths \(depths) and dims \(dims) must pair up")
            precondition(kind == .hierarchical || depths.count == 1, "ConvNeXt: an isotropic model has one stage, got \(depths)")
            precondition(stemPatch >= 1 && kernel % 2 == 1 && mlpRatio >= 1, "ConvNeXt: bad stem \(stemPatch) or kernel \(kernel)")
        }
    }

    /// Every preset by the name the model zoo and configs use, in size order.
    public static let presets: [(name: String, config: Config)] = [
        ("convnext-atto", .atto), ("convnext-femto", .femto), ("convnext-pico", .pico), ("convnext-nano", .nano),
        ("convnext-tiny", .tiny), ("convnext-small", .small), ("convnext-base", .base), ("convnext-large", .large),
        ("convnext-xlarge", .xlarge), ("convnext-isotropic-small", .isotropicSmall),
        ("convnext-isotropic-base", .isotropicBase), ("convnext-isotropic-large", .isotropicLarge),
    ]

    /// Stochastic depth per block: `blocks` rates rising linearly from 0 to `rate` (torch.linspace).
    public static func dropPathRates(_ rate: Float, blocks: Int) -> [Float] {
        guard blocks > 1 else { return Array(repeating: 0, count: blocks) }
        return (0..<blocks).map { rate * Float($0) / Float(blocks - 1) }
    }

    /// The network from (N, H, W, C) images to (N, features) — or (N, classes) with a classifier.
    public static func make(_ config: Config, _ builder: ParameterBuilder) -> Sequential {
        config.validate()
        switch config.kind {
        case .hierarchical: return hierarchical(config, builder)
        case .isotropic: return isotropic(config, builder)
        }
    }

    /// timm `_init_weights`: truncated normal (std 0.02) for every conv and linear weight, zero biases.
    static let weightStd: Float = 0.02

    static func hierarchical(_ config: Config, _ builder: ParameterBuilder) -> Sequential {
        let rates = dropPathRates(config.dropPath, blocks: config.depths.reduce(0, +))
        let stem = builder.child("stem")
        var layers: [Layer] = [Sequential("stem", [
            patchify(stem.child(0), config, from: config.inChannels, to: config.dims[0], patch: config.stemPatch),
            LayerNormLayer(stem.child(1), channels: config.dims[0], epsilon: config.epsilon),
        ])]
        var blockIndex = 0
        for (stage, (depth, channels)) in zip(config.depths, config.dims).enumerated() {
            let stageBuilder = builder.child("stages").child(stage)
            var stageLayers: [Layer] = []
            if stage > 0 {
                let downsample = stageBuilder.child("downsample")
                let previous = config.dims[stage - 1]
                stageLayers.append(Sequential("downsample", [
                    LayerNormLayer(downsample.child(0), channels: previous, epsilon: config.epsilon),
                    patchify(downsample.child(1), config, from: previous, to: channels, patch: 2),
                ]))
            }
            for index in 0..<depth {
                stageLayers.append(block(stageBuilder.child("blocks").child(index), config, channels: channels, names: .timm,
                                         dropPath: rates[blockIndex], name: "stages.\(stage).blocks.\(index)"))
                blockIndex += 1
            }
            layers.append(Sequential("stages.\(stage)", stageLayers))
        }
        let headBuilder = builder.child("head")
        layers.append(head(config, norm: headBuilder.child("norm"), classifier: headBuilder.child("fc")))
        return Sequential("convnext", layers)
    }

    static func isotropic(_ config: Config, _ builder: ParameterBuilder) -> Sequential {
        let channels = config.dims[0], depth = config.depths[0]
        let rates = dropPathRates(config.dropPath, blocks: depth)
        var layers: [Layer] = [patchify(builder.child("stem"), config, from: config.inChannels, to: channels, patch: config.stemPatch)]
        for index in 0..<depth {
            layers.append(block(builder.child("blocks").child(index), config, channels: channels, names: .official,
                                dropPath: rates[index], name: "blocks.\(index)"))
        }
        layers.append(head(config, norm: builder.child("norm"), classifier: builder.child("head")))
        return Sequential("convnext-isotropic", layers)
    }

    /// Non-overlapping P×P stride-P convolution with bias: the stem and the downsampling layers.
    static func patchify(_ b: ParameterBuilder, _ config: Config, from: Int, to: Int, patch: Int) -> Conv2dLayer {
        Conv2dLayer(b, inChannels: from, outChannels: to, kernel: patch, stride: patch, bias: true,
                    initialization: .truncatedNormal(std: weightStd))
    }

    /// Where a block's parameters live: timm's names or the official repository's.
    struct BlockNames {
        let depthwise, fc1, fc2: String
        static let timm = BlockNames(depthwise: "conv_dw", fc1: "mlp.fc1", fc2: "mlp.fc2")
        static let official = BlockNames(depthwise: "dwconv", fc1: "pwconv1", fc2: "pwconv2")
    }

    static func block(_ b: ParameterBuilder, _ config: Config, channels: Int, names: BlockNames, dropPath: Float,
                      name: String) -> Residual {
        let hidden = config.mlpRatio * channels
        func pointwise(_ child: String, _ from: Int, _ to: Int) -> Layer {
            config.convMLP
                ? Conv2dLayer(b.child(child), inChannels: from, outChannels: to, kernel: 1, bias: true,
                              initialization: .truncatedNormal(std: weightStd))
                : LinearLayer(b.child(child), inFeatures: from, outFeatures: to, initialization: .truncatedNormal(std: weightStd))
        }
        var branch: [Layer] = [
            DepthwiseConvLayer(b.child(names.depthwise), channels: channels, kernel: config.kernel, padding: config.kernel / 2,
                               initialization: .truncatedNormal(std: weightStd)),
            LayerNormLayer(b.child("norm"), channels: channels, epsilon: config.epsilon),
            pointwise(names.fc1, channels, hidden),
            GELULayer(),
            pointwise(names.fc2, hidden, channels),
        ]
        // Registered in the order they run, as every layer graph here: the backward pass then
        // finishes gradients from the highest arena offset down, which the bucketed all-reduce
        // relies on (`Sequential.backward`, `RunContext.gradientsFinal`). PyTorch lists `gamma`
        // first in a block's state dict; names, not order, matter for a strict load.
        if let value = config.layerScaleInit { branch.append(LayerScaleLayer(b, channels: channels, initialValue: value)) }
        if dropPath > 0 { branch.append(DropPathLayer(probability: dropPath)) }
        // The branch ends in a pointwise layer or layer scale (both keep their inputs), then
        // DropPath: the sum may overwrite the branch's output.
        return Residual(name, branch: Sequential("branch", branch), addsInPlace: true)
    }

    /// Global average pool → LayerNorm → linear classifier (none when `classes` is 0).
    static func head(_ config: Config, norm: ParameterBuilder, classifier: ParameterBuilder) -> Sequential {
        let features = config.featureDimension
        var layers: [Layer] = [GlobalAvgPoolLayer(), LayerNormLayer(norm, channels: features, epsilon: config.epsilon)]
        if config.classes > 0 {
            layers.append(LinearLayer(classifier, inFeatures: features, outFeatures: config.classes,
                                      initialization: .truncatedNormal(std: weightStd * config.headInitScale)))
        }
        return Sequential("head", layers)
    }
}
