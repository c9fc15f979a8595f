import Foundation
import KaleidoData
import KaleidoNN
import KaleidoSSL
import KaleidoTensor

/// Labelled data of one modality for evaluation: the embedded synthetic dataset of the run's
/// config, or a folder (ImageNet layout, video frames or RGB-D pairs by modality), with its train
/// and val splits. Samples come through KaleidoData's evaluation transform: resize and centre crop
/// of 87.5 % of the shorter side to `data.large_size`, no randomness (`evaluationBatch`); the
/// fine-tuning batches use its training augmentations (`labelledBatch`).
public final class EvaluationData {
    public let modality: Modality
    /// `synthetic` or the folder path as given.
    public let spec: String
    public let train: DataPipeline
    public let validation: DataPipeline
    let context = DecodeContext()

    /// - Parameters:
    ///   - spec: `synthetic` or a dataset folder for `modality`.
    ///   - config: the run's config: the synthetic dataset's parameters, view size, seed and the
    ///     fine-tuning recipe come from it.
    public init(spec: String, modality: Modality, config: KaleidoConfig) throws {
        self.modality = modality
        self.spec = spec
        var configuration = config.dataConfiguration
        if spec == "synthetic" {
            configuration.source = .synthetic(config.data.syntheticSpec)
        } else {
            var isDirectory: ObjCBool = false
            guard WebDataset.namesShards(spec) || FileManager.default.fileExists(atPath: spec, isDirectory: &isDirectory) && isDirectory.boolValue else {
                throw EvaluationError.missingData(path: spec)
            }
            let (image, video, rgbd) = (modality == .image ? spec : nil, modality == .video ? spec : nil, modality == .rgbd ? spec : nil)
            configuration.source = WebDataset.isShardLocation(spec) ? .shards(image: image, video: video, rgbd: rgbd)
                                                                    : .folders(image: image, video: video, rgbd: rgbd)
        }
        configuration.shares = [modality: 1]
        configuration.shuffle = false
        train = try DataPipeline(configuration, split: .train)
        validation = try DataPipeline(configuration, split: .val)
        guard train.classes == validation.classes else {
            throw EvaluationError.badData(spec: spec, message: "train and val splits have different class folders "
                                          + "(\(train.classes.count) vs \(validation.classes.count))")
        }
    }

    /// The data a run trained on, as a `spec` for `modality`: `synthetic`, or the run's folder (or
    /// shards) of that modality from its config (`data.root`, `data.video_root`, `data.rgbd_root`).
    /// What the evaluation commands read when not told otherwise, so a run on folders is not
    /// scored on the embedded dataset by default.
    public static func runData(of config: KaleidoConfig, modality: Modality) throws -> String {
        let data = config.data
        if data.dataset == .synthetic { return "synthetic" }
        let folder: String?, key: String
        switch modality {
        case .image: (folder, key) = (data.imageRoot, "data.root")
        case .video: (folder, key) = (data.videoFolder, data.dataset == .videoFrames ? "data.root" : "data.video_root")
        case .rgbd: (folder, key) = (data.rgbdFolder, data.dataset == .rgbd ? "data.root" : "data.rgbd_root")
        }
        guard let folder else {
            throw EvaluationError.badData(spec: key, message: "the run (data.dataset \(data.dataset.rawValue)) has no \(modality) data "
                                          + "in its config: give the folder with --data")
        }
        return folder
    }

    public var classes: Int { train.classes.count }

    public func pipeline(_ split: EvaluationSplit) -> DataPipeline { split == .train ? train : validation }

    public func count(_ split: EvaluationSplit) -> Int { pipeline(split).datasets[modality]!.count }

    /// Labels of a split, read from the listing (nothing is decoded).
    public func labels(_ split: EvaluationSplit) -> [Int32] {
        let dataset = pipeline(split).datasets[modality]!
        return (0..<dataset.count).map { Int32(dataset.label(of: $0)) }
    }

