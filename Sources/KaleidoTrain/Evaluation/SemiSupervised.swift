import Foundation
import KaleidoData
import KaleidoNN
import KaleidoSSL
import KaleidoTensor
import Logging

/// The labelled part of a semi-supervised evaluation: a class-balanced subset of the training
/// split that is a function of (seed, fraction) alone (given the labels).
///
/// Each class's samples, in index order, are shuffled by a generator keyed by (seed, class);
/// the subset takes the first round(fraction · n_c) of every class (at least one). The shuffle
/// does not depend on the fraction, so subsets are nested: the 1 % subset is inside the 10 % one,
/// as in SimCLR's ImageNet splits.
public enum LabelSubset {
    public static func indices(labels: [Int32], fraction: Double, seed: UInt64) -> [Int] {
        precondition(fraction > 0 && fraction <= 1, "fraction \(fraction) is outside (0, 1]")
        var byClass: [Int32: [Int]] = [:]
        for (index, label) in labels.enumerated() { byClass[label, default: []].append(index) }
        var chosen: [Int] = []
        for (label, members) in byClass.sorted(by: { $0.key < $1.key }) {
            var order = members
            var rng = SplitMix64(keys: seed, RandomStream.labelSubset.rawValue, UInt64(UInt32(bitPattern: label)))
            rng.shuffle(&order)
            let take = max(1, Int((fraction * Double(members.count)).rounded()))
            chosen += order.prefix(take)
        }
        return chosen.sorted()
    }
}

/// Fine-tuning of a pretrained encoder with a new linear classifier on a labelled subset, with
/// ConvNeXt's recipe: AdamW, warmup and cosine, layer-wise learning-rate decay, Mixup/CutMix,
/// RandAugment, Random Erasing and label smoothing (the `data.*` fine-tuning keys, applied by
/// KaleidoData), drop path, and an EMA of the weights evaluated beside the weights themselves.
public struct SemiSupervisedFineTuning {
    public var steps = 200
    public var batchSize = 32
    public var learningRate = 1e-3
    public var minLearningRate = 1e-6
    public var warmupSteps = 20
    public var weightDecay = 0.05
    /// Layer-wise decay: layer l of L gets learning rate × decay^(L − l). 1 disables it.
    public var layerDecay = 0.75
    public var dropPath = 0.0
    /// EMA decay of the weights (0 disables the EMA).
    public var emaDecay = 0.99
    public var seed: UInt64 = 0

    public init() {}

    public struct Result: Sendable, Equatable {
        public var top1: Double
        public var top5: Double
        /// The same for the EMA of the weights (nil without EMA).
        public var emaTop1: Double?
        public var emaTop5: Double?
        public var labelled: Int
        public var finalLoss: Double
    }

    /// Fine-tunes the backbone `backbone` (ModelZoo name and options as pretrained) initialised
    /// from `weights` (nil: random initialisation, the baseline) on `subset` of `data`'s train
    /// split, and scores it on the val split.
    public func run(backbone: String, options: ModelOptions, weights: [String: (shape: [Int], values: UnsafeBufferPointer<Float>)]?,
                    source: String, data: EvaluationData, subset: [Int], pool: ComputePool,
                    logger: Logger = Logger(label: "kaleido.finetune")) throws -> Result {
        precondition(!subset.isEmpty, "an empty labelled subset")
        var options = options
        options.classes = data.classes
        // An Omnivore backbone classifies through its per-dataset heads: one, for this modality.
        options.datasetHeads = [DatasetHeadsLayer.Head(data.modality.description, classes: data.classes)]
        options.dropPath = Float(dropPath)
        let builder = ParameterBuilder()
        let built = try ModelZoo.make(backbone, options: options, builder: builder)
        let arena = builder.makeArena(seed: seed)
        if let weights { try Self.load(weights, into: arena, source: source) }
        let input = NetworkInput(backbone: built)
        guard data.modality == .image || input.spatiotemporal || data.modality == .rgbd else {
            throw EvaluationError.unsupported("fine-tuning on \(data.modality) needs an Omnivore backbone; \(backbone) takes images")
        }

        let optimizer = AdamW(arena: arena, settings: OptimizerSettings(kind: .adamw, weightDecay: Float(weightDecay)))
        optimizer.learningRateScales = Self.layerScales(arena.entries.map(\.spec.name), decay: Float(layerDecay))
        let schedule = WarmupCosineSchedule(base: learningRate, final: minLearningRate, warmupSteps: warmupSteps, totalSteps: steps)
        let ema = emaDecay > 0 ? arena.copy() : nil
        let context = RunContext(arena: arena, pool: pool, training: true, recordsForBackward: true, seed: seed)
        var loss: Float = .nan
        var order: [Int] = [], position = 0, epoch = 0
        for step in 0..<steps {
            var batch: [Int] = []
            while batch.count < min(batchSize, max(2, subset.count)) {
                if position == order.count {
                    var rng = SplitMix64(keys: seed, RandomStream.subsetEpochOrder.rawValue, UInt64(epoch))
                    order = subset
                    rng.shuffle(&order)
                    position = 0
                    epoch += 1
                }
                batch.append(order[position])
                position += 1
            }
            let group = try data.trainingBatch(indices: batch, step: step)
            let (tensor, _) = input.tensor(for: group)
            arena.zeroGradients()
            let logits = built.network.forward(tensor, context)
            let rows = logits.shape[0], classes = logits.shape[1]
            let probabilities = context.tensor(logits.shape), dLogits = context.tensor(logits.shape, zeroed: true)
            // Soft targets: Mixup/CutMix mixtures with label smoothing already in them.
            loss = CrossEntropy.forward(probabilities: probabilities.pointer, logits: logits.pointer,
                                        targets: .distributions(group.targets!.pointer), rows: rows, classes: classes, pool: pool)
            guard loss.isFinite else { throw TrainingError.nonFinite(step: step, what: "the fine-tuning loss (\(loss))") }
            CrossEntropy.backward(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                  targets: .distributions(group.targets!.pointer), rows: rows, classes: classes, pool: pool)
            context.backward { built.network.backwardWithoutInputGradient(dLogits, consuming: false, context) }
            optimizer.step(arena, learningRate: Float(schedule.value(at: step)), pool: pool)
            if let ema {
                ExponentialMovingAverage.update(average: ema, toward: arena, momentum: Float(emaDecay), count: arena.count, pool: pool)
            }
            context.resetActivations()
            if (step + 1) % 50 == 0 { logger.info("fine-tuning", metadata: ["step": "\(step + 1)", "loss": "\(loss)"]) }
        }
        let plain = try Self.score(built.network, arena: arena, input: input, data: data, pool: pool)
        let averaged = try ema.map { try Self.score(built.network, arena: $0, input: input, data: data, pool: pool) }
        return Result(top1: plain.top1, top5: plain.top5, emaTop1: averaged?.top1, emaTop5: averaged?.top5,
                      labelled: subset.count, finalLoss: Double(loss))
    }

