import Foundation

/// Photometric operations on interleaved RGB Float pixels in [0, 1], in place.
/// `p` points at `n` pixels (3·n Floats). Each follows torchvision's definition so the recipe
/// means what it means in the papers; results are clamped to [0, 1] like torchvision's.
enum ColorOps {
    @inline(__always) static func clamp01(_ v: Float) -> Float { min(max(v, 0), 1) }

    /// ITU-R 601 luma, as torchvision's `rgb_to_grayscale`.
    @inline(__always) static func luma(_ r: Float, _ g: Float, _ b: Float) -> Float { 0.299 * r + 0.587 * g + 0.114 * b }

    static func brightness(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ factor: Float) {
        for i in 0..<(3 * n) { p[i] = clamp01(p[i] * factor) }
    }

    /// Blend with the mean luma of the whole image.
    static func contrast(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ factor: Float) {
        var sum: Float = 0
        for i in 0..<n { sum += luma(p[3 * i], p[3 * i + 1], p[3 * i + 2]) }
        let mean = sum / Float(n) * (1 - factor)
        for i in 0..<(3 * n) { p[i] = clamp01(p[i] * factor + mean) }
    }

    /// Blend with each pixel's own luma.
    static func saturation(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ factor: Float) {
        for i in 0..<n {
            let g = luma(p[3 * i], p[3 * i + 1], p[3 * i + 2]) * (1 - factor)
            p[3 * i] = clamp01(p[3 * i] * factor + g)
            p[3 * i + 1] = clamp01(p[3 * i + 1] * factor + g)
            p[3 * i + 2] = clamp01(p[3 * i + 2] * factor + g)
        }
    }

    /// Rotates the hue by `shift` turns (in [-0.5, 0.5]) through HSV.
    static func hue(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ shift: Float) {
        for i in 0..<n {
            let r = p[3 * i], g = p[3 * i + 1], b = p[3 * i + 2]
            let maxc = max(r, max(g, b)), minc = min(r, min(g, b))
            let delta = maxc - minc
            if delta <= 0 { continue }  // gray: hue is undefined and the pixel does not change
            let s = delta / maxc
            var h: Float
            if maxc == r { h = (g - b) / delta } else if maxc == g { h = 2 + (b - r) / delta } else { h = 4 + (r - g) / delta }
            h = h / 6 + shift
            h -= h.rounded(.down)
            let (nr, ng, nb) = hsvToRGB(h, s, maxc)
            p[3 * i] = nr; p[3 * i + 1] = ng; p[3 * i + 2] = nb
        }
    }

    @inline(__always) static func hsvToRGB(_ h: Float, _ s: Float, _ v: Float) -> (Float, Float, Float) {
        let h6 = h * 6
        let sector = min(Int(h6), 5)
        let f = h6 - Float(sector)
        let pv = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f))
        switch sector {
        case 0: return (v, t, pv)
        case 1: return (q, v, pv)
        case 2: return (pv, v, t)
        case 3: return (pv, q, v)
        case 4: return (t, pv, v)
        default: return (v, pv, q)
        }
    }

    static func grayscale(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n {
            let g = luma(p[3 * i], p[3 * i + 1], p[3 * i + 2])
            p[3 * i] = g; p[3 * i + 1] = g; p[3 * i + 2] = g
        }
    }

    /// BYOL's solarisation on [0, 1] values: x < ½ ? x : 1 − x.
    static func solarize(_ p: UnsafeMutablePointer<Float>, _ n: Int, threshold: Float = 0.5) {
        for i in 0..<(3 * n) where p[i] >= threshold { p[i] = 1 - p[i] }
    }

    /// Separable Gaussian blur of a side×side RGB image with reflect padding (torchvision's).
    /// `sigma` is in pixels of this image, the kernel radius `radius`.
    static func gaussianBlur(_ p: UnsafeMutablePointer<Float>, width: Int, height: Int, sigma: Float, radius: Int,
                             scratch: inout [Float]) {
        guard radius >= 1, sigma > 0 else { return }
        var kernel = [Float](repeating: 0, count: 2 * radius + 1)
        var sum: Float = 0
        for k in -radius...radius {
            let w = exp(-Float(k * k) / (2 * sigma * sigma))
            kernel[k + radius] = w; sum += w
        }
        for k in kernel.indices { kernel[k] /= sum }
        ensureCapacity(&scratch, width * height * 3)
        @inline(__always) func reflect(_ i: Int, _ n: Int) -> Int {
            if n == 1 { return 0 }
            var i = i
            while i < 0 || i >= n { i = i < 0 ? -i : 2 * n - 2 - i }
            return i
        }
        scratch.withUnsafeMutableBufferPointer { tmpBuffer in
            let tmp = tmpBuffer.baseAddress!
            for y in 0..<height {
                let row = p + y * width * 3, dst = tmp + y * width * 3
                for x in 0..<width {
                    var a: Float = 0, b: Float = 0, c: Float = 0
                    for k in -radius...radius {
                        let w = kernel[k + radius], s = row + reflect(x + k, width) * 3
                        a += w * s[0]; b += w * s[1]; c += w * s[2]
                    }
                    dst[3 * x] = a; dst[3 * x + 1] = b; dst[3 * x + 2] = c
                }
            }
            let rowLength = width * 3
            for y in 0..<height {
                let dst = p + y * rowLength
                for i in 0..<rowLength { dst[i] = 0 }
                for k in -radius...radius {
                    let w = kernel[k + radius], src = tmp + reflect(y + k, height) * rowLength
                    for i in 0..<rowLength { dst[i] += w * src[i] }
                }
            }
        }
    }

    /// out = (p − mean) / std per channel.
    static func normalize(_ p: UnsafePointer<Float>, _ n: Int, mean: SIMD3<Float>, std: SIMD3<Float>,
                          into out: UnsafeMutablePointer<Float>) {
        let inv = 1 / std
        for i in 0..<n {
            out[3 * i] = (p[3 * i] - mean.x) * inv.x
            out[3 * i + 1] = (p[3 * i + 1] - mean.y) * inv.y
            out[3 * i + 2] = (p[3 * i + 2] - mean.z) * inv.z
        }
    }
}
