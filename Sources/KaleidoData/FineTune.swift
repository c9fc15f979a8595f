import Foundation
import KaleidoTensor

/// ConvNeXt's supervised fine-tuning augmentations (Liu et al. 2022, table 5, which follows
/// DeiT/timm): random resized crop and flip, RandAugment (9, 0.5), Mixup 0.8, CutMix 1.0,
/// Random Erasing 0.25, label smoothing 0.1. Evaluation uses resize + centre crop (0.875).
public struct FineTuneRecipe: Sendable, Equatable, Codable {
    public var size: Int
    public var scale: ClosedRange<Float> = 0.08...1
    public var ratio: ClosedRange<Float> = (3.0 / 4.0)...(4.0 / 3.0)
    public var flipProbability: Float = 0.5
    /// RandAugment: operations per image, magnitude (0–10), its Gaussian noise, and the
    /// probability of applying each chosen operation (timm's `rand-m9-mstd0.5-inc1`).
    public var randAugmentLayers = 2
    public var randAugmentMagnitude: Float = 9
    public var randAugmentMagnitudeStd: Float = 0.5
    public var randAugmentProbability: Float = 0.5
    /// Mixup / CutMix (batch mode): one λ per batch, CutMix chosen with `switchProbability`.
    public var mixupAlpha: Float = 0.8
    public var cutmixAlpha: Float = 1.0
    public var mixProbability: Float = 1
    public var switchProbability: Float = 0.5
    public var labelSmoothing: Float = 0.1
    /// Random Erasing (per-pixel Gaussian fill on the normalised image).
    public var erasingProbability: Float = 0.25
    /// Evaluation: the centre crop keeps this fraction of the shorter side.
    public var cropFraction: Float = 0.875

    public init(size: Int) { self.size = size }
}

/// RandAugment's operations on an RGB Float image in [0, 1] (timm's increasing-magnitude set).
public enum RandAugment {
    public enum Operation: Int, CaseIterable, Sendable {
        case autoContrast, equalize, invert, rotate, posterize, solarize, solarizeAdd, color, contrast, brightness
        case sharpness, shearX, shearY, translateX, translateY
    }

