import KaleidoData
import KaleidoNN

/// The whole configuration of a Kaleido run. Every value has one home here, with its default;
/// code receives these structs, never YAML or the environment.
///
/// YAML keys are the snake_case forms of the property names (`optim.warmup_steps`). The defaults
/// are the debug run: `configs/debug.yaml` spells them out, and a test keeps the two equal.
public struct KaleidoConfig: Codable, Equatable, Sendable {
    public var run = RunConfig()
    public var model = ModelConfig()
    public var data = DataConfig()
    public var ssl = SSLConfig()
    public var optim = OptimConfig()
    public var dist = DistConfig()
    public var checkpoint = CheckpointConfig()
    public var eval = EvalConfig()

    public init() {}

    func validate(_ check: inout ConfigValidator) {
        run.validate(&check)
        model.validate(&check)
        data.validate(&check)
        ssl.validate(&check)
        optim.validate(&check)
        dist.validate(&check)
        checkpoint.validate(&check)
        eval.validate(&check)
        validateAcrossSections(&check)
    }

    /// Rules that tie sections together, checked when the config loads, each reported at the
    /// key a user would change.
    func validateAcrossSections(_ check: inout ConfigValidator) {
        if !model.arch.takesClips {
            for (key, share) in [("video", data.mix.video), ("rgbd", data.mix.rgbd)] {
                check.require(share == 0, "data.mix.\(key)",
                              "needs an Omnivore backbone (model.arch: omnivore_swin_cifar, omnivore_swin_tiny, …); "
                              + "\(model.arch.rawValue) takes images only, got \(share)")
            }
        }
        // A view smaller than the backbone can take would stop in the middle of a forward pass.
        if let minimum = try? ModelZoo.minimumInputSide(model.arch.zooName(cifarStem: model.cifarStem), options: model.zooOptions) {
            var views = [("data.large_size", data.largeSize)]
            if data.smallCrops > 0 { views.append(("data.small_size", data.smallSize)) }
            for (key, size) in views {
                check.require(size >= minimum.side, key,
                              "must be ≥ \(minimum.side) pixels for \(model.arch.rawValue) with model.stem_patch \(model.stemPatch) "
                              + "(\(minimum.reason)), got \(size)")
            }
        }
        validateGroups(&check, worldSize: 1)
    }

    /// A joint step gives each rank a slice of every modality's group; ReLICv2 needs at least 2
    /// samples in each (a positive and a negative), and BatchNorm more than one row.
    func validateGroups(_ check: inout ConfigValidator, worldSize: Int) {
        guard data.mixMode == .joint else { return }
        let shares = [("image", data.mix.image), ("video", data.mix.video), ("rgbd", data.mix.rgbd)].filter { $0.1 > 0 }
        guard !shares.isEmpty else { return }
        let counts = MixSchedule.apportion(shares.map(\.1), total: data.batchSize)
        for ((key, _), count) in zip(shares, counts) {
            check.require(count / worldSize >= 2, "data.batch_size",
                          "gives the \(key) group \(count) samples per step (data.mix.\(key)), "
                          + (worldSize > 1 ? "\(count / worldSize) on some of \(worldSize) ranks; " : "")
                          + "every rank needs at least 2 of each modality: raise data.batch_size or the share")
        }
    }
}

/// Identity and length of a run.
public struct RunConfig: Codable, Equatable, Sendable {
    /// Name of the run; its directory is `output_dir/name`.
    public var name = "debug"
    /// Parent directory of run directories.
    public var outputDir = "runs"
    /// Seed of every random stream (initialisation, data order, augmentations, drop path).
    public var seed = 0
    /// Optimiser steps of the whole run. The debug run's 1300 take ≈ 8.5 minutes on 2 AVX2 cores
    /// (the 10 it may take, with room for a slower machine); at 1000 its probe cleared the random
    /// network by 14.6–16.0 points, too near the 15 it must; at 1300 by 15.4–15.8 (seeds 0 and 1,
    /// two threads) and 15.6 / 18.8 (one thread each): still a thin margin.
    public var steps = 1300
    /// Metrics are logged every this many steps.
    public var logEvery = 10

