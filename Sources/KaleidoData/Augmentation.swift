import Foundation
import KaleidoTensor

/// The augmentations of one view, with BYOL's parameters by default (Grill et al. 2020, table 6),
/// which ReLICv2 uses unchanged.
public struct ViewRecipe: Sendable, Equatable, Codable {
    /// Output side in pixels.
    public var size: Int
    /// Random resized crop: area fraction and aspect ratio of the box (torchvision's algorithm).
    public var scale: ClosedRange<Float>
    public var ratio: ClosedRange<Float> = (3.0 / 4.0)...(4.0 / 3.0)
    public var flipProbability: Float = 0.5
    /// Colour jitter, applied with this probability, in a random order, like torchvision's.
    public var jitterProbability: Float = 0.8
    public var brightness: Float = 0.4
    public var contrast: Float = 0.4
    public var saturation: Float = 0.2
    public var hue: Float = 0.1
    public var grayscaleProbability: Float = 0.2
    public var blurProbability: Float = 0
    /// σ range of the blur in pixels of a 224-px view; scaled by size/224 (the kernel is 23 px at
    /// 224, i.e. ~10 % of the side), so the blur looks the same at every resolution.
    public var blurSigma: ClosedRange<Float> = 0.1...2.0
    public var solarizeProbability: Float = 0
    /// Saliency background removal (ReLICv2's p_m); only large views use it.
    public var saliencyProbability: Float = 0

    public init(size: Int, scale: ClosedRange<Float>) {
        self.size = size
        self.scale = scale
    }

    /// BYOL's first (index 0) or second (index 1) view: blur 1.0 / 0.1, solarize 0 / 0.2.
    /// Colour-jitter strength s scales brightness, contrast and saturation by s and hue by s.
    public static func byol(_ index: Int, size: Int, scale: ClosedRange<Float>, jitterStrength: Float = 1) -> ViewRecipe {
        var recipe = ViewRecipe(size: size, scale: scale)
        recipe.brightness = 0.4 * jitterStrength
        recipe.contrast = 0.4 * jitterStrength
        recipe.saturation = 0.2 * jitterStrength
        recipe.hue = min(0.5, 0.1 * jitterStrength)
        recipe.blurProbability = index % 2 == 0 ? 1.0 : 0.1
        recipe.solarizeProbability = index % 2 == 0 ? 0.0 : 0.2
        return recipe
    }
}

/// All views of one sample: L large and S small, plus how video clips and depth are treated.
public struct MultiCropRecipe: Sendable, Equatable, Codable {
    public var large: [ViewRecipe]
    public var small: [ViewRecipe]
    /// Frames per video view, and the step between them in the source video.
    public var clipFrames: Int
    public var clipStride: Int
    /// ImageNet statistics, applied after augmentation.
    public var mean: SIMD3<Float> = SIMD3(0.485, 0.456, 0.406)
    public var std: SIMD3<Float> = SIMD3(0.229, 0.224, 0.225)
    /// Depth is converted to metres, then normalised as (d − depthMean) / depthStd.
    public var depthMean: Float = 2.5
    public var depthStd: Float = 1.5

    public init(large: [ViewRecipe], small: [ViewRecipe], clipFrames: Int = 4, clipStride: Int = 1) {
        self.large = large
        self.small = small
        self.clipFrames = clipFrames
        self.clipStride = clipStride
    }

    /// ReLICv2 multi-crop: large views alternate BYOL's two recipes; small views use BYOL's
    /// second recipe with blur probability ½ (the multi-crop setting of SwAV/NNCLR, whose small
    /// crops ReLICv2 adopts). Saliency removal applies to large views only.
    public static func relicv2(largeCrops: Int, largeSize: Int, largeScale: ClosedRange<Float>,
                               smallCrops: Int, smallSize: Int, smallScale: ClosedRange<Float>,
                               jitterStrength: Float = 1, saliencyProbability: Float = 0,
                               clipFrames: Int = 4, clipStride: Int = 1) -> MultiCropRecipe {
        let large = (0..<largeCrops).map { i -> ViewRecipe in
            var r = ViewRecipe.byol(i, size: largeSize, scale: largeScale, jitterStrength: jitterStrength)
            r.saliencyProbability = saliencyProbability
            return r
        }
        let small = (0..<smallCrops).map { _ -> ViewRecipe in
            var r = ViewRecipe.byol(1, size: smallSize, scale: smallScale, jitterStrength: jitterStrength)
            r.blurProbability = 0.5
            return r
        }
        return MultiCropRecipe(large: large, small: small, clipFrames: clipFrames, clipStride: clipStride)
    }

    public var views: [ViewRecipe] { large + small }
}

