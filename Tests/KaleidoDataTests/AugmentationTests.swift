import Foundation
import Testing
import KaleidoTensor
@testable import KaleidoData

@Suite struct AugmentationTests {
    /// Binomial frequency check: within 5 standard deviations of p over n draws.
    func expectRate(_ hits: Int, _ n: Int, _ p: Double, _ what: String) {
        let rate = Double(hits) / Double(n), sd = (p * (1 - p) / Double(n)).squareRoot()
        #expect(abs(rate - p) <= 5 * sd + 1e-9, "\(what): rate \(rate), expected \(p)")
    }

    @Test func drawnParametersFollowTheBYOLRecipe() {
        let maker = ViewMaker(recipe: recipe(large: 32, small: 16, saliency: 0.1))
        let n = 3000
        var flips = 0, jitters = 0, grays = 0, blurs = [0, 0], solarizes = [0, 0], saliency = 0, smallSaliency = 0
        var largeAreas: [Float] = [], smallAreas: [Float] = []
        for position in 0..<n {
            let params = maker.params(width: 64, height: 48, key: SampleKey(seed: 3, epoch: 0, dataset: 0, position: position))
            flips += params[0].flip ? 1 : 0
            jitters += params[0].jitter != nil ? 1 : 0
            grays += params[1].grayscale ? 1 : 0
            for v in 0..<2 {
                blurs[v] += params[v].blurSigma > 0 ? 1 : 0
                solarizes[v] += params[v].solarize ? 1 : 0
            }
            saliency += params[0].removeBackground ? 1 : 0
            smallSaliency += params[2].removeBackground || params[3].removeBackground ? 1 : 0
            for (v, p) in params.enumerated() {
                let crop = p.crop
                #expect(crop.x >= 0 && crop.y >= 0 && crop.x + crop.width <= 64 && crop.y + crop.height <= 48)
                let area = crop.width * crop.height / (64 * 48)
                (v < 2 ? { largeAreas.append(area) } : { smallAreas.append(area) })()
                let ratio = crop.width / crop.height
                #expect(ratio > 0.7 && ratio < 1.45, "aspect ratio \(ratio)")
            }
            if let jitter = params[0].jitter {
                #expect(Set(jitter.map(\.kind)) == [0, 1, 2, 3])
                for (kind, factor) in jitter {
                    if kind == 3 { #expect(abs(factor) <= 0.1) } else { #expect(factor >= 0.6 - 1e-6 && factor <= 1.4 + 1e-6) }
                }
            }
        }
        expectRate(flips, n, 0.5, "flip")
        expectRate(jitters, n, 0.8, "colour jitter")
        expectRate(grays, n, 0.2, "grayscale")
        expectRate(blurs[0], n, 1.0, "blur, view 1")
        expectRate(blurs[1], n, 0.1, "blur, view 2")
        expectRate(solarizes[0], n, 0.0, "solarize, view 1")
        expectRate(solarizes[1], n, 0.2, "solarize, view 2")
        expectRate(saliency, n, 0.1, "background removal")
        #expect(smallSaliency == 0, "small views never remove the background")
        // Crop areas stay in range (up to rounding to whole pixels) and spread over it.
        #expect(largeAreas.min()! > 0.17 && largeAreas.max()! <= 1.0 && largeAreas.max()! > 0.9)
        #expect(smallAreas.min()! > 0.03 && smallAreas.max()! < 0.33)
        let meanLarge = largeAreas.reduce(0, +) / Float(largeAreas.count)
        #expect(meanLarge > 0.5 && meanLarge < 0.65, "mean large crop area \(meanLarge), uniform on [0.2, 1] gives 0.6")
    }

    @Test func fullFrameResampleIsExactAndFlipMirrors() {
        var pixels: [UInt8] = []
        for i in 0..<(6 * 5) { pixels += [UInt8(i * 7 % 256), UInt8(i * 3), UInt8(255 - i)] }
        let image = Image8(width: 6, height: 5, channels: 3, pixels: pixels)
        var scratch: [Float] = []
        var out = [Float](repeating: 0, count: 30 * 3), flipped = out
        let y = AxisTaps(sourceSize: 5, start: 0, length: 5, outputs: 5)
        for (flip, target) in [(false, 0), (true, 1)] {
            let x = AxisTaps(sourceSize: 6, start: 0, length: 6, outputs: 6, flip: flip)
            image.pixels.withUnsafeBufferPointer { src in
                if target == 0 {
                    out.withUnsafeMutableBufferPointer { Resample.run(src.baseAddress!, width: 6, channels: 3, x: x, y: y, gain: 1 / 255, out: $0.baseAddress!, scratch: &scratch) }
                } else {
                    flipped.withUnsafeMutableBufferPointer { Resample.run(src.baseAddress!, width: 6, channels: 3, x: x, y: y, gain: 1 / 255, out: $0.baseAddress!, scratch: &scratch) }
                }
            }
        }
        for i in 0..<(30 * 3) { #expect(abs(out[i] * 255 - Float(pixels[i])) < 1e-3) }
        for row in 0..<5 {
            for col in 0..<6 {
                for c in 0..<3 { #expect(flipped[(row * 6 + col) * 3 + c] == out[(row * 6 + 5 - col) * 3 + c]) }
            }
        }
    }

    @Test func downscalingAveragesInsteadOfAliasing() {
        // A 1-px checkerboard shrunk 8× must come out flat gray, not black or white.
        var pixels: [UInt8] = []
        for y in 0..<64 { for x in 0..<64 { let v: UInt8 = (x + y) % 2 == 0 ? 255 : 0; pixels += [v, v, v] } }
        let x = AxisTaps(sourceSize: 64, start: 0, length: 64, outputs: 8)
        var out = [Float](repeating: 0, count: 8 * 8 * 3), scratch: [Float] = []
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { Resample.run(src.baseAddress!, width: 64, channels: 3, x: x, y: x, gain: 1 / 255, out: $0.baseAddress!, scratch: &scratch) }
        }
        #expect(out.allSatisfy { abs($0 - 0.5) < 0.05 })
    }

    @Test func videoViewsShareOneCropAndTakeConsecutiveFrames() throws {
        // Frame t is a horizontal ramp whose brightness encodes t, so a shared crop means the same
        // spatial pattern in every frame, shifted by a constant per frame.
        let size = 24, frames = 10
        var samples: [DecodedSample] = []
        for s in 0..<4 {
            let clip = (0..<frames).map { t -> Image8 in
                var p: [UInt8] = []
                for _ in 0..<size { for x in 0..<size { let v = UInt8(x * 4 + t * 10); p += [v, v, v] } }
                return Image8(width: size, height: size, channels: 3, pixels: p)
            }
            samples.append(DecodedSample(frames: clip, label: s % 2))
        }
        let dataset = MemoryDataset(modality: .video, classes: ["a", "b"], samples: samples)
        var plain = recipe(large: 12, small: 6, saliency: 0, clip: 3)
        for v in plain.large.indices + plain.small.indices.map({ $0 + plain.large.count }) {
            // No photometric changes: only geometry remains to compare.
            if v < plain.large.count { plain.large[v].jitterProbability = 0; plain.large[v].grayscaleProbability = 0; plain.large[v].blurProbability = 0; plain.large[v].solarizeProbability = 0 } else {
                let k = v - plain.large.count
                plain.small[k].jitterProbability = 0; plain.small[k].grayscaleProbability = 0; plain.small[k].blurProbability = 0; plain.small[k].solarizeProbability = 0
            }
        }
        let maker = ViewMaker(recipe: plain)
        var starts = Set<Int>()
        for position in 0..<12 {
            let views = try maker.views(of: dataset, index: position % 4, key: SampleKey(seed: 1, epoch: 0, dataset: 1, position: position))
            for (v, view) in plain.views.enumerated() {
                let n = view.size * view.size * 3
                let rgb = views.rgb[v]
                // Undo normalisation of channel 0.
                func value(_ t: Int, _ i: Int) -> Float { (rgb[t * n + i * 3] * plain.std.x + plain.mean.x) * 255 }
                let offset1 = value(1, 0) - value(0, 0), offset2 = value(2, 0) - value(1, 0)
                #expect(abs(offset1 - 10) < 0.05 && abs(offset2 - 10) < 0.05, "consecutive frames, stride 1")
                for i in 0..<(view.size * view.size) {
                    #expect(abs(value(1, i) - value(0, i) - 10) < 0.05, "same crop in every frame")
                }
            }
        }
        for position in 0..<200 {
            var rng = SampleKey(seed: 1, epoch: 0, dataset: 1, position: position).rng(view: 0, stream: .viewTemporal)
            let clip = Draw.clip(frames: frames, clip: 3, stride: 2, rng: &rng)
            #expect(clip[1] == clip[0] + 2 && clip[2] == clip[0] + 4 && clip[2] < frames)
            starts.insert(clip[0])
        }
        #expect(starts == Set(0...5), "every start of a 5-frame span in 10 frames occurs")
        var rng = SplitMix64(seed: 1)
        #expect(Draw.clip(frames: 2, clip: 4, stride: 1, rng: &rng) == [0, 1, 1, 1], "short videos repeat the last frame")
    }

    @Test func rgbdGeometryIsIdenticalForColourAndDepth() throws {
        // Depth is a copy of the red channel (in millimetres), so after identical geometry the
        // depth view equals the red view.
        let size = 20
        var samples: [DecodedSample] = []
        for s in 0..<3 {
            var rgb: [UInt8] = [], depth: [UInt16] = []
            for y in 0..<size { for x in 0..<size { let v = UInt8((x * 11 + y * 5 + s * 30) % 256); rgb += [v, 40, 200]; depth.append(UInt16(v)) } }
            samples.append(DecodedSample(frames: [Image8(width: size, height: size, channels: 3, pixels: rgb)],
                                         depth: Image16(width: size, height: size, pixels: depth), depthScale: 255, label: 0))
        }
        let dataset = MemoryDataset(modality: .rgbd, classes: ["room"], samples: samples)
        var plain = recipe(large: 12, small: 6, saliency: 0)
        for k in plain.large.indices { plain.large[k].jitterProbability = 0; plain.large[k].grayscaleProbability = 0; plain.large[k].blurProbability = 0; plain.large[k].solarizeProbability = 0 }
        for k in plain.small.indices { plain.small[k].jitterProbability = 0; plain.small[k].grayscaleProbability = 0; plain.small[k].blurProbability = 0; plain.small[k].solarizeProbability = 0 }
        let maker = ViewMaker(recipe: plain)
        var flipped = 0
        for position in 0..<16 {
            let key = SampleKey(seed: 9, epoch: 0, dataset: 2, position: position)
            let views = try maker.views(of: dataset, index: position % 3, key: key)
            for (v, view) in plain.views.enumerated() {
                for i in 0..<(view.size * view.size) {
                    let red = views.rgb[v][3 * i] * plain.std.x + plain.mean.x
                    let depth = views.depth[v][i] * plain.depthStd + plain.depthMean
                    #expect(abs(red - depth) < 1e-4)
                }
            }
            flipped += maker.params(width: size, height: size, key: key)[0].flip ? 1 : 0
        }
        #expect(flipped > 0 && flipped < 16, "flips were exercised")
    }

    @Test func photometricOperationsMatchTheirDefinitions() {
        var p: [Float] = [0.2, 0.4, 0.6, 0.9, 0.1, 0.5]
        p.withUnsafeMutableBufferPointer { ColorOps.grayscale($0.baseAddress!, 2) }
        #expect(abs(p[0] - (0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6)) < 1e-6 && p[0] == p[1] && p[1] == p[2])
        var q: [Float] = [0.2, 0.7, 0.5]
        q.withUnsafeMutableBufferPointer { ColorOps.solarize($0.baseAddress!, 1) }
        #expect(q == [0.2, 0.3, 0.5])
        // A full hue turn is the identity; a third of a turn maps red to green.
        var red: [Float] = [1, 0, 0]
        red.withUnsafeMutableBufferPointer { ColorOps.hue($0.baseAddress!, 1, 1.0 / 3.0) }
        #expect(abs(red[0]) < 1e-5 && abs(red[1] - 1) < 1e-5 && abs(red[2]) < 1e-5)
        var c: [Float] = [0.3, 0.6, 0.9]
        c.withUnsafeMutableBufferPointer { ColorOps.hue($0.baseAddress!, 1, 0.5); ColorOps.hue($0.baseAddress!, 1, 0.5) }
        #expect(zip(c, [0.3, 0.6, 0.9]).allSatisfy { abs($0 - $1) < 1e-5 })
        // Blur keeps a constant image constant and spreads an impulse symmetrically.
        var image = [Float](repeating: 0, count: 9 * 9 * 3)
        image[(4 * 9 + 4) * 3] = 1
        var scratch: [Float] = []
        image.withUnsafeMutableBufferPointer { ColorOps.gaussianBlur($0.baseAddress!, width: 9, height: 9, sigma: 1, radius: 3, scratch: &scratch) }
        #expect(abs(image.reduce(0, +) - 1) < 1e-5)
        #expect(abs(image[(4 * 9 + 3) * 3] - image[(4 * 9 + 5) * 3]) < 1e-7 && image[(4 * 9 + 4) * 3] < 0.2)
    }
}
