import KaleidoTensor

/// Separable resampling of a crop box to an output grid.
///
/// This is the same filter Pillow uses for `resize(box=…, resample=BILINEAR)`: a triangle kernel
/// whose support widens by the downscale factor, so shrinking a large photo to a 16-px view is
/// antialiased instead of aliased, and enlarging is plain bilinear interpolation. Written here
/// rather than taken from a library because the crop, flip, 8/16-bit → Float conversion and
/// value gain must all happen in the one pass, on buffers we own; no library on the machine
/// does that (libpng/TurboJPEG only decode; TurboJPEG's scaling is limited to 1/8 steps).
///
/// Source pixel i covers [i, i+1); output o of an axis with box (start, length) and n outputs is
/// centred at start + (o + ½)·length/n.
struct AxisTaps {
    /// Taps per output (the same for all outputs; short rows are padded with zero weights).
    let taps: Int
    /// index[o·taps + k] is a clamped source coordinate, weight[o·taps + k] its weight.
    let index: [Int32]
    let weight: [Float]
    let outputs: Int

    init(sourceSize: Int, start: Float, length: Float, outputs: Int, flip: Bool = false) {
        precondition(outputs >= 1 && sourceSize >= 1, "empty resample axis")
        let step = max(length, 1e-3) / Float(outputs)
        let filterScale = max(step, 1)
        let support = filterScale
        let maxTaps = Int((2 * support).rounded(.up)) + 2
        var firsts = [Int](repeating: 0, count: outputs)
        var raw = [Float](repeating: 0, count: outputs * maxTaps)
        var used = 1
        for o in 0..<outputs {
            let center = start + (Float(o) + 0.5) * step
            let first = Int((center - 0.5 - support).rounded(.down))
            var lo = maxTaps, hi = -1, sum: Float = 0
            for k in 0..<maxTaps {
                let distance = abs(Float(first + k) + 0.5 - center) / filterScale
                let w = max(0, 1 - distance)
                raw[o * maxTaps + k] = w
                if w > 0 { lo = min(lo, k); hi = max(hi, k); sum += w }
            }
            if hi < 0 {  // degenerate box: take the nearest pixel
                lo = 0; hi = 0; raw[o * maxTaps] = 1; sum = 1
            }
            let inverse = 1 / sum
            for k in 0..<maxTaps { raw[o * maxTaps + k] *= inverse }
            // Shift so that tap 0 is the first non-zero weight.
            firsts[o] = first + lo
            if lo > 0 {
                for k in 0..<(maxTaps - lo) { raw[o * maxTaps + k] = raw[o * maxTaps + k + lo] }
                for k in (maxTaps - lo)..<maxTaps { raw[o * maxTaps + k] = 0 }
            }
            used = max(used, hi - lo + 1)
        }
        var index = [Int32](repeating: 0, count: outputs * used)
        var weight = [Float](repeating: 0, count: outputs * used)
        for o in 0..<outputs {
            let slot = flip ? outputs - 1 - o : o
            for k in 0..<used {
                index[slot * used + k] = Int32(min(max(firsts[o] + k, 0), sourceSize - 1))
                weight[slot * used + k] = raw[o * maxTaps + k]
            }
        }
        self.taps = used
        self.index = index
        self.weight = weight
        self.outputs = outputs
    }

    /// The smallest and largest source coordinate read.
    var range: ClosedRange<Int> {
        var lo = Int.max, hi = Int.min
        for (i, w) in zip(index, weight) where w != 0 {
            lo = min(lo, Int(i)); hi = max(hi, Int(i))
        }
        return lo <= hi ? lo...hi : Int(index[0])...Int(index[0])
    }
}

/// Pixel component types the resampler reads.
protocol ResampleComponent { var floatValue: Float { get } }
extension UInt8: ResampleComponent { @inline(__always) var floatValue: Float { Float(self) } }
extension UInt16: ResampleComponent { @inline(__always) var floatValue: Float { Float(self) } }
extension Float: ResampleComponent { @inline(__always) var floatValue: Float { self } }

enum Resample {
    /// Resamples `source` (rows of `width`·`channels` components) through the taps `x` and `y`
    /// into `out` (y.outputs × x.outputs × channels Floats), multiplying every value by `gain`
    /// (1/255 turns bytes into [0, 1]).
    @inline(__always)
    static func run<T: ResampleComponent>(_ source: UnsafePointer<T>, width: Int, channels: Int,
                                          x: AxisTaps, y: AxisTaps, gain: Float,
                                          out: UnsafeMutablePointer<Float>, scratch: inout [Float]) {
        let rows = y.range
        let outWidth = x.outputs, rowLength = outWidth * channels
        ensureCapacity(&scratch, rows.count * rowLength)
        scratch.withUnsafeMutableBufferPointer { tmpBuffer in
            let tmp = tmpBuffer.baseAddress!
            // Horizontal pass over the source rows the vertical taps touch.
            x.index.withUnsafeBufferPointer { xi in
                x.weight.withUnsafeBufferPointer { xw in
                    let taps = x.taps
                    for r in rows {
                        let src = source + r * width * channels
                        let dst = tmp + (r - rows.lowerBound) * rowLength
                        if channels == 3 {
                            for o in 0..<outWidth {
                                var a: Float = 0, b: Float = 0, c: Float = 0
                                for k in 0..<taps {
                                    let w = xw[o * taps + k]
                                    let p = src + Int(xi[o * taps + k]) * 3
                                    a += w * p[0].floatValue; b += w * p[1].floatValue; c += w * p[2].floatValue
                                }
                                dst[o * 3] = a; dst[o * 3 + 1] = b; dst[o * 3 + 2] = c
                            }
                        } else {
                            for o in 0..<outWidth {
                                for ch in 0..<channels {
                                    var a: Float = 0
                                    for k in 0..<taps {
                                        a += xw[o * taps + k] * src[Int(xi[o * taps + k]) * channels + ch].floatValue
                                    }
                                    dst[o * channels + ch] = a
                                }
                            }
                        }
                    }
                }
            }
            // Vertical pass: each output row is a weighted sum of contiguous temporary rows.
            y.index.withUnsafeBufferPointer { yi in
                y.weight.withUnsafeBufferPointer { yw in
                    let taps = y.taps
                    for o in 0..<y.outputs {
                        let dst = out + o * rowLength
                        let w0 = yw[o * taps] * gain
                        let row0 = tmp + (Int(yi[o * taps]) - rows.lowerBound) * rowLength
                        for i in 0..<rowLength { dst[i] = w0 * row0[i] }
                        for k in 1..<max(taps, 1) {
                            let w = yw[o * taps + k] * gain
                            if w == 0 { continue }
                            let row = tmp + (Int(yi[o * taps + k]) - rows.lowerBound) * rowLength
                            for i in 0..<rowLength { dst[i] += w * row[i] }
                        }
                    }
                }
            }
        }
    }
}

/// A crop box in source pixels.
public struct CropBox: Equatable, Sendable, Codable {
    public var x: Float
    public var y: Float
    public var width: Float
    public var height: Float

    public init(x: Float, y: Float, width: Float, height: Float) {
        self.x = x; self.y = y; self.width = width; self.height = height
    }

    /// The same region in an image of another size (e.g. a mask at a lower resolution).
    func scaled(x sx: Float, y sy: Float) -> CropBox {
        CropBox(x: x * sx, y: y * sy, width: width * sx, height: height * sy)
    }
}