/// What identifies one drawing of a sample: the random choices of its views depend on this and
/// on nothing else (not the rank, thread, world size or the order samples are made in).
public struct SampleKey: Hashable, Sendable, Codable {
    public var seed: UInt64
    public var epoch: Int
    /// Dataset (= modality) id.
    public var dataset: Int
    /// Position in that dataset's sample stream (epoch · count + place in the epoch's order).
    public var position: Int

    public init(seed: UInt64, epoch: Int, dataset: Int, position: Int) {
        self.seed = seed; self.epoch = epoch; self.dataset = dataset; self.position = position
    }

    /// The generator of view `view`'s choices; `stream` separates independent decisions.
    func rng(view: Int, stream: RandomStream = .viewSpatial) -> SplitMix64 {
        SplitMix64(keys: seed, UInt64(epoch), UInt64(dataset), UInt64(position), UInt64(view), stream.rawValue)
    }
}

/// The random choices of one view, drawn before any pixel is touched.
public struct ViewParams: Equatable, Sendable {
    public var crop: CropBox
    public var flip: Bool
    /// Colour-jitter factors in the order they are applied (nil: no jitter). Kind: 0 brightness,
    /// 1 contrast, 2 saturation, 3 hue.
    public var jitter: [(kind: Int, factor: Float)]?
    public var grayscale: Bool
    /// σ in pixels of the output view (0 = no blur).
    public var blurSigma: Float
    public var solarize: Bool
    public var removeBackground: Bool
    /// Gray level the background is replaced with.
    public var backgroundLevel: Float

    public static func == (a: ViewParams, b: ViewParams) -> Bool {
        a.crop == b.crop && a.flip == b.flip && a.grayscale == b.grayscale && a.blurSigma == b.blurSigma
            && a.solarize == b.solarize && a.removeBackground == b.removeBackground && a.backgroundLevel == b.backgroundLevel
            && a.jitter?.map(\.kind) == b.jitter?.map(\.kind) && a.jitter?.map(\.factor) == b.jitter?.map(\.factor)
    }
}

enum Draw {
    /// torchvision's RandomResizedCrop.get_params: ten tries at a box of random area and
    /// log-uniform aspect ratio inside the image, else the largest centred box of clamped ratio.
    static func resizedCrop(width: Int, height: Int, scale: ClosedRange<Float>, ratio: ClosedRange<Float>,
                            rng: inout SplitMix64) -> CropBox {
        let area = Float(width * height)
        let logLo = log(ratio.lowerBound), logHi = log(ratio.upperBound)
        for _ in 0..<10 {
            let target = area * (scale.lowerBound + rng.uniform() * (scale.upperBound - scale.lowerBound))
            let aspect = exp(logLo + rng.uniform() * (logHi - logLo))
            let w = (target * aspect).squareRoot().rounded(), h = (target / aspect).squareRoot().rounded()
            if w > 0, h > 0, w <= Float(width), h <= Float(height) {
                let x = (rng.uniform() * (Float(width) - w + 1)).rounded(.down)
                let y = (rng.uniform() * (Float(height) - h + 1)).rounded(.down)
                return CropBox(x: x, y: y, width: w, height: h)
            }
        }
        let inRatio = Float(width) / Float(height)
        var w = Float(width), h = Float(height)
        if inRatio < ratio.lowerBound { h = (w / ratio.lowerBound).rounded() } else if inRatio > ratio.upperBound {
            w = (h * ratio.upperBound).rounded()
        }
        return CropBox(x: ((Float(width) - w) / 2).rounded(.down), y: ((Float(height) - h) / 2).rounded(.down), width: w, height: h)
    }

    /// Every choice of a view after its crop, in a fixed order of draws.
    static func params(_ recipe: ViewRecipe, width: Int, height: Int, allowSaliency: Bool,
                       rng: inout SplitMix64) -> ViewParams {
        let crop = resizedCrop(width: width, height: height, scale: recipe.scale, ratio: recipe.ratio, rng: &rng)
        let flip = rng.uniform() < recipe.flipProbability
        let doJitter = rng.uniform() < recipe.jitterProbability
        func factor(_ strength: Float) -> Float { max(0, 1 - strength) + rng.uniform() * (1 + strength - max(0, 1 - strength)) }
        let factors: [Float] = [factor(recipe.brightness), factor(recipe.contrast), factor(recipe.saturation),
                                (rng.uniform() * 2 - 1) * recipe.hue]
        var order = [0, 1, 2, 3]
        rng.shuffle(&order)
        let grayscale = rng.uniform() < recipe.grayscaleProbability
        let doBlur = rng.uniform() < recipe.blurProbability
        let sigma224 = recipe.blurSigma.lowerBound + rng.uniform() * (recipe.blurSigma.upperBound - recipe.blurSigma.lowerBound)
        let solarize = rng.uniform() < recipe.solarizeProbability
        let removeBackground = rng.uniform() < recipe.saliencyProbability
        let level = rng.uniform()
        return ViewParams(crop: crop, flip: flip,
                          jitter: doJitter ? order.map { (kind: $0, factor: factors[$0]) } : nil,
                          grayscale: grayscale, blurSigma: doBlur ? sigma224 * Float(recipe.size) / 224 : 0,
                          solarize: solarize, removeBackground: allowSaliency && removeBackground, backgroundLevel: level)
    }