    /// Applies `operation` at `magnitude` (0–10) to a size×size image; `negate` flips the
    /// direction of signed operations.
    static func apply(_ operation: Operation, magnitude: Float, negate: Bool, image p: UnsafeMutablePointer<Float>,
                      size: Int, scratch: inout [Float]) {
        let n = size * size
        let level = min(max(magnitude, 0), 10) / 10
        let sign: Float = negate ? -1 : 1
        switch operation {
        case .autoContrast:
            for c in 0..<3 {
                var lo: Float = 1, hi: Float = 0
                for i in 0..<n { lo = min(lo, p[3 * i + c]); hi = max(hi, p[3 * i + c]) }
                guard hi > lo else { continue }
                let scale = 1 / (hi - lo)
                for i in 0..<n { p[3 * i + c] = (p[3 * i + c] - lo) * scale }
            }
        case .equalize:
            // PIL's ImageOps.equalize on 8-bit levels.
            for c in 0..<3 {
                var histogram = [Int](repeating: 0, count: 256)
                for i in 0..<n { histogram[level8(p[3 * i + c])] += 1 }
                let last = histogram.last { $0 > 0 } ?? 0
                let step = (n - last) / 255
                guard step > 0 else { continue }
                var lut = [Float](repeating: 0, count: 256), running = step / 2
                for v in 0..<256 { lut[v] = Float(min(running / step, 255)) / 255; running += histogram[v] }
                for i in 0..<n { p[3 * i + c] = lut[level8(p[3 * i + c])] }
            }
        case .invert:
            for i in 0..<(3 * n) { p[i] = 1 - p[i] }
        case .posterize:
            let bits = 4 - Int(level * 4)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - max(bits, 0)))
            for i in 0..<(3 * n) { p[i] = Float(UInt8(level8(p[i])) & mask) / 255 }
        case .solarize:
            let threshold = Float(256 - Int(level * 256)) / 255
            for i in 0..<(3 * n) where p[i] >= threshold { p[i] = 1 - p[i] }
        case .solarizeAdd:
            let add = Float(Int(level * 110)) / 255
            for i in 0..<(3 * n) where p[i] < 128 / 255 { p[i] = min(1, p[i] + add) }
        case .color: ColorOps.saturation(p, n, max(0, 1 + sign * level * 0.9))
        case .contrast: ColorOps.contrast(p, n, max(0, 1 + sign * level * 0.9))
        case .brightness: ColorOps.brightness(p, n, max(0, 1 + sign * level * 0.9))
        case .sharpness:
            // Blend with PIL's SMOOTH filter ([1 1 1; 1 5 1; 1 1 1] / 13); borders stay.
            let factor = max(0, 1 + sign * level * 0.9)
            ensureCapacity(&scratch, 3 * n)
            for i in 0..<(3 * n) { scratch[i] = p[i] }
            for y in 1..<max(1, size - 1) {
                for x in 1..<max(1, size - 1) {
                    for c in 0..<3 {
                        var s: Float = 4 * scratch[(y * size + x) * 3 + c]
                        for dy in -1...1 { for dx in -1...1 { s += scratch[((y + dy) * size + x + dx) * 3 + c] } }
                        let smooth = s / 13, original = scratch[(y * size + x) * 3 + c]
                        p[(y * size + x) * 3 + c] = ColorOps.clamp01(smooth + factor * (original - smooth))
                    }
                }
            }
        case .rotate:
            let angle = sign * level * 30 * .pi / 180
            let c = cos(angle), s = sin(angle), center = Float(size) / 2
            // Output (x, y) reads the source at the inverse rotation about the centre.
            affine(p, size: size, scratch: &scratch) { x, y in
                let dx = x - center, dy = y - center
                return (c * dx + s * dy + center, -s * dx + c * dy + center)
            }
        case .shearX:
            let shear = sign * level * 0.3
            affine(p, size: size, scratch: &scratch) { x, y in (x + shear * y, y) }
        case .shearY:
            let shear = sign * level * 0.3
            affine(p, size: size, scratch: &scratch) { x, y in (x, y + shear * x) }
        case .translateX:
            let shift = sign * level * 0.45 * Float(size)
            affine(p, size: size, scratch: &scratch) { x, y in (x + shift, y) }
        case .translateY:
            let shift = sign * level * 0.45 * Float(size)
            affine(p, size: size, scratch: &scratch) { x, y in (x, y + shift) }
        }
    }

    /// The 8-bit level of a [0, 1] value, clamped (release builds run without overflow checks).
    @inline(__always) static func level8(_ v: Float) -> Int { Int(min(max(v, 0), 1) * 255 + 0.5) }

    /// Resamples the image through `inverse` (output pixel centre → source point) bilinearly;
    /// points outside the image take the ImageNet mean, as timm fills.
    static func affine(_ p: UnsafeMutablePointer<Float>, size: Int, scratch: inout [Float],
                       _ inverse: (Float, Float) -> (Float, Float)) {
        let n = size * size
        ensureCapacity(&scratch, 3 * n)
        for i in 0..<(3 * n) { scratch[i] = p[i] }
        let fill: [Float] = [0.485, 0.456, 0.406]
        scratch.withUnsafeBufferPointer { src in
            for y in 0..<size {
                for x in 0..<size {
                    let (sx, sy) = inverse(Float(x) + 0.5, Float(y) + 0.5)
                    let fx = sx - 0.5, fy = sy - 0.5
                    let x0 = Int(fx.rounded(.down)), y0 = Int(fy.rounded(.down))
                    let ax = fx - Float(x0), ay = fy - Float(y0)
                    for c in 0..<3 {
                        var value: Float = 0
                        for (yy, wy) in [(y0, 1 - ay), (y0 + 1, ay)] {
                            for (xx, wx) in [(x0, 1 - ax), (x0 + 1, ax)] {
                                let v = (xx >= 0 && xx < size && yy >= 0 && yy < size) ? src[(yy * size + xx) * 3 + c] : fill[c]
                                value += wx * wy * v
                            }
                        }
                        p[(y * size + x) * 3 + c] = value
                    }
                }
            }
        }
    }

    /// The operations and magnitudes of one image's RandAugment, drawn from `rng`.
    static func draw(_ recipe: FineTuneRecipe, rng: inout SplitMix64) -> [(Operation, Float, Bool)] {
        var chosen: [(Operation, Float, Bool)] = []
        for _ in 0..<recipe.randAugmentLayers {
            let operation = Operation(rawValue: Int(rng.next() % UInt64(Operation.allCases.count)))!
            let apply = rng.uniform() < recipe.randAugmentProbability
            let magnitude = recipe.randAugmentMagnitude + recipe.randAugmentMagnitudeStd * rng.normal()
            let negate = rng.uniform() < 0.5
            if apply { chosen.append((operation, min(max(magnitude, 0), 10), negate)) }
        }
        return chosen
    }
}