    func validate(_ check: inout ConfigValidator) {
        check.require(!name.isEmpty && !name.contains("/"), "run.name", "must be a non-empty name without '/'")
        check.require(seed >= 0, "run.seed", "must be ≥ 0, got \(seed)")
        check.require(steps >= 1, "run.steps", "must be ≥ 1, got \(steps)")
        check.require(logEvery >= 1, "run.log_every", "must be ≥ 1, got \(logEvery)")
    }
}

/// Backbone architectures of the three papers.
public enum Architecture: String, ConfigChoice {
    case resnet18, resnet50
    case convnextAtto = "convnext_atto", convnextFemto = "convnext_femto", convnextPico = "convnext_pico"
    case convnextNano = "convnext_nano", convnextTiny = "convnext_tiny", convnextSmall = "convnext_small"
    case convnextBase = "convnext_base", convnextLarge = "convnext_large", convnextXLarge = "convnext_xlarge"
    case convnextIsoSmall = "convnext_iso_small", convnextIsoBase = "convnext_iso_base"
    case convnextIsoLarge = "convnext_iso_large"
    case omnivoreSwinTiny = "omnivore_swin_tiny", omnivoreSwinSmall = "omnivore_swin_small"
    case omnivoreSwinBase = "omnivore_swin_base"
    /// Omnivore for 32-px data: the swin-cifar shape in 3-D with the depth embedding.
    case omnivoreSwinCifar = "omnivore_swin_cifar"

    /// Omnivore's backbones take video clips and RGB-D; the others images only.
    public var takesClips: Bool {
        switch self {
        case .omnivoreSwinTiny, .omnivoreSwinSmall, .omnivoreSwinBase, .omnivoreSwinCifar: return true
        default: return false
        }
    }

    /// The model zoo's name of this architecture (ResNets with or without the CIFAR stem).
    public func zooName(cifarStem: Bool) -> String {
        switch self {
        case .resnet18: return cifarStem ? "resnet18-cifar" : "resnet18"
        case .resnet50: return cifarStem ? "resnet50-cifar" : "resnet50"
        case .omnivoreSwinTiny: return "omnivore-swin-t"
        case .omnivoreSwinSmall: return "omnivore-swin-s"
        case .omnivoreSwinBase: return "omnivore-swin-b"
        case .omnivoreSwinCifar: return "omnivore-swin-cifar"
        case .convnextIsoSmall: return "convnext-isotropic-small"
        case .convnextIsoBase: return "convnext-isotropic-base"
        case .convnextIsoLarge: return "convnext-isotropic-large"
        default: return rawValue.replacingOccurrences(of: "_", with: "-")
        }
    }
}

/// The encoder being pretrained.
public struct ModelConfig: Codable, Equatable, Sendable {
    public var arch = Architecture.resnet18
    /// ResNets: the CIFAR stem (3×3 conv, stride 1, no max-pool) for small inputs.
    public var cifarStem = true
    /// Width of the first stage (ResNet channels, ConvNeXt/Swin embedding); 0 keeps the
    /// reference width. The debug run uses a narrow ResNet-18 so it finishes in minutes.
    public var baseWidth = 16
    /// ConvNeXt: patchify stem size (4 in the paper, 2 for 32-px inputs).
    public var stemPatch = 4
    /// Stochastic depth rate at the last block (linearly increasing from 0).
    public var dropPath = 0.0
    /// Residual branches start at zero: the last BN gamma of each ResNet block, and Omnivore's
    /// depth embedding (an RGB-D scene first gives its RGB image's tokens; depth is learnt on top).
    public var zeroInitResidual = true
    /// ConvNeXt: layer scale initial value (0 disables layer scale).
    public var layerScaleInit = 1e-6
    /// Weights to start from instead of the initialisation ("" = none): a safetensors state dict
    /// with timm/torchvision names (or Omnivore's official ones, translated) — public ImageNet
    /// weights (`tools/pth-to-safetensors.py` converts a `.pth`), or an encoder `kaleido
    /// checkpoint export` wrote. Loaded into the encoder, online and target, with a strict
    /// name-and-shape check; not on `--resume`.
    public var `init` = ""
    /// Name prefixes `init` skips in the file and the model (a classifier head: `fc.`, `head.`).
    public var initIgnore: [String] = []
    /// Omnivore (Swin-3D): the attention window [Wt, Wh, Ww] instead of the architecture's;
    /// empty keeps it. Omnivore's released Swin-B was trained with [16, 7, 7].
    public var window: [Int] = []

