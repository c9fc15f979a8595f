import KaleidoTensor

/// The Swin transformer of Omnivore (Girdhar et al. 2022): Video Swin (Liu et al. 2022) in 3-D
/// for images, videos and RGB-D, on channels-last tubes (N, T, H, W, C).
///
/// - An image is a one-frame video; the tokeniser repeats frames up to the temporal patch
///   (Omnivore's 2×4×4: one frame becomes two equal frames). RGB-D is the tube with depth as a
///   4th channel; its depth goes through a separate patch embedding summed to the RGB tokens.
/// - With a temporal window of 1 and a temporal patch of 1 the same code is 2-D Swin exactly
///   (`Config.imageTiny` has the 28,288,354 parameters of timm's swin_tiny_patch4_window7_224).
///
/// Parameter names follow torchvision's `swin3d_t` (`patch_embed.proj.weight`,
/// `features.{2i}.{j}.attn.qkv.weight`, `features.{2i+1}.reduction.weight`, `norm`, `head`),
/// plus Omnivore's `depth_patch_embed.*` and `heads.<dataset>.*`. Omnivore's own checkpoint
/// calls the trunk `trunk.layers.{i}.blocks.{j}.mlp.fc1` and the video head
/// `heads.video.1` (behind a dropout); importing it is a renaming, not a different model
/// (`model.init` does it: KaleidoTrain's `OmnivoreCheckpointNames`).
public enum SwinTransformer3D {
    public struct Config: Sendable, Equatable {
        public var embedDimension: Int
        /// Blocks per stage; stage i has embedDimension·2ⁱ channels and heads[i] heads.
        public var depths: [Int]
        public var heads: [Int]
        /// Attention window (T, H, W), clipped per input to the token grid.
        public var window: [Int]
        /// Patch (T, H, W) of the embedding.
        public var patch: [Int]
        public var mlpRatio = 4
        public var inChannels = 3
        /// Omnivore's separate 1-channel depth embedding (`depth_patch_embed`) for RGB-D input.
        public var depthEmbedding = false
        /// Start the depth embedding's output at zero (`ModelOptions.zeroInitResidual`), so the
        /// untrained network sees an RGB-D scene as its RGB image: features of one scene agree
        /// across sensors from the first step, and a trunk initialised from image weights keeps
        /// its behaviour on RGB-D until depth is learnt.
        public var zeroInitDepth = false
        /// Stochastic depth at the last block, rising linearly from 0 at the first.
        public var dropPath: Float = 0
        /// One classifier `head` (torchvision); 0 for none.
        public var classes = 0
        /// Per-dataset classifiers `heads.<name>` (Omnivore); used instead of `classes`.
        public var datasetHeads: [DatasetHeadsLayer.Head] = []

        public init(embedDimension: Int, depths: [Int], heads: [Int], window: [Int], patch: [Int]) {
            self.embedDimension = embedDimension
            self.depths = depths
            self.heads = heads
            self.window = window
            self.patch = patch
        }

        /// Channels of the pooled features.
        public var featureDimension: Int { embedDimension << (depths.count - 1) }

        /// Video Swin / torchvision swin3d_t, _s, _b: patch 2×4×4, window 8×7×7. torchvision uses
        /// drop path 0.1 / 0.1 / 0.1 for training from scratch; Omnivore 0.2 / 0.3 / 0.3.
        public static let tiny = Config(embedDimension: 96, depths: [2, 2, 6, 2], heads: [3, 6, 12, 24], window: [8, 7, 7], patch: [2, 4, 4])
        public static let small = Config(embedDimension: 96, depths: [2, 2, 18, 2], heads: [3, 6, 12, 24], window: [8, 7, 7], patch: [2, 4, 4])
        public static let base = Config(embedDimension: 128, depths: [2, 2, 18, 2], heads: [4, 8, 16, 32], window: [8, 7, 7], patch: [2, 4, 4])

        /// Omnivore's heads: ImageNet-1k, Kinetics-400, SUN RGB-D (19 classes).
        public static let omnivoreHeads = [DatasetHeadsLayer.Head("image", classes: 1000), DatasetHeadsLayer.Head("video", classes: 400),
                                           DatasetHeadsLayer.Head("rgbd", classes: 19)]