/// Gamma and Beta variates for Mixup's λ (Marsaglia and Tsang 2000).
enum Variates {
    static func gamma(_ shape: Float, rng: inout SplitMix64) -> Float {
        if shape < 1 {
            return gamma(shape + 1, rng: &rng) * pow(max(rng.uniform(), 1e-12), 1 / shape)
        }
        let d = shape - 1.0 / 3.0, c = 1 / (9 * d).squareRoot()
        while true {
            let x = rng.normal()
            let v = pow(1 + c * x, 3)
            if v <= 0 { continue }
            let u = max(rng.uniform(), 1e-12)
            if log(u) < 0.5 * x * x + d - d * v + d * log(v) { return d * v }
        }
    }

    static func beta(_ a: Float, _ b: Float, rng: inout SplitMix64) -> Float {
        let x = gamma(a, rng: &rng), y = gamma(b, rng: &rng)
        return x / (x + y)
    }
}

/// Mixup and CutMix over a batch tensor, timm's batch mode: one λ, sample i mixed with sample
/// count−1−i, targets mixed the same way (with label smoothing).
public enum MixAugment {
    /// Mixes `images` (n, [T,] H, W, C) in place (and `depth` the same way) and returns the soft
    /// targets (n, classes), λ and whether CutMix was used.
    public static func apply(images: Tensor, depth: Tensor? = nil, labels: [Int32], classes: Int,
                             recipe: FineTuneRecipe, rng: inout SplitMix64) -> (targets: Tensor, lambda: Float, cutmix: Bool) {
        let n = labels.count
        precondition(images.shape[0] == n, "one label per image")
        let off = recipe.labelSmoothing / Float(classes), on = 1 - recipe.labelSmoothing + off
        var lambda: Float = 1, cutmix = false
        let mix = rng.uniform() < recipe.mixProbability && n > 1
        let useCutmix = rng.uniform() < recipe.switchProbability
        if mix {
            cutmix = recipe.cutmixAlpha > 0 && (useCutmix || recipe.mixupAlpha <= 0)
            let alpha = cutmix ? recipe.cutmixAlpha : recipe.mixupAlpha
            lambda = alpha > 0 ? Variates.beta(alpha, alpha, rng: &rng) : 1
        }
        let targets = Tensor(zeros: [n, classes])
        if mix && lambda < 1 {
            let h = images.shape[images.rank - 3], w = images.shape[images.rank - 2]
            var box = (y0: 0, y1: h, x0: 0, x1: w)
            if cutmix {
                // A box of area (1 − λ), clipped to the image; λ is corrected to the kept area.
                let cutRatio = (1 - lambda).squareRoot()
                let ch = Int(Float(h) * cutRatio), cw = Int(Float(w) * cutRatio)
                let cy = Int(rng.next() % UInt64(h)), cx = Int(rng.next() % UInt64(w))
                box = (max(cy - ch / 2, 0), min(cy + ch / 2, h), max(cx - cw / 2, 0), min(cx + cw / 2, w))
                lambda = 1 - Float((box.y1 - box.y0) * (box.x1 - box.x0)) / Float(h * w)
            }
            for tensor in [images] + (depth.map { [$0] } ?? []) {
                let original = tensor.array
                let per = tensor.count / n
                let frames = per / (h * w * tensor.shape[tensor.rank - 1])
                let c = tensor.shape[tensor.rank - 1]
                for i in 0..<n {
                    let j = n - 1 - i
                    let dst = tensor.pointer + i * per
                    if cutmix {
                        for t in 0..<frames {
                            for y in box.y0..<box.y1 {
                                for x in box.x0..<box.x1 {
                                    for k in 0..<c {
                                        let e = ((t * h + y) * w + x) * c + k
                                        dst[e] = original[j * per + e]
                                    }
                                }
                            }
                        }
                    } else {
                        for e in 0..<per { dst[e] = lambda * original[i * per + e] + (1 - lambda) * original[j * per + e] }
                    }
                }
            }
        }
        for i in 0..<n {
            let row = targets.pointer + i * classes
            for k in 0..<classes { row[k] = off }
            row[Int(labels[i])] += lambda * (on - off)
            row[Int(labels[n - 1 - i])] += (1 - lambda) * (on - off)
        }
        return (targets, lambda, cutmix)
    }
}