    /// What the model zoo builds from this section (no classifier, no stochastic depth: callers
    /// that train add theirs).
    public var zooOptions: ModelOptions {
        var options = ModelOptions(zeroInitResidual: zeroInitResidual, baseWidth: baseWidth > 0 ? baseWidth : nil,
                                   stemPatch: stemPatch, layerScaleInit: Float(layerScaleInit))
        options.window = window.isEmpty ? nil : window
        return options
    }

    func validate(_ check: inout ConfigValidator) {
        check.require(`init`.isEmpty || `init`.hasSuffix(".safetensors"), "model.init",
                      "must be a .safetensors file (convert a PyTorch .pth with tools/pth-to-safetensors.py), got \(`init`)")
        check.require(!initIgnore.contains(""), "model.init_ignore", "an empty prefix would skip every tensor")
        check.require(window.isEmpty || (window.count == 3 && window.allSatisfy { $0 >= 1 }), "model.window",
                      "must be [Wt, Wh, Ww], three positive sizes, got \(window)")
        check.require(window.isEmpty || arch.takesClips, "model.window", "sets a Swin-3D attention window; \(arch.rawValue) has none")
        check.require(baseWidth >= 0, "model.base_width", "must be ≥ 0 (0 = the reference width), got \(baseWidth)")
        check.require([1, 2, 4].contains(stemPatch), "model.stem_patch", "must be 1, 2 or 4, got \(stemPatch)")
        check.require((0..<1).contains(dropPath), "model.drop_path", "must be in [0, 1), got \(dropPath)")
        check.require(layerScaleInit >= 0, "model.layer_scale_init", "must be ≥ 0, got \(layerScaleInit)")
    }
}

/// Where samples come from.
public enum DatasetKind: String, ConfigChoice {
    /// The embedded procedural dataset: no download.
    case synthetic
    /// `root/class/xxx.jpg|png` (ImageNet layout).
    case imageFolder = "image_folder"
    /// `root/class/video_id/000001.jpg`.
    case videoFrames = "video_frames"
    /// RGB image plus 16-bit depth PNG per sample (SUN RGB-D layout).
    case rgbd
    /// WebDataset tar shards: `data.root` (images), `data.video_root`, `data.rgbd_root`, each a
    /// folder with `train/` and `val/` shards or a brace pattern (KaleidoData's `WebDataset`).
    case webdataset
}

/// Proportions of the modalities in joint (Omnivore) batches.
public struct ModalityMix: Codable, Equatable, Sendable {
    public var image = 1.0
    public var video = 0.0
    public var rgbd = 0.0
}

/// How joint batches interleave modalities (`data.mix_mode`): KaleidoData's `MixMode`.
/// `mixed`, the name before `joint`, still loads.
extension MixMode: ConfigChoice {
    public static var aliases: [String: MixMode] { ["mixed": .joint] }
}