    /// Frame indices of a clip of `clip` frames `stride` apart starting at a random frame; a
    /// video shorter than the clip repeats its last frame.
    static func clip(frames: Int, clip: Int, stride: Int, rng: inout SplitMix64) -> [Int] {
        let span = (clip - 1) * stride + 1
        let start = frames > span ? Int(rng.next() % UInt64(frames - span + 1)) : 0
        return (0..<clip).map { min(start + $0 * stride, frames - 1) }
    }
}

/// Where one view of one sample is written: `rgb` holds frames × size × size × 3 Floats,
/// `depth` (RGB-D only) size × size Floats.
struct ViewDestination {
    var rgb: UnsafeMutablePointer<Float>
    var depth: UnsafeMutablePointer<Float>?
}

/// Makes the augmented views of samples. Stateless; all scratch lives in the `DecodeContext`.
public struct ViewMaker: Sendable {
    public let recipe: MultiCropRecipe

    public init(recipe: MultiCropRecipe) { self.recipe = recipe }

    /// Frames per view for a dataset of this modality.
    public func frames(for modality: Modality) -> Int { modality == .video ? recipe.clipFrames : 1 }

    /// Decodes sample `index` of `dataset` once and writes every view into `destinations`
    /// (one per view: large first, then small). Returns the label.
    @discardableResult
    func make(_ dataset: any Dataset, index: Int, key: SampleKey, destinations: [ViewDestination],
              context: DecodeContext) throws -> Int {
        let views = recipe.views
        precondition(destinations.count == views.count, "one destination per view")
        let frameCount = dataset.frameCount(of: index)
        var clips: [[Int]] = []
        for v in views.indices {
            if dataset.modality == .video {
                var rng = key.rng(view: v, stream: .viewTemporal)
                clips.append(Draw.clip(frames: frameCount, clip: recipe.clipFrames, stride: recipe.clipStride, rng: &rng))
            } else {
                clips.append([0])
            }
        }
        let needed = Array(Set(clips.joined())).sorted()
        let sample = try dataset.load(index, frames: needed, context: context)
        var slot = [Int: Int]()
        for (i, f) in needed.enumerated() { slot[f] = i }
        var masks = [Int: Saliency.Mask]()
        for (v, view) in views.enumerated() {
            var rng = key.rng(view: v)
            let params = Draw.params(view, width: sample.width, height: sample.height,
                                     allowSaliency: v < recipe.large.count, rng: &rng)
            let frames = clips[v].map { slot[$0]! }
            var mask: Saliency.Mask? = nil
            if params.removeBackground {
                let first = frames[0]
                if masks[first] == nil {
                    masks[first] = sample.mask.map(Saliency.mask(from:)) ?? Saliency.estimate(sample.frames[first])
                }
                mask = masks[first]
            }
            render(sample, frames: frames, params: params, size: view.size, mask: mask,
                   destination: destinations[v], context: context)
        }
        return sample.label
    }

