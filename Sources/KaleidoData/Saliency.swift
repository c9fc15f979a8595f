/// Foreground masks for ReLICv2's saliency-based background removal.
///
/// ReLICv2 uses DeepUSPS masks; we cannot ship that model. A mask file beside the image
/// (`name.mask.png`, 8-bit gray, bright = object) is used when present. Otherwise the mask is
/// estimated with a boundary prior (as in Wei et al. 2012, "Geodesic saliency using background
/// priors", simplified to colour distances): pixels on the image border are taken as background
/// samples, a pixel's saliency is its smallest colour distance to any of them, and Otsu's
/// threshold splits salient from not. It costs a few microseconds on a 64-px grid, works well on
/// objects in front of a plain or smoothly varying background, and degrades gracefully (to "keep
/// everything") on cluttered photos, which is the safe failure for an augmentation.
public enum Saliency {
    /// A soft mask in [0, 1] on a grid that may be coarser than the image.
    public struct Mask: Sendable {
        public let width: Int
        public let height: Int
        public let values: [Float]
    }

    /// Side of the grid the estimate is computed on; larger images are box-averaged down to it.
    static let grid = 64
    /// Border colours compared against.
    static let borderSamples = 32

    /// The mask from a mask file (255 = foreground).
    public static func mask(from file: Image8) -> Mask {
        Mask(width: file.width, height: file.height, values: file.pixels.map { Float($0) * (1 / 255) })
    }

    /// Estimates the foreground of `image` by the boundary prior described above.
    public static func estimate(_ image: Image8) -> Mask {
        let factor = max(1, (max(image.width, image.height) + grid - 1) / grid)
        let w = max(1, image.width / factor), h = max(1, image.height / factor)
        // Box-average to the grid, as Float RGB.
        var rgb = [Float](repeating: 0, count: w * h * 3)
        let c = image.channels
        image.pixels.withUnsafeBufferPointer { src in
            let norm = 1 / Float(factor * factor)
            for y in 0..<h {
                for x in 0..<w {
                    var a: Float = 0, b: Float = 0, d: Float = 0
                    for dy in 0..<factor {
                        let row = (y * factor + dy) * image.width
                        for dx in 0..<factor {
                            let p = (row + x * factor + dx) * c
                            if c >= 3 {
                                a += Float(src[p]); b += Float(src[p + 1]); d += Float(src[p + 2])
                            } else {
                                a += Float(src[p]); b += Float(src[p]); d += Float(src[p])
                            }
                        }
                    }
                    rgb[(y * w + x) * 3] = a * norm; rgb[(y * w + x) * 3 + 1] = b * norm; rgb[(y * w + x) * 3 + 2] = d * norm
                }
            }
        }
        // Border samples evenly spaced along the perimeter.
        let perimeter = max(1, 2 * (w + h) - 4)
        var border: [SIMD3<Float>] = []
        for s in 0..<borderSamples {
            var t = s * perimeter / borderSamples
            let x: Int, y: Int
            if t < w { x = t; y = 0 } else {
                t -= w
                if t < h - 1 { x = w - 1; y = t + 1 } else {
                    t -= h - 1
                    if t < w - 1 { x = w - 2 - t; y = h - 1 } else { t -= w - 1; x = 0; y = max(0, h - 2 - t) }
                }
            }
            let p = (min(y, h - 1) * w + min(max(x, 0), w - 1)) * 3
            border.append(SIMD3(rgb[p], rgb[p + 1], rgb[p + 2]))
        }
        var saliency = [Float](repeating: 0, count: w * h)
        var top: Float = 0
        for i in 0..<(w * h) {
            let v = SIMD3(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2])
            var best = Float.infinity
            for b in border {
                let d = v - b
                best = min(best, (d * d).sum())
            }
            saliency[i] = best.squareRoot()
            top = max(top, saliency[i])
        }
        guard top > 8 else {  // flat image: nothing stands out, keep it all
            return Mask(width: w, height: h, values: [Float](repeating: 1, count: w * h))
        }
        let threshold = otsu(saliency, maximum: top)
        var hard = saliency.map { $0 > threshold ? Float(1) : 0 }
        // A 3×3 box filter gives the cut a one-pixel soft edge.
        var soft = hard
        for y in 0..<h {
            for x in 0..<w {
                var sum: Float = 0, n: Float = 0
                for dy in -1...1 {
                    for dx in -1...1 {
                        let yy = y + dy, xx = x + dx
                        if yy >= 0, yy < h, xx >= 0, xx < w { sum += hard[yy * w + xx]; n += 1 }
                    }
                }
                soft[y * w + x] = sum / n
            }
        }
        hard = soft
        return Mask(width: w, height: h, values: hard)
    }

    /// Otsu's threshold over a 64-bin histogram of values in [0, maximum].
    static func otsu(_ values: [Float], maximum: Float) -> Float {
        let bins = 64
        var histogram = [Float](repeating: 0, count: bins)
        for v in values { histogram[min(bins - 1, Int(v / maximum * Float(bins)))] += 1 }
        let total = Float(values.count)
        var sumAll: Float = 0
        for (i, count) in histogram.enumerated() { sumAll += Float(i) * count }
        var weightBackground: Float = 0, sumBackground: Float = 0
        var best: Float = -1, bestBin = 0
        for i in 0..<bins {
            weightBackground += histogram[i]
            if weightBackground == 0 { continue }
            let weightForeground = total - weightBackground
            if weightForeground == 0 { break }
            sumBackground += Float(i) * histogram[i]
            let meanB = sumBackground / weightBackground, meanF = (sumAll - sumBackground) / weightForeground
            let between = weightBackground * weightForeground * (meanB - meanF) * (meanB - meanF)
            if between > best { best = between; bestBin = i }
        }
        return (Float(bestBin) + 1) / Float(bins) * maximum
    }
}