/// Data, views and batch.
public struct DataConfig: Codable, Equatable, Sendable {
    public var dataset = DatasetKind.synthetic
    /// Root directory of a real dataset (unused by `synthetic`). With `root/train` and `root/val`
    /// folders those are the splits; otherwise the root is the training split.
    public var root = ""
    /// Roots of the other modalities of a joint run on folders (the modality of `dataset` uses `root`).
    public var videoRoot = ""
    public var rgbdRoot = ""
    /// Raw depth-PNG units per metre (1000: millimetres; Kinect v2 files of SUN RGB-D are often 5000 after unshifting).
    public var depthScale = 1000.0
    /// Global batch (all ranks together): the number of source samples per step.
    public var batchSize = 64
    /// Large views per sample (L) and their side in pixels.
    public var largeCrops = 2
    public var largeSize = 32
    /// Small views per sample (S) and their side in pixels.
    public var smallCrops = 2
    public var smallSize = 16
    /// Random-resized-crop area range of large and small views (ImageNet recipe: 0.08–1 and 0.05–0.14;
    /// the debug defaults suit 32-px images).
    public var largeScaleMin = 0.15
    public var largeScaleMax = 0.5
    public var smallScaleMin = 0.05
    public var smallScaleMax = 0.3
    /// Colour-jitter strength s: brightness and contrast 0.4·s, saturation 0.2·s, hue 0.1·s (BYOL: s = 1).
    public var jitterStrength = 1.0
    /// Frames per video view and the step between them.
    public var clipFrames = 4
    public var clipStride = 1
    /// Decode/augment threads per rank.
    public var workers = 1
    /// Batches made ahead of the trainer (at least `workers`).
    public var prefetch = 2
    /// Classes and split sizes of the synthetic dataset.
    public var syntheticClasses = 10
    public var syntheticTrainSize = 2000
    public var syntheticValSize = 500
    /// Side of synthetic images in pixels, frames per synthetic video, and the scenes' seed.
    public var syntheticSize = 32
    public var syntheticFrames = 8
    /// Objects of the sample's class in every synthetic scene (see `SyntheticSpec.objects`).
    public var syntheticObjects = 4
    public var syntheticSeed = 0
    public var mix = ModalityMix()
    public var mixMode = MixMode.joint
    /// Supervised fine-tuning augmentations: the random resized crop's smallest area share,
    /// RandAugment layers and magnitude, Mixup and CutMix α, Random Erasing probability, label
    /// smoothing. The defaults are what fine-tunes the debug run best (docs/evaluation.md:
    /// crops ≥ 35 %, none of the heavy augmentations); the ImageNet configs set the ConvNeXt
    /// recipe (0.08, 2 × 9, 0.8, 1.0, 0.25, 0.1).
    public var finetuneScaleMin = 0.35
    public var randaugmentLayers = 0
    public var randaugmentMagnitude = 9.0
    public var mixupAlpha = 0.0
    public var cutmixAlpha = 0.0
    public var erasingProbability = 0.0
    public var labelSmoothing = 0.1

    /// The embedded dataset these keys describe (also what `kaleido data export-synthetic` writes).
    public var syntheticSpec: SyntheticSpec {
        var spec = SyntheticSpec()
        spec.classes = syntheticClasses
        spec.trainSize = syntheticTrainSize
        spec.valSize = syntheticValSize
        spec.size = syntheticSize
        spec.frames = syntheticFrames
        spec.objects = syntheticObjects
        spec.seed = UInt64(syntheticSeed)
        return spec
    }

    /// The folder root of each modality in a run on folders (nil: none configured).
    var imageRoot: String? { (dataset == .imageFolder || dataset == .webdataset) && !root.isEmpty ? root : nil }
    var videoFolder: String? { dataset == .videoFrames && !root.isEmpty ? root : (videoRoot.isEmpty ? nil : videoRoot) }
    var rgbdFolder: String? { dataset == .rgbd && !root.isEmpty ? root : (rgbdRoot.isEmpty ? nil : rgbdRoot) }