/// Random Erasing (Zhong et al. 2020, timm's `mode='pixel'`): with probability p, one box of
/// 2–33 % of the area and aspect 0.3–3.3 is filled with N(0, 1) noise, on the normalised image.
enum RandomErasing {
    static func apply(_ p: UnsafeMutablePointer<Float>, size: Int, frames: Int, probability: Float, rng: inout SplitMix64) {
        guard rng.uniform() < probability else { return }
        let area = Float(size * size)
        for _ in 0..<10 {
            let target = area * (0.02 + rng.uniform() * (1.0 / 3.0 - 0.02))
            let aspect = exp(log(Float(0.3)) + rng.uniform() * (log(1 / Float(0.3)) - log(Float(0.3))))
            let h = Int((target * aspect).squareRoot().rounded()), w = Int((target / aspect).squareRoot().rounded())
            guard w < size, h < size, w > 0, h > 0 else { continue }
            let top = Int(rng.next() % UInt64(size - h + 1)), left = Int(rng.next() % UInt64(size - w + 1))
            for t in 0..<frames {
                for y in top..<(top + h) {
                    for x in left..<(left + w) {
                        for c in 0..<3 { p[((t * size + y) * size + x) * 3 + c] = rng.normal() }
                    }
                }
            }
            return
        }
    }
}

/// One modality's part of a labelled (fine-tuning or evaluation) batch: one view per sample.
public struct LabelledGroup: Sendable {
    public let modality: Modality
    public let count: Int
    /// (count, S, S, 3) or (count, T, S, S, 3), normalised.
    public let images: Tensor
    /// RGB-D: (count, S, S, 1).
    public let depth: Tensor?
    public let labels: [Int32]
    /// Soft targets (count, classes) after Mixup/CutMix and label smoothing; nil for evaluation.
    public let targets: Tensor?
    public let sampleIndices: [Int]

    public var modalityIds: [Int32] { [Int32](repeating: Int32(modality.rawValue), count: count) }
}