    /// Centre views of samples `range` of a split.
    public func batch(_ split: EvaluationSplit, range: Range<Int>) throws -> LabelledGroup {
        try pipeline(split).evaluationBatch(modality, indices: range, context: context)
    }

    /// Augmented, mixed training views of the given train-split samples.
    public func trainingBatch(indices: [Int], step: Int) throws -> LabelledGroup {
        try train.labelledBatch(modality, indices: indices, step: step, context: context)
    }

    /// What makes the samples: part of the feature cache key.
    public var identity: String {
        let recipe = train.configuration.finetune
        let source: String
        switch train.configuration.source {
        case .synthetic(let s):
            source = "synthetic(classes=\(s.classes),train=\(s.trainSize),val=\(s.valSize),size=\(s.size),frames=\(s.frames),seed=\(s.seed))"
        case .folders, .shards:
            source = "folder(\(URL(fileURLWithPath: spec).standardizedFileURL.path),train=\(count(.train)),val=\(count(.validation)))"
        }
        return "\(source):\(modality):centre-crop(size=\(recipe.size),fraction=\(recipe.cropFraction)),"
            + "clip=\(train.configuration.recipe.clipFrames)x\(train.configuration.recipe.clipStride)"
    }
}

/// How an encoder's network sees a modality's samples.
///
/// Omnivore's Swin takes video clips (n, T, H, W, 3) and RGB-D as 4-channel images natively.
/// A 2-D backbone (ResNet, ConvNeXt) gets every frame of a clip as an image and the clip's
/// feature is the mean of its frames' pooled features; for RGB-D it sees the colour image only.
public struct NetworkInput {
    /// True for backbones built for (n, T, H, W, C) clips (Omnivore).
    public let spatiotemporal: Bool

    public init(backbone: BuiltNetwork) { spatiotemporal = backbone.exampleInputShape.count == 5 }

    /// The tensor to run and the frames per sample whose features are averaged afterwards.
    public func tensor(for group: LabelledGroup) -> (input: Tensor, frames: Int) {
        switch group.modality {
        case .image: return (group.images, 1)
        case .rgbd:
            guard spatiotemporal, let depth = group.depth else { return (group.images, 1) }
            return (LoaderSource.appendDepth(group.images, depth), 1)
        case .video:
            if spatiotemporal { return (group.images, 1) }
            let shape = group.images.shape
            return (group.images.reshaped([shape[0] * shape[1]] + Array(shape[2...])), shape[1])
        }
    }
}

/// Frozen backbone features (eval mode: BatchNorm running statistics) of whole splits, cached
/// on disk so a second evaluation of the same checkpoint and data skips the forward passes.
public final class FeatureExtractor {
    let model: ReLICv2Model
    let pool: ComputePool
    let input: NetworkInput
    /// Identifies the weights (checkpoint, encoder); nil disables the cache.
    let fingerprint: String?
    let cacheDirectory: URL?
    public var batchSize = 64

    public init(model: ReLICv2Model, pool: ComputePool, fingerprint: String? = nil, cacheDirectory: URL? = nil) {
        self.model = model
        self.pool = pool
        self.input = NetworkInput(backbone: model.backbone)
        self.fingerprint = fingerprint
        self.cacheDirectory = cacheDirectory
    }

    public convenience init(_ checkpoint: EvaluatedCheckpoint, pool: ComputePool, cache: Bool = true) {
        self.init(model: checkpoint.model, pool: pool, fingerprint: checkpoint.fingerprint,
                  cacheDirectory: cache ? checkpoint.runDirectory.appendingPathComponent("eval-cache") : nil)
    }