        /// Omnivore: `base` with the depth embedding, Omnivore's drop path and its three heads.
        /// (Omnivore's released Swin-B uses a 16×7×7 window; set `window` for that.)
        public static func omnivore(_ base: Config, dropPath: Float, heads: [DatasetHeadsLayer.Head] = omnivoreHeads) -> Config {
            var config = base
            config.depthEmbedding = true
            config.dropPath = dropPath
            config.datasetHeads = heads
            return config
        }

        public static let omnivoreTiny = omnivore(.tiny, dropPath: 0.2)
        public static let omnivoreSmall = omnivore(.small, dropPath: 0.3)
        public static let omnivoreBase = omnivore(.base, dropPath: 0.3)

        /// 2-D Swin-T (Liu et al. 2021) as the T = 1 case: patch 1×4×4, window 1×7×7.
        public static let imageTiny = Config(embedDimension: 96, depths: [2, 2, 6, 2], heads: [3, 6, 12, 24], window: [1, 7, 7], patch: [1, 4, 4])

        /// `tinyCIFAR` as Omnivore for 32-px data: the depth embedding, a temporal patch of 2
        /// (a one-frame image becomes two equal frames, a 4-frame clip two temporal tokens, as
        /// Omnivore's 2×4×4 does at 224 px) and a temporal window of 2 (one window over time).
        public static let omnivoreCIFAR: Config = {
            var config = Config(embedDimension: 48, depths: [2, 2, 2], heads: [3, 6, 12], window: [2, 4, 4], patch: [2, 2, 2])
            config.depthEmbedding = true
            config.datasetHeads = omnivoreHeads
            return config
        }()

        /// The 32-px benchmark model: Swin-T shrunk to embed 48, depths (2, 2, 2), heads (3, 6, 12),
        /// window 4 and patch 2 on one frame (16×16 → 8×8 → 4×4 tokens).
        public static let tinyCIFAR = Config(embedDimension: 48, depths: [2, 2, 2], heads: [3, 6, 12], window: [1, 4, 4], patch: [1, 2, 2])
    }

    /// The network from tubes (N, T, H, W, C) — C = 3, or 4 for RGB-D with the depth embedding —
    /// to pooled features (N, featureDimension), or to logits of the selected head.
    public static func make(_ config: Config, _ builder: ParameterBuilder) -> SwinTransformer3DNetwork {
        precondition(config.depths.count == config.heads.count && !config.depths.isEmpty,
                     "Swin needs one head count per stage: depths \(config.depths), heads \(config.heads)")
        precondition(config.classes == 0 || config.datasetHeads.isEmpty, "Swin: give either `classes` or `datasetHeads`, not both")
        let epsilon: Float = 1e-5  // torchvision and timm Swin use nn.LayerNorm's default
        var layers: [Layer] = [MultiModalPatchEmbedLayer(builder, inChannels: config.inChannels, embedDimension: config.embedDimension,
                                                         patch: config.patch, depthEmbedding: config.depthEmbedding,
                                                         zeroInitDepth: config.zeroInitDepth, normEpsilon: epsilon)]
        let features = builder.child("features")
        let totalBlocks = config.depths.reduce(0, +)
        var blockIndex = 0
        for (stage, depth) in config.depths.enumerated() {
            let channels = config.embedDimension << stage
            let stageBuilder = features.child(2 * stage)
            var blocks: [Layer] = []
            for index in 0..<depth {
                // torchvision: p = rate · k / (blocks − 1) for the k-th block overall.
                let rate = totalBlocks > 1 ? config.dropPath * Float(blockIndex) / Float(totalBlocks - 1) : config.dropPath
                blocks.append(block(stageBuilder.child(index), channels: channels, heads: config.heads[stage], window: config.window,
                                    shift: index % 2 == 0 ? [0, 0, 0] : config.window.map { $0 / 2 }, mlpRatio: config.mlpRatio,
                                    dropPath: rate, epsilon: epsilon, name: "features.\(2 * stage).\(index)"))
                blockIndex += 1
            }
            layers.append(Sequential("stage \(stage + 1)", blocks))
            if stage < config.depths.count - 1 {
                layers.append(PatchMergingLayer(features.child(2 * stage + 1), channels: channels, normEpsilon: epsilon))
            }
        }
        layers.append(LayerNormLayer(builder.child("norm"), channels: config.featureDimension, epsilon: epsilon))
        layers.append(GlobalAvgPoolLayer())
        let backbone = Sequential("swin3d", layers)

        var heads: Layer?
        if config.classes > 0 {
            heads = LinearLayer(builder.child("head"), inFeatures: config.featureDimension, outFeatures: config.classes,
                                initialization: .truncatedNormal(std: 0.02))
        } else if !config.datasetHeads.isEmpty {
            heads = DatasetHeadsLayer(builder.child("heads"), inFeatures: config.featureDimension, heads: config.datasetHeads)
        }
        return SwinTransformer3DNetwork(config: config, backbone: backbone, head: heads)
    }