extension DataPipeline {
    /// Rank `rank`'s share of global batch `step` for supervised fine-tuning: one view per
    /// sample with the fine-tuning augmentations, then Mixup/CutMix over each modality group.
    public func labelledBatch(_ step: Int, rank: Int = 0, worldSize: Int = 1, context: DecodeContext) throws -> [LabelledGroup] {
        let recipe = configuration.finetune
        var groups: [LabelledGroup] = []
        for group in schedule.groups(step) {
            let slice = DataPipeline.shard(group.count, rank: rank, worldSize: worldSize)
            let dataset = datasets[group.modality]!
            var made = try labelled(dataset, count: slice.count, train: true, context: context) { j in
                let position = group.streamStart + slice.lowerBound + j
                let (epoch, index) = sample(group.modality, at: position)
                return (index, SampleKey(seed: configuration.seed, epoch: epoch, dataset: group.modality.rawValue, position: position))
            }
            var rng = SplitMix64(keys: configuration.seed, RandomStream.fineTuneMix.rawValue, UInt64(step), UInt64(rank), UInt64(group.modality.rawValue))
            made = mixed(made, classes: dataset.classes.count, recipe: recipe, rng: &rng)
            groups.append(made)
        }
        return groups
    }

    /// A fine-tuning batch of the given dataset samples (a labelled subset in semi-supervised
    /// evaluation): the same augmentations and Mixup/CutMix as `labelledBatch`, random choices
    /// keyed by (seed, `step`, place in the batch), so a run is reproducible.
    public func labelledBatch(_ modality: Modality, indices: [Int], step: Int, context: DecodeContext) throws -> LabelledGroup {
        guard let dataset = datasets[modality] else { throw DataError.missingModality(modality) }
        let made = try labelled(dataset, count: indices.count, train: true, context: context) { j in
            (indices[j], SampleKey(seed: configuration.seed, epoch: step, dataset: modality.rawValue, position: j))
        }
        var rng = SplitMix64(keys: configuration.seed, RandomStream.subsetBatchMix.rawValue, UInt64(step), UInt64(modality.rawValue))
        return mixed(made, classes: dataset.classes.count, recipe: configuration.finetune, rng: &rng)
    }

    private func mixed(_ made: LabelledGroup, classes: Int, recipe: FineTuneRecipe, rng: inout SplitMix64) -> LabelledGroup {
        let mix = MixAugment.apply(images: made.images, depth: made.depth, labels: made.labels, classes: classes,
                                   recipe: recipe, rng: &rng)
        return LabelledGroup(modality: made.modality, count: made.count, images: made.images, depth: made.depth,
                             labels: made.labels, targets: mix.targets, sampleIndices: made.sampleIndices)
    }

    /// Samples `indices` of a modality's dataset, in order, resized and centre-cropped without
    /// any randomness: features for linear probes, kNN and retrieval.
    public func evaluationBatch(_ modality: Modality, indices: Range<Int>, context: DecodeContext) throws -> LabelledGroup {
        guard let dataset = datasets[modality] else { throw DataError.missingModality(modality) }
        return try labelled(dataset, count: indices.count, train: false, context: context) { j in
            (indices.lowerBound + j, SampleKey(seed: configuration.seed, epoch: 0, dataset: modality.rawValue, position: indices.lowerBound + j))
        }
    }

    private func labelled(_ dataset: any Dataset, count n: Int, train: Bool, context: DecodeContext,
                          item: (Int) -> (index: Int, key: SampleKey)) throws -> LabelledGroup {
        let recipe = configuration.finetune
        let size = recipe.size, frames = maker.frames(for: dataset.modality)
        let images = Tensor(zeros: dataset.modality == .video ? [n, frames, size, size, 3] : [n, size, size, 3])
        let depth = dataset.modality == .rgbd ? Tensor(zeros: [n, size, size, 1]) : nil
        var labels: [Int32] = [], indices: [Int] = []
        for j in 0..<n {
            let (index, key) = item(j)
            var lastError: Error? = nil
            var done = false
            for attempt in 0..<DataPipeline.maximumConsecutiveFailures where !done {
                let candidate = (index + attempt) % dataset.count
                do {
                    let label = try makeLabelled(dataset, index: candidate, key: key, train: train,
                                                 rgb: images.pointer + j * frames * size * size * 3,
                                                 depth: depth.map { $0.pointer + j * size * size }, context: context)
                    labels.append(Int32(label))
                    indices.append(candidate)
                    done = true
                } catch {
                    lastError = error
                    health.record(path: dataset.path(of: candidate), error: error)
                }
            }
            if !done {
                throw lastError.map { _ in DataError.tooManyCorrupt(path: dataset.path(of: index), attempts: DataPipeline.maximumConsecutiveFailures) }!
            }
        }
        return LabelledGroup(modality: dataset.modality, count: n, images: images, depth: depth, labels: labels,
                             targets: nil, sampleIndices: indices)
    }