    /// Features of every sample of `split`, from the cache when they were computed before.
    public func features(_ data: EvaluationData, split: EvaluationSplit) throws -> FeatureSet {
        let key = fingerprint.map { "\($0)|\(data.identity)|\(split.rawValue)" }
        let file = key.flatMap { key in cacheDirectory?.appendingPathComponent(String(format: "%016llx.features", FNV1a.hash(key))) }
        if let key, let file, let cached = FeatureCache.read(file, key: key) { return cached }
        let total = data.count(split)
        let dimension = model.backbone.featureDimension
        let features = Tensor(zeros: [total, dimension])
        var labels: [Int32] = []
        let context = RunContext(arena: model.online, pool: pool, training: false, recordsForBackward: false)
        var start = 0
        while start < total {
            let range = start..<min(total, start + batchSize)
            let group = try data.batch(split, range: range)
            let (tensor, frames) = input.tensor(for: group)
            let out = model.features(tensor, context)
            let destination = features.pointer + start * dimension
            if frames == 1 {
                destination.update(from: out.pointer, count: range.count * dimension)
            } else {
                // The clip's feature is the mean over its frames (rows are frame-major per sample).
                for n in 0..<range.count {
                    for c in 0..<dimension {
                        var sum: Float = 0
                        for t in 0..<frames { sum += out.pointer[(n * frames + t) * dimension + c] }
                        destination[n * dimension + c] = sum / Float(frames)
                    }
                }
            }
            labels += group.labels
            context.resetActivations()
            start = range.upperBound
        }
        let set = FeatureSet(features: features, labels: labels)
        if let key, let file { try FeatureCache.write(set, key: key, to: file) }
        return set
    }
}

/// The on-disk feature cache: `KLDFEAT1`, key length and key (UTF-8), N and D (Int64 little
/// endian), N Int32 labels, N·D Float32 features. A file whose key differs or that is cut short
/// is ignored and rewritten.
enum FeatureCache {
    static let magic = Array("KLDFEAT1".utf8)

    static func read(_ url: URL, key: String) -> FeatureSet? {
        guard let data = try? Data(contentsOf: url) else { return nil }
        return data.withUnsafeBytes { raw -> FeatureSet? in
            var offset = 0
            func take<T>(_ type: T.Type) -> T? {
                guard offset + MemoryLayout<T>.size <= raw.count else { return nil }
                defer { offset += MemoryLayout<T>.size }
                return raw.loadUnaligned(fromByteOffset: offset, as: T.self)
            }
            guard raw.count > magic.count, Array(raw[0..<magic.count]) == magic else { return nil }
            offset = magic.count
            guard let keyLength = take(UInt32.self).map(Int.init), offset + keyLength <= raw.count,
                  String(decoding: raw[offset..<(offset + keyLength)], as: UTF8.self) == key else { return nil }
            offset += keyLength
            guard let n = take(Int64.self).map(Int.init), let d = take(Int64.self).map(Int.init), n >= 0, d > 0,
                  offset + n * 4 + n * d * 4 == raw.count else { return nil }
            let labels = (0..<n).map { raw.loadUnaligned(fromByteOffset: offset + $0 * 4, as: Int32.self) }
            offset += n * 4
            let features = Tensor(zeros: [n, d])
            for i in 0..<(n * d) { features.pointer[i] = raw.loadUnaligned(fromByteOffset: offset + i * 4, as: Float.self) }
            return FeatureSet(features: features, labels: labels)
        }
    }

    static func write(_ set: FeatureSet, key: String, to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        var data = Data(magic)
        let keyBytes = Array(key.utf8)
        func append<T>(_ value: T) { withUnsafeBytes(of: value) { data.append(contentsOf: $0) } }
        append(UInt32(keyBytes.count))
        data.append(contentsOf: keyBytes)
        append(Int64(set.count))
        append(Int64(set.dimension))
        set.labels.withUnsafeBytes { data.append(contentsOf: $0) }
        data.append(UnsafeBufferPointer(start: set.features.pointer, count: set.count * set.dimension))
        try data.write(to: url, options: .atomic)
    }
}