    /// Top-1/top-5 of the network on `arena` over the val split (centre crops, eval mode).
    static func score(_ network: Layer, arena: ParameterArena, input: NetworkInput, data: EvaluationData,
                      pool: ComputePool) throws -> (top1: Double, top5: Double) {
        let context = RunContext(arena: arena, pool: pool, training: false, recordsForBackward: false)
        let total = data.count(.validation)
        var hits1 = 0.0, hits5 = 0.0, start = 0
        while start < total {
            let range = start..<min(total, start + 64)
            let group = try data.batch(.validation, range: range)
            let logits = network.forward(input.tensor(for: group).input, context)
            let classes = logits.shape[1]
            hits1 += FeatureSet.accuracy(scores: logits.pointer, classes: classes, labels: group.labels, k: 1) * Double(range.count)
            hits5 += FeatureSet.accuracy(scores: logits.pointer, classes: classes, labels: group.labels, k: min(5, classes))
                * Double(range.count)
            context.resetActivations()
            start = range.upperBound
        }
        return (hits1 / Double(max(total, 1)), hits5 / Double(max(total, 1)))
    }

    /// Copies the pretrained encoder into the fine-tuning network by parameter name. Every saved
    /// encoder parameter must exist with the same shape; the new classifier keeps its
    /// initialisation.
    static func load(_ weights: [String: (shape: [Int], values: UnsafeBufferPointer<Float>)], into arena: ParameterArena,
                     source: String) throws {
        for (name, saved) in weights.sorted(by: { $0.key < $1.key }) {
            guard let entry = arena.entry(named: name), entry.spec.shape == saved.shape else {
                throw EvaluationError.encoderMismatch(path: source, parameter: name)
            }
            (arena.values.pointer + entry.offset).update(from: saved.values.baseAddress!, count: entry.count)
        }
    }

    /// Learning-rate multipliers for layer-wise decay, by arena entry. Layer 0 is everything
    /// before the first residual block (stem); each block (`layerN.i`, `stages.i.blocks.j`,
    /// `layers.i.blocks.j`) and each stage's downsampling (`stages.i`) is one layer, in arena
    /// order; whatever follows the last block (final norm, classifier) is the top layer L,
    /// which gets the full rate.
    public static func layerScales(_ names: [String], decay: Float) -> [Float] {
        func blockKey(_ name: String) -> String? {
            let parts = name.split(separator: ".").map(String.init)
            if let b = parts.firstIndex(of: "blocks"), b + 1 < parts.count, Int(parts[b + 1]) != nil {
                return parts[...(b + 1)].joined(separator: ".")
            }
            if parts.count > 2, Int(parts[1]) != nil, parts[0] != "stem" { return parts[0...1].joined(separator: ".") }
            return nil
        }
        var ids: [Int?] = []
        var layer = 0, lastKey: String?
        for name in names {
            if let key = blockKey(name) {
                if key != lastKey { layer += 1; lastKey = key }
                ids.append(layer)
            } else {
                ids.append(layer == 0 ? 0 : nil)
            }
        }
        let top = layer + 1
        return ids.map { pow(decay, Float(top - ($0 ?? top))) }
    }
}