    func validate(_ check: inout ConfigValidator) {
        check.require(batchSize >= 2, "data.batch_size", "must be ≥ 2 (negatives come from the batch), got \(batchSize)")
        check.require(largeCrops >= 2, "data.large_crops", "must be ≥ 2 (ReLICv2 pairs large views), got \(largeCrops)")
        check.require(smallCrops >= 0, "data.small_crops", "must be ≥ 0, got \(smallCrops)")
        check.require(largeSize >= 8, "data.large_size", "must be ≥ 8 pixels, got \(largeSize)")
        check.require(smallSize >= 8 && smallSize <= largeSize, "data.small_size",
                      "must be between 8 and data.large_size (\(largeSize)), got \(smallSize)")
        check.require(largeScaleMin > 0 && largeScaleMin <= largeScaleMax, "data.large_scale_min",
                      "must be in (0, data.large_scale_max], got \(largeScaleMin)")
        check.require(largeScaleMax <= 1, "data.large_scale_max", "must be ≤ 1, got \(largeScaleMax)")
        check.require(smallScaleMin > 0 && smallScaleMin <= smallScaleMax, "data.small_scale_min",
                      "must be in (0, data.small_scale_max], got \(smallScaleMin)")
        check.require(smallScaleMax <= 1, "data.small_scale_max", "must be ≤ 1, got \(smallScaleMax)")
        check.require(jitterStrength >= 0, "data.jitter_strength", "must be ≥ 0, got \(jitterStrength)")
        check.require(clipFrames >= 1, "data.clip_frames", "must be ≥ 1, got \(clipFrames)")
        check.require(clipStride >= 1, "data.clip_stride", "must be ≥ 1, got \(clipStride)")
        check.require(depthScale > 0, "data.depth_scale", "must be > 0, got \(depthScale)")
        check.require(workers >= 1, "data.workers", "must be ≥ 1, got \(workers)")
        check.require(prefetch >= 1, "data.prefetch", "must be ≥ 1, got \(prefetch)")
        check.require(syntheticClasses >= 2 && syntheticClasses <= 24, "data.synthetic_classes",
                      "must be in 2…24 (6 shapes × 4 textures), got \(syntheticClasses)")
        check.require(dataset != .synthetic || syntheticTrainSize >= batchSize, "data.synthetic_train_size",
                      "must be ≥ data.batch_size (\(batchSize)), got \(syntheticTrainSize)")
        check.require(syntheticValSize >= 1, "data.synthetic_val_size", "must be ≥ 1, got \(syntheticValSize)")
        check.require(syntheticSize >= 8, "data.synthetic_size", "must be ≥ 8 pixels, got \(syntheticSize)")
        check.require(syntheticFrames >= 1, "data.synthetic_frames", "must be ≥ 1, got \(syntheticFrames)")
        check.require((1...16).contains(syntheticObjects), "data.synthetic_objects", "must be in 1…16, got \(syntheticObjects)")
        check.require(syntheticSeed >= 0, "data.synthetic_seed", "must be ≥ 0, got \(syntheticSeed)")
        check.require(dataset == .synthetic || !root.isEmpty || (dataset == .webdataset && !(videoRoot + rgbdRoot).isEmpty),
                      "data.root", "is required for dataset \(dataset.rawValue)")
        for (key, share) in [("image", mix.image), ("video", mix.video), ("rgbd", mix.rgbd)] {
            check.require(share >= 0, "data.mix.\(key)", "must be ≥ 0, got \(share)")
        }
        check.require(mix.image + mix.video + mix.rgbd > 0, "data.mix", "needs at least one modality with a positive share")
        // A positive share without a folder for that modality (e.g. data.mix.video with no
        // data.video_root) is reported when the data is opened, naming the key to set; configs
        // written for a cluster stay loadable on a laptop that lacks the data.
        check.require(finetuneScaleMin > 0 && finetuneScaleMin <= 1, "data.finetune_scale_min",
                      "must be in (0, 1], got \(finetuneScaleMin)")
        check.require((0...10).contains(randaugmentMagnitude), "data.randaugment_magnitude",
                      "must be in [0, 10], got \(randaugmentMagnitude)")
        check.require(randaugmentLayers >= 0, "data.randaugment_layers", "must be ≥ 0, got \(randaugmentLayers)")
        check.require(mixupAlpha >= 0, "data.mixup_alpha", "must be ≥ 0, got \(mixupAlpha)")
        check.require(cutmixAlpha >= 0, "data.cutmix_alpha", "must be ≥ 0, got \(cutmixAlpha)")
        check.require((0...1).contains(erasingProbability), "data.erasing_probability",
                      "must be in [0, 1], got \(erasingProbability)")
        check.require((0..<1).contains(labelSmoothing), "data.label_smoothing", "must be in [0, 1), got \(labelSmoothing)")
    }
}