    /// One Swin block, two pre-norm residuals:
    /// x + DropPath(Attention(LN₁ x)), then x + DropPath(MLP(LN₂ x)) with MLP = Linear 4C, GELU, Linear C.
    static func block(_ b: ParameterBuilder, channels: Int, heads: Int, window: [Int], shift: [Int], mlpRatio: Int, dropPath: Float,
                      epsilon: Float, name: String) -> Sequential {
        let attention = Sequential("attention", [
            LayerNormLayer(b.child("norm1"), channels: channels, epsilon: epsilon),
            WindowAttentionLayer(b.child("attn"), channels: channels, heads: heads, window: window, shift: shift),
            DropPathLayer(probability: dropPath),
        ])
        let mlpScope = b.child("mlp")
        // torchvision's MLP is Linear, GELU, Dropout, Linear, Dropout: hence `mlp.0` and `mlp.3`.
        let mlp = Sequential("mlp", [
            LayerNormLayer(b.child("norm2"), channels: channels, epsilon: epsilon),
            LinearLayer(mlpScope.child(0), inFeatures: channels, outFeatures: mlpRatio * channels, initialization: .truncatedNormal(std: 0.02)),
            GELULayer(),
            LinearLayer(mlpScope.child(3), inFeatures: mlpRatio * channels, outFeatures: channels, initialization: .truncatedNormal(std: 0.02)),
            DropPathLayer(probability: dropPath),
        ])
        // Window attention's output (it keeps its qkv and probabilities) and the last Linear's
        // (it keeps its input) are kept by no layer: the sums may overwrite them.
        return Sequential(name, [Residual("\(name) attention", branch: attention, addsInPlace: true),
                                 Residual("\(name) mlp", branch: mlp, addsInPlace: true)])
    }
}

/// A Swin-3D model: `backbone` (tubes → pooled features) and optionally `head` (a torchvision
/// `head` or Omnivore's per-dataset `heads`).
///
/// How a caller says what a batch is: the modality from the tensor (3 channels RGB image or
/// video, 4 channels RGB-D), the dataset by name — `forward(x, dataset: "video", context)` or
/// `dataset = "video"` then `forward(x, context)`. A batch is one dataset, as in Omnivore's
/// training. Objectives that need the features and the logits (ReLICv2 plus the Omnivore
/// supervised loss) run `backbone` and `head` themselves and add the feature gradients.
public final class SwinTransformer3DNetwork: Layer {
    public let config: SwinTransformer3D.Config
    public let backbone: Sequential
    public let head: Layer?

    init(config: SwinTransformer3D.Config, backbone: Sequential, head: Layer?) {
        self.config = config
        self.backbone = backbone
        self.head = head
    }

    /// The per-dataset heads, when the model has them.
    public var datasetHeads: DatasetHeadsLayer? { head as? DatasetHeadsLayer }

    /// The dataset whose head the next forward uses (nil with a single or no head).
    public var dataset: String? {
        get { datasetHeads?.selected }
        set {
            guard let heads = datasetHeads else {
                precondition(newValue == nil, "this Swin has no per-dataset heads (asked for \(newValue ?? ""))")
                return
            }
            heads.selected = newValue
        }
    }