    private func makeLabelled(_ dataset: any Dataset, index: Int, key: SampleKey, train: Bool,
                              rgb: UnsafeMutablePointer<Float>, depth: UnsafeMutablePointer<Float>?,
                              context: DecodeContext) throws -> Int {
        let recipe = configuration.finetune
        let size = recipe.size
        let frameCount = dataset.frameCount(of: index)
        let clipLength = maker.frames(for: dataset.modality)
        var clip: [Int]
        if dataset.modality == .video {
            if train {
                var rng = key.rng(view: 0, stream: .viewTemporal)
                clip = Draw.clip(frames: frameCount, clip: clipLength, stride: configuration.recipe.clipStride, rng: &rng)
            } else {
                // The centred clip.
                let span = (clipLength - 1) * configuration.recipe.clipStride + 1
                let start = max(0, (frameCount - span) / 2)
                clip = (0..<clipLength).map { min(start + $0 * configuration.recipe.clipStride, frameCount - 1) }
            }
        } else {
            clip = [0]
        }
        let needed = Array(Set(clip)).sorted()
        let sample = try dataset.load(index, frames: needed, context: context)
        var rng = key.rng(view: 0, stream: .viewFineTune)
        var params = ViewParams(crop: CropBox(x: 0, y: 0, width: 0, height: 0), flip: false, jitter: nil, grayscale: false,
                                blurSigma: 0, solarize: false, removeBackground: false, backgroundLevel: 0)
        var operations: [(RandAugment.Operation, Float, Bool)] = []
        if train {
            params.crop = Draw.resizedCrop(width: sample.width, height: sample.height, scale: recipe.scale, ratio: recipe.ratio, rng: &rng)
            params.flip = rng.uniform() < recipe.flipProbability
            operations = RandAugment.draw(recipe, rng: &rng)
        } else {
            let side = Float(min(sample.width, sample.height)) * recipe.cropFraction
            params.crop = CropBox(x: (Float(sample.width) - side) / 2, y: (Float(sample.height) - side) / 2, width: side, height: side)
        }
        // Geometry through the shared renderer (identity photometrics, ImageNet normalisation),
        // then RandAugment on the [0, 1] pixels recovered from it.
        maker.render(sample, frames: clip.map { needed.firstIndex(of: $0)! }, params: params, size: size, mask: nil,
                     destination: ViewDestination(rgb: rgb, depth: depth), context: context)
        let n = size * size
        let mean = configuration.recipe.mean, std = configuration.recipe.std
        if !operations.isEmpty {
            for t in 0..<clip.count {
                let p = rgb + t * n * 3
                for i in 0..<n {
                    p[3 * i] = p[3 * i] * std.x + mean.x; p[3 * i + 1] = p[3 * i + 1] * std.y + mean.y
                    p[3 * i + 2] = p[3 * i + 2] * std.z + mean.z
                }
                for (operation, magnitude, negate) in operations {
                    RandAugment.apply(operation, magnitude: magnitude, negate: negate, image: p, size: size, scratch: &context.scratchC)
                }
                for i in 0..<(3 * n) { p[i] = min(max(p[i], 0), 1) }
                ColorOps.normalize(p, n, mean: mean, std: std, into: p)
            }
        }
        if train {
            RandomErasing.apply(rgb, size: size, frames: clip.count, probability: recipe.erasingProbability, rng: &rng)
        }
        return sample.label
    }
}