extension KaleidoConfig {
    /// The `data` section, with the run seed and `ssl.saliency_probability`, as KaleidoData
    /// takes it: what `DataPipeline` and `DataLoader` are built from.
    public var dataConfiguration: DataConfiguration {
        let source: DataConfiguration.Source
        if data.dataset == .synthetic {
            source = .synthetic(data.syntheticSpec)
        } else if data.dataset == .webdataset {
            source = .shards(image: data.imageRoot, video: data.videoFolder, rgbd: data.rgbdFolder)
        } else {
            source = .folders(image: data.imageRoot, video: data.videoFolder, rgbd: data.rgbdFolder)
        }
        let recipe = MultiCropRecipe.relicv2(
            largeCrops: data.largeCrops, largeSize: data.largeSize,
            largeScale: Float(data.largeScaleMin)...Float(data.largeScaleMax),
            smallCrops: data.smallCrops, smallSize: data.smallSize,
            smallScale: Float(data.smallScaleMin)...Float(data.smallScaleMax),
            jitterStrength: Float(data.jitterStrength), saliencyProbability: Float(ssl.saliencyProbability),
            clipFrames: data.clipFrames, clipStride: data.clipStride)
        var configuration = DataConfiguration(source: source, recipe: recipe)
        configuration.depthScale = Float(data.depthScale)
        configuration.shares = [.image: data.mix.image, .video: data.mix.video, .rgbd: data.mix.rgbd]
        configuration.mixMode = data.mixMode
        configuration.globalBatch = data.batchSize
        configuration.seed = UInt64(run.seed)
        configuration.workers = data.workers
        configuration.prefetch = data.prefetch
        configuration.shardIndexCache = run.outputDir.isEmpty ? nil : run.outputDir + "/.shard-index"
        var finetune = FineTuneRecipe(size: data.largeSize)
        finetune.scale = Float(data.finetuneScaleMin)...1
        finetune.randAugmentLayers = data.randaugmentLayers
        finetune.randAugmentMagnitude = Float(data.randaugmentMagnitude)
        finetune.mixupAlpha = Float(data.mixupAlpha)
        finetune.cutmixAlpha = Float(data.cutmixAlpha)
        finetune.erasingProbability = Float(data.erasingProbability)
        finetune.labelSmoothing = Float(data.labelSmoothing)
        configuration.finetune = finetune
        return configuration
    }
}

/// Which of a pretraining run's two networks an evaluation or fine-tuning starts from: the
/// online encoder, or the EMA target encoder.
public enum TrainedEncoder: String, ConfigChoice {
    case online, target
}

/// What the online network is trained to do.
public enum Objective: String, ConfigChoice {
    case relicv2
    /// Omnivore's per-dataset supervised heads only.
    case supervised
    /// Both losses added.
    case relicv2Supervised = "relicv2_supervised"
}

/// The self-supervised objective and its networks.
public struct SSLConfig: Codable, Equatable, Sendable {
    public var objective = Objective.relicv2
    /// Critic temperature τ.
    public var temperature = 0.2
    /// Weight α of the contrastive term.
    public var alpha = 1.0
    /// Weight β of the KL invariance term (0 = contrastive baseline).
    public var beta = 1.0
    /// EMA momentum of the target network: γ₀ at the first step, rising on a cosine to
    /// `emaFinal` at the last. The papers end at 1; the debug run holds 0.996, because a target
    /// frozen while the learning rate decays stops the loss falling in the last fifth of a short
    /// run (mean loss of the last two fifths 2.990 → 2.984 with 1, 2.975 → 2.962 with 0.996).
    public var emaBase = 0.996
    public var emaFinal = 0.996
    public var projectorHidden = 512
    public var projectorDim = 128
    public var predictorHidden = 512
    /// FIFO queue of past target projections used as extra negatives (0 = none).
    public var queueSize = 0
    /// Probability p_m of saliency background removal on a large view.
    public var saliencyProbability = 0.1
    /// Kaleido's cross-modal positives: each RGB-D sample adds its first large view without
    /// depth, each clip one frame of its first large clip, as an online view predicted against
    /// the sample's other large views (images have none, so image-only runs are unchanged).
    public var crossModalViews = true

