/// Options every backbone understands; each model ignores what does not apply to it.
public struct ModelOptions: Sendable {
    /// Classifier outputs; 0 builds a feature extractor (pooled features out).
    public var classes = 0
    /// Stochastic depth rate at the last block (ConvNeXt, Swin).
    public var dropPath: Float = 0
    /// Start residual branches at zero: ResNet's last BN γ; Omnivore's depth embedding.
    public var zeroInitResidual = false
    /// Width of the first stage instead of the reference one (tests, quick experiments).
    public var baseWidth: Int?
    /// ConvNeXt: patchify stem size instead of the reference one (2 for 32-px inputs).
    public var stemPatch: Int?
    /// ConvNeXt: layer-scale initial value (nil keeps the preset's; 0 removes layer scale).
    public var layerScaleInit: Float?
    /// Omnivore: the per-dataset heads instead of the preset's three (ImageNet, Kinetics, SUN
    /// RGB-D); empty builds the trunk alone (pretraining registers its own heads).
    public var datasetHeads: [DatasetHeadsLayer.Head]?
    /// Swin-3D: the attention window (Wt, Wh, Ww) instead of the preset's (Omnivore's released
    /// Swin-B uses 16×7×7).
    public var window: [Int]?

    public init(classes: Int = 0, dropPath: Float = 0, zeroInitResidual: Bool = false, baseWidth: Int? = nil,
                stemPatch: Int? = nil, layerScaleInit: Float? = nil, datasetHeads: [DatasetHeadsLayer.Head]? = nil) {
        self.datasetHeads = datasetHeads
        self.classes = classes
        self.dropPath = dropPath
        self.zeroInitResidual = zeroInitResidual
        self.baseWidth = baseWidth
        self.stemPatch = stemPatch
        self.layerScaleInit = layerScaleInit
    }
}

/// A network ready to run and what a caller needs to know about it.
public struct BuiltNetwork {
    public let name: String
    public let network: Layer
    /// Width of the pooled features (the classifier's input).
    public let featureDimension: Int
    /// A typical input, channels-last, for summaries and benchmarks: (1, H, W, 3) or (1, T, H, W, 3).
    public let exampleInputShape: [Int]

    /// The network up to its pooled features, without any classifier: what self-supervised
    /// objectives and frozen-feature evaluation run. (Feature extractors are built without
    /// classifiers already; Omnivore's Swin keeps its dataset heads apart.)
    public var trunk: Layer { (network as? SwinTransformer3DNetwork)?.backbone ?? network }

    /// Whether the network takes (N, T, H, W, C) tubes (video and RGB-D natively), not images only.
    public var spatiotemporal: Bool { exampleInputShape.count == 5 }
}

/// Errors naming the model the user asked for.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case unknownModel(String, known: [String])

    public var description: String {
        switch self {
        case .unknownModel(let name, let known):
            return "unknown model \"\(name)\"; known models: \(known.joined(separator: ", "))"
        }
    }
}

/// Every backbone by the name configs and the CLI use.
public enum ModelZoo {
    struct Entry: Sendable {
        let summary: String
        let inputShape: [Int]
        /// The smallest input side the network runs on with these options, and why.
        var minimumSide: @Sendable (ModelOptions) -> (side: Int, reason: String) = { _ in (1, "") }
        let make: @Sendable (ParameterBuilder, ModelOptions) -> (Layer, Int)
    }

    static let entries: [String: Entry] = {
        var entries: [String: Entry] = [:]
        func resnet(_ name: String, _ base: ResNet.Config, cifar: Bool, side: Int) {
            entries[name] = Entry(summary: "torchvision \(name.replacingOccurrences(of: "-cifar", with: ""))\(cifar ? " with the CIFAR stem" : "")",
                                  inputShape: [1, side, side, 3]) { builder, options in
                var config = base
                config.cifarStem = cifar
                config.classes = options.classes
                config.zeroInitResidual = options.zeroInitResidual
                if let width = options.baseWidth { config.width = width }
                return (ResNet.make(config, builder), config.featureDimension)
            }
        }
        resnet("resnet18", .resnet18, cifar: false, side: 224)
        resnet("resnet18-cifar", .resnet18, cifar: true, side: 32)
        resnet("resnet50", .resnet50, cifar: false, side: 224)
        resnet("resnet50-cifar", .resnet50, cifar: true, side: 32)
        for (name, preset) in ConvNeXt.presets {
            let isotropic = preset.kind == .isotropic
            let summary = isotropic ? "ConvNeXt \(name.dropFirst("convnext-".count)) (official repo's names)"
                                    : "timm \(name.replacingOccurrences(of: "-", with: "_"))"
            entries[name] = Entry(summary: summary, inputShape: [1, 224, 224, 3],
                                  minimumSide: { convNeXtMinimumSide(convNeXtConfig(preset, $0)) }) { builder, options in
                let config = convNeXtConfig(preset, options)  // model.base_width changes the feature width
                return (ConvNeXt.make(config, builder), config.featureDimension)
            }
        }
        // The benchmark model: ConvNeXt-atto with a 2×2 stem for 32-px images.
        var atto32 = ConvNeXt.Config.atto
        atto32.stemPatch = 2
        entries["convnext-atto-32"] = Entry(summary: "ConvNeXt-atto with a 2×2 stem, for 32-px images", inputShape: [1, 32, 32, 3],
                                            minimumSide: { [atto32] in convNeXtMinimumSide(convNeXtConfig(atto32, $0)) }) {
            [atto32] builder, options in
            let config = convNeXtConfig(atto32, options)
            return (ConvNeXt.make(config, builder), config.featureDimension)
        }
        entries.merge(swinEntries) { current, _ in current }
        return entries
    }()

    static func convNeXtConfig(_ preset: ConvNeXt.Config, _ options: ModelOptions) -> ConvNeXt.Config {
        var config = preset
        config.classes = options.classes
        config.dropPath = options.dropPath
        if let patch = options.stemPatch { config.stemPatch = patch }
        if let scale = options.layerScaleInit { config.layerScaleInit = scale > 0 ? scale : nil }
        if let width = options.baseWidth { config.dims = config.dims.map { $0 * width / config.dims[0] } }
        return config
    }

    /// A ConvNeXt's stem and 2×2 stride-2 downsamplings each need a pixel to work on.
    static func convNeXtMinimumSide(_ config: ConvNeXt.Config) -> (side: Int, reason: String) {
        let downsamplings = config.kind == .hierarchical ? config.dims.count - 1 : 0
        return (config.totalStride, "a \(config.stemPatch)×\(config.stemPatch) stem"
                + (downsamplings > 0 ? ", then \(downsamplings) downsamplings by 2" : ""))
    }

    public static var names: [String] { entries.keys.sorted() }

    /// The smallest input side in pixels `name` runs on with `options`, and why: a view or
    /// `--input-size` below it is refused before any layer sees it.
    public static func minimumInputSide(_ name: String, options: ModelOptions = ModelOptions()) throws -> (side: Int, reason: String) {
        guard let entry = entries[name] else { throw ModelError.unknownModel(name, known: names) }
        return entry.minimumSide(options)
    }

    public static func summary(of name: String) -> String? { entries[name]?.summary }

    /// Builds `name`, registering its parameters with `builder`.
    public static func make(_ name: String, options: ModelOptions = ModelOptions(), builder: ParameterBuilder) throws -> BuiltNetwork {
        guard let entry = entries[name] else { throw ModelError.unknownModel(name, known: names) }
        let (network, features) = entry.make(builder, options)
        return BuiltNetwork(name: name, network: network, featureDimension: features, exampleInputShape: entry.inputShape)
    }
}