    /// Applies `params` to the chosen frames (and depth) of `sample`.
    func render(_ sample: DecodedSample, frames: [Int], params: ViewParams, size: Int, mask: Saliency.Mask?,
                destination: ViewDestination, context: DecodeContext) {
        let w = sample.width, h = sample.height
        let x = AxisTaps(sourceSize: w, start: params.crop.x, length: params.crop.width, outputs: size, flip: params.flip)
        let y = AxisTaps(sourceSize: h, start: params.crop.y, length: params.crop.height, outputs: size)
        let n = size * size
        ensureCapacity(&context.scratchB, n * 3)
        var maskValues: [Float]? = nil
        if let mask {
            let sx = Float(mask.width) / Float(w), sy = Float(mask.height) / Float(h)
            let box = params.crop.scaled(x: sx, y: sy)
            let mx = AxisTaps(sourceSize: mask.width, start: box.x, length: box.width, outputs: size, flip: params.flip)
            let my = AxisTaps(sourceSize: mask.height, start: box.y, length: box.height, outputs: size)
            var values = [Float](repeating: 0, count: n)
            mask.values.withUnsafeBufferPointer { src in
                values.withUnsafeMutableBufferPointer { out in
                    Resample.run(src.baseAddress!, width: mask.width, channels: 1, x: mx, y: my, gain: 1,
                                 out: out.baseAddress!, scratch: &context.scratchA)
                }
            }
            maskValues = values
        }
        let radius = max(1, Int((Float(size) * 0.05).rounded()))
        for (t, frame) in frames.enumerated() {
            let image = sample.frames[frame]
            context.scratchB.withUnsafeMutableBufferPointer { viewBuffer in
                let view = viewBuffer.baseAddress!
                image.pixels.withUnsafeBufferPointer { src in
                    Resample.run(src.baseAddress!, width: w, channels: 3, x: x, y: y, gain: 1 / 255,
                                 out: view, scratch: &context.scratchA)
                }
                if let maskValues {
                    let level = params.backgroundLevel
                    for i in 0..<n {
                        let m = maskValues[i]
                        for c in 0..<3 { view[3 * i + c] = m * view[3 * i + c] + (1 - m) * level }
                    }
                }
                if let jitter = params.jitter {
                    for (kind, factor) in jitter {
                        switch kind {
                        case 0: ColorOps.brightness(view, n, factor)
                        case 1: ColorOps.contrast(view, n, factor)
                        case 2: ColorOps.saturation(view, n, factor)
                        default: ColorOps.hue(view, n, factor)
                        }
                    }
                }
                if params.grayscale { ColorOps.grayscale(view, n) }
                if params.blurSigma > 0 {
                    ColorOps.gaussianBlur(view, width: size, height: size, sigma: params.blurSigma, radius: radius,
                                          scratch: &context.scratchC)
                }
                if params.solarize { ColorOps.solarize(view, n) }
                ColorOps.normalize(view, n, mean: recipe.mean, std: recipe.std, into: destination.rgb + t * n * 3)
            }
        }
        if let depth = sample.depth, let out = destination.depth {
            // Geometry identical to the RGB frame: same taps, so same crop and flip.
            depth.pixels.withUnsafeBufferPointer { src in
                Resample.run(src.baseAddress!, width: w, channels: 1, x: x, y: y, gain: 1 / sample.depthScale,
                             out: out, scratch: &context.scratchA)
            }
            let inv = 1 / recipe.depthStd
            for i in 0..<n { out[i] = (out[i] - recipe.depthMean) * inv }
        }
    }

    /// The views of one sample as separate arrays (tests, `data inspect`): rgb[v] holds
    /// frames × size × size × 3 normalised Floats, depth[v] size × size (RGB-D only).
    public func views(of dataset: any Dataset, index: Int, key: SampleKey,
                      context: DecodeContext = DecodeContext()) throws -> (rgb: [[Float]], depth: [[Float]]) {
        let frames = frames(for: dataset.modality)
        var rgb = recipe.views.map { [Float](repeating: 0, count: frames * $0.size * $0.size * 3) }
        var depth = recipe.views.map { dataset.modality == .rgbd ? [Float](repeating: 0, count: $0.size * $0.size) : [] }
        var storage: [UnsafeMutablePointer<Float>] = []
        var depthStorage: [UnsafeMutablePointer<Float>?] = []
        for v in recipe.views.indices {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: rgb[v].count)
            storage.append(p)
            if dataset.modality == .rgbd {
                depthStorage.append(UnsafeMutablePointer<Float>.allocate(capacity: depth[v].count))
            } else {
                depthStorage.append(nil)
            }
        }
        defer {
            storage.forEach { $0.deallocate() }
            depthStorage.forEach { $0?.deallocate() }
        }
        let destinations = zip(storage, depthStorage).map { ViewDestination(rgb: $0, depth: $1) }
        try make(dataset, index: index, key: key, destinations: destinations, context: context)
        for v in recipe.views.indices {
            rgb[v] = Array(UnsafeBufferPointer(start: storage[v], count: rgb[v].count))
            if let d = depthStorage[v] { depth[v] = Array(UnsafeBufferPointer(start: d, count: depth[v].count)) }
        }
        return (rgb, depth)
    }

    /// The drawn parameters of every view of a sample of the given size (statistics tests).
    public func params(width: Int, height: Int, key: SampleKey) -> [ViewParams] {
        recipe.views.enumerated().map { v, view in
            var rng = key.rng(view: v)
            return Draw.params(view, width: width, height: height, allowSaliency: v < recipe.large.count, rng: &rng)
        }
    }
}