    func validate(_ check: inout ConfigValidator) {
        check.require(temperature > 0, "ssl.temperature", "must be > 0, got \(temperature)")
        check.require(alpha >= 0, "ssl.alpha", "must be ≥ 0, got \(alpha)")
        check.require(beta >= 0, "ssl.beta", "must be ≥ 0, got \(beta)")
        check.require((0...1).contains(emaBase), "ssl.ema_base", "must be in [0, 1], got \(emaBase)")
        check.require(emaFinal >= emaBase && emaFinal <= 1, "ssl.ema_final", "must be in [ssl.ema_base, 1], got \(emaFinal)")
        check.require(projectorHidden >= 1, "ssl.projector_hidden", "must be ≥ 1, got \(projectorHidden)")
        check.require(projectorDim >= 1, "ssl.projector_dim", "must be ≥ 1, got \(projectorDim)")
        check.require(predictorHidden >= 1, "ssl.predictor_hidden", "must be ≥ 1, got \(predictorHidden)")
        check.require(queueSize >= 0, "ssl.queue_size", "must be ≥ 0, got \(queueSize)")
        check.require((0...1).contains(saliencyProbability), "ssl.saliency_probability",
                      "must be in [0, 1], got \(saliencyProbability)")
    }
}

/// `optim.name`: KaleidoNN's optimiser kinds, by their config names.
extension OptimizerKind: ConfigChoice {}

/// Optimiser and learning-rate schedule (linear warmup, then cosine to `min_lr`).
public struct OptimConfig: Codable, Equatable, Sendable {
    public var name = OptimizerKind.adamw
    /// Peak learning rate (after warmup).
    public var lr = 2e-3
    public var minLr = 0.0
    public var warmupSteps = 30
    public var weightDecay = 0.05
    /// SGD and LARS momentum.
    public var momentum = 0.9
    /// AdamW β₁, β₂ and ε.
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var eps = 1e-8
    /// LARS trust coefficient η.
    public var trustCoefficient = 1e-3

    func validate(_ check: inout ConfigValidator) {
        check.require(lr > 0, "optim.lr", "must be > 0, got \(lr)")
        check.require(minLr >= 0 && minLr <= lr, "optim.min_lr", "must be in [0, optim.lr], got \(minLr)")
        check.require(warmupSteps >= 0, "optim.warmup_steps", "must be ≥ 0, got \(warmupSteps)")
        check.require(weightDecay >= 0, "optim.weight_decay", "must be ≥ 0, got \(weightDecay)")
        check.require((0..<1).contains(momentum), "optim.momentum", "must be in [0, 1), got \(momentum)")
        check.require((0..<1).contains(beta1), "optim.beta1", "must be in [0, 1), got \(beta1)")
        check.require((0..<1).contains(beta2), "optim.beta2", "must be in [0, 1), got \(beta2)")
        check.require(eps > 0, "optim.eps", "must be > 0, got \(eps)")
        check.require(trustCoefficient > 0, "optim.trust_coefficient", "must be > 0, got \(trustCoefficient)")
    }
}

/// Data parallelism across processes.
public struct DistConfig: Codable, Equatable, Sendable {
    /// Gradient all-reduce bucket cap in MiB (0 = one bucket for everything). 1 MiB measured as
    /// fast as one large reduction on 2 ranks (`kaleido bench allreduce`, BENCHMARKS.md) and
    /// lets buckets start earlier during backward.
    public var bucketMb = 1.0
    /// Synchronise BatchNorm statistics across ranks.
    public var syncBn = false
    /// Compute threads per rank (0 = the node's cores divided by its ranks).
    public var threads = 0
    /// Every this many steps the coordinator checks that target networks agree on all ranks.
    public var emaCheckEvery = 100
    /// Stalled-rank detection: a rank that waits this many seconds in one collective during
    /// training ends the job, naming the ranks that never arrived (0 = wait forever). Long
    /// enough for the slowest rank's checkpoint shard write.
    public var timeoutSeconds = 600.0