    public var featureDimension: Int { config.featureDimension }

    /// Logits of `dataset`'s head for a batch from that dataset.
    public func forward(_ input: Tensor, dataset: String, _ context: RunContext) -> Tensor {
        self.dataset = dataset
        return forward(input, context)
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let features = backbone.forward(input, context)
        return head?.forward(features, context) ?? features
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        backbone.backward(head?.backward(dOutput, context) ?? dOutput, context)
    }

    public func backwardWithoutInputGradient(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) {
        guard let head else { return backbone.backwardWithoutInputGradient(dOutput, consuming: consuming, context) }
        let mark = context.inBackward ? context.gradientScratch.mark() : nil
        backbone.backwardWithoutInputGradient(head.backward(dOutput, context), consuming: true, context)
        if let mark { context.gradientScratch.release(to: mark) }
    }

    public var parameterRange: Range<Int>? { span(of: [backbone, head]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        let features = backbone.describe(inputShape)
        let children = [features] + (head.map { [$0.describe(features.outputShape)] } ?? [])
        return LayerDescription(name: "swin3d", outputShape: children.last!.outputShape, children: children)
    }
}

extension ModelZoo {
    /// The Swin models by zoo name, for `ModelZoo.entries` to merge. `options.classes` adds a
    /// torchvision `head` (0: features); the Omnivore models always carry their three dataset heads.
    /// `options.baseWidth` sets the embedding width (heads reduced to divisors of each stage's width).
    static let swinEntries: [String: Entry] = {
        var entries: [String: Entry] = [:]
        func swin(_ name: String, _ base: SwinTransformer3D.Config, _ summary: String, input: [Int]) {
            entries[name] = Entry(summary: summary, inputShape: input) { builder, options in
                var config = base
                if let heads = options.datasetHeads, !config.datasetHeads.isEmpty { config.datasetHeads = heads }
                if config.datasetHeads.isEmpty { config.classes = options.classes }
                if options.dropPath > 0 { config.dropPath = options.dropPath }
                config.zeroInitDepth = options.zeroInitResidual
                if let window = options.window { config.window = window }
                if let width = options.baseWidth {
                    // A narrower model for debugging: keep the heads that still divide each stage's width.
                    func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
                    config.embedDimension = width
                    config.heads = config.heads.enumerated().map { gcd($1, width << $0) }
                }
                return (SwinTransformer3D.make(config, builder), config.featureDimension)
            }
        }
        swin("swin-t", .imageTiny, "Swin-T (2-D, timm swin_tiny_patch4_window7_224) as one-frame Swin-3D", input: [1, 1, 224, 224, 3])
        swin("swin-cifar", .tinyCIFAR, "Swin for 32-px images: embed 48, depths 2-2-2, window 4, patch 2", input: [1, 1, 32, 32, 3])
        swin("swin3d-t", .tiny, "torchvision swin3d_t (Video Swin-T, patch 2×4×4, window 8×7×7)", input: [1, 16, 224, 224, 3])
        swin("swin3d-s", .small, "torchvision swin3d_s (Video Swin-S)", input: [1, 16, 224, 224, 3])
        swin("swin3d-b", .base, "torchvision swin3d_b (Video Swin-B)", input: [1, 16, 224, 224, 3])
        swin("omnivore-swin-t", .omnivoreTiny, "Omnivore Swin-T: swin3d_t + depth patch embedding + image/video/rgbd heads", input: [1, 2, 224, 224, 3])
        swin("omnivore-swin-s", .omnivoreSmall, "Omnivore Swin-S", input: [1, 2, 224, 224, 3])
        swin("omnivore-swin-cifar", .omnivoreCIFAR,
             "Omnivore for 32-px data: swin-cifar in 3-D (patch 2×2×2, window 2×4×4) + depth embedding + heads",
             input: [1, 2, 32, 32, 3])
        swin("omnivore-swin-b", .omnivoreBase, "Omnivore Swin-B (window 8×7×7; the release uses 16×7×7: model.window)", input: [1, 2, 224, 224, 3])
        return entries
    }()
}