    func validate(_ check: inout ConfigValidator) {
        check.require(bucketMb >= 0, "dist.bucket_mb", "must be ≥ 0, got \(bucketMb)")
        check.require(threads >= 0, "dist.threads", "must be ≥ 0, got \(threads)")
        check.require(emaCheckEvery >= 1, "dist.ema_check_every", "must be ≥ 1, got \(emaCheckEvery)")
        check.require(timeoutSeconds >= 0 && timeoutSeconds.isFinite, "dist.timeout_seconds",
                      "must be ≥ 0 seconds (0 waits forever), got \(timeoutSeconds)")
    }
}

/// Sharded zstd checkpoints.
public struct CheckpointConfig: Codable, Equatable, Sendable {
    /// Save every this many steps (0 = only at the end and on preemption).
    public var everySteps = 100
    /// Newest checkpoints kept.
    public var keep = 3
    /// zstd level of the shards.
    public var zstdLevel = 1
    /// Periodic saves copy the state at the step boundary and compress and write it on a
    /// low-priority background thread while training continues (false: training waits for the
    /// whole save). The end of the run and a preemption always wait for their save.
    public var async = true
    /// While a background save is in flight, the training loop's thread keeps to the core it is
    /// on and the writer to the rank's other cores, where the rank owns its cores (the only rank
    /// on its node, or bound by its launcher, and not oversubscribed). See docs/checkpoints.md.
    public var pinWriter = true

    func validate(_ check: inout ConfigValidator) {
        check.require(everySteps >= 0, "checkpoint.every_steps", "must be ≥ 0, got \(everySteps)")
        check.require(keep >= 1, "checkpoint.keep", "must be ≥ 1, got \(keep)")
        check.require((1...19).contains(zstdLevel), "checkpoint.zstd_level", "must be in 1…19, got \(zstdLevel)")
    }
}

/// Evaluation after pretraining.
public struct EvalConfig: Codable, Equatable, Sendable {
    /// Run the linear probe (and kNN) on frozen features at the end of pretraining.
    public var linearProbe = true
    public var probeEpochs = 100
    public var knnK = 20
    public var knnTemperature = 0.07
    /// Train a detached linear classifier on the first large view's pooled features during
    /// pretraining and log `online_probe_acc` / `online_probe_loss` (solo-learn's online probe).
    public var onlineProbe = false
    /// Its AdamW learning rate (constant).
    public var onlineProbeLr = 5e-3
    /// `kaleido finetune`'s defaults (its options override them): optimiser steps per label
    /// fraction, peak AdamW learning rate, layer-wise learning-rate decay (1 = off) and the
    /// weights it starts from (online or target). The defaults are the debug run's measured
    /// recipe (docs/evaluation.md); the ImageNet configs set 200, 1e-3, 0.75 and online.
    public var finetuneSteps = 600
    public var finetuneLr = 1e-2
    public var finetuneLayerDecay = 1.0
    public var finetuneEncoder = TrainedEncoder.target

    func validate(_ check: inout ConfigValidator) {
        check.require(finetuneSteps >= 1, "eval.finetune_steps", "must be ≥ 1, got \(finetuneSteps)")
        check.require(finetuneLr > 0, "eval.finetune_lr", "must be > 0, got \(finetuneLr)")
        check.require(finetuneLayerDecay > 0 && finetuneLayerDecay <= 1, "eval.finetune_layer_decay",
                      "must be in (0, 1], got \(finetuneLayerDecay)")
        check.require(probeEpochs >= 1, "eval.probe_epochs", "must be ≥ 1, got \(probeEpochs)")
        check.require(onlineProbeLr > 0, "eval.online_probe_lr", "must be > 0, got \(onlineProbeLr)")
        check.require(knnK >= 1, "eval.knn_k", "must be ≥ 1, got \(knnK)")
        check.require(knnTemperature > 0, "eval.knn_temperature", "must be > 0, got \(knnTemperature)")
    }
}
