import CKernels

/// Geometry of a depthwise 2-D convolution over channels-last images: every channel is
/// convolved with its own K×K filter. OH = (H + 2·pad − K) / stride + 1.
public struct DepthwiseConv2DShape: Equatable, Sendable {
    public let batch, height, width, channels, kernel, stride, padding: Int
    public let outHeight, outWidth: Int

    /// The weight gradient is summed in this many fixed blocks of images, each into its own
    /// partial, then the partials are added in order: parallel and still deterministic.
    public static let weightGradientBlocks = 16

    public init(batch: Int, height: Int, width: Int, channels: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        precondition(kernel >= 1 && stride >= 1 && padding >= 0 && padding < kernel,
                     "bad depthwise geometry k\(kernel) s\(stride) p\(padding)")
        precondition(height + 2 * padding >= kernel && width + 2 * padding >= kernel,
                     "kernel \(kernel) larger than padded input \(height)×\(width)")
        self.batch = batch; self.height = height; self.width = width; self.channels = channels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        outHeight = (height + 2 * padding - kernel) / stride + 1
        outWidth = (width + 2 * padding - kernel) / stride + 1
    }

    var weightBlocks: Int { min(batch, DepthwiseConv2DShape.weightGradientBlocks) }
    var filterFloats: Int { kernel * kernel * channels }
    /// One zero-padded image, input or (for the input gradient) output-gradient sized.
    var paddedImageFloats: Int {
        let input = (height + 2 * padding) * (width + 2 * padding)
        let gradient = (outHeight + 2 * (kernel - 1 - padding)) * (outWidth + 2 * (kernel - 1 - padding))
        return max(input, gradient) * channels
    }

    /// Floats of scratch `forward` and `backward` need with a pool of `threads`: a padded image
    /// per thread, the weight-gradient partials and a flipped copy of the filter.
    public func workspaceFloats(threads: Int) -> Int {
        threads * paddedImageFloats + weightBlocks * filterFloats + filterFloats
    }

    public var forwardFLOPs: Double { 2 * Double(batch * outHeight * outWidth * channels * kernel * kernel) }
}

/// Depthwise convolution, channels-last (ConvNeXt's 7×7, MobileNet-style 3×3).
///
/// out[n,oh,ow,c] = b[c] + Σ_{kh,kw} in[n, oh·s−p+kh, ow·s−p+kw, c] · W[kh,kw,c]
/// in is (N, H, W, C), weight is (K, K, C), bias (C) or nil, out is (N, OH, OW, C).
///
/// Each image is first copied into a zero-padded scratch image, so the inner loops never test
/// bounds. Channels are contiguous, so every inner loop is 8-wide SIMD over c; the forward
/// keeps a tile of 8 output pixels × 8 channels in registers, so each weight load feeds eight
/// independent FMA chains (enough to cover FMA latency on two ports).
public enum DepthwiseConv2D {
    typealias Vector = SIMD8<Float>

    /// Whether the inner loops run CKernels' AVX-512 versions (16 channels a register) instead of
    /// the Swift ones (8): by default where the CPU has AVX-512F. Set once at startup, before any
    /// convolution runs (the CLI clears it for `KALEIDO_CONV=avx2`); the bits are the same either
    /// way for the forward pass and the input gradient when the channels are a multiple of 8 (the
    /// weight gradient sums in another order). `forward` and `backward` take it as their
    /// `avx512` argument's default.
    nonisolated(unsafe) public static var usesAVX512 = kaleido_depthwise_avx512_available() != 0

    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        shape s: DepthwiseConv2DShape, workspace: UnsafeMutablePointer<Float>, pool: ComputePool, avx512: Bool = usesAVX512
    ) {
        let image = Correlation(height: s.height, width: s.width, padding: s.padding, stride: s.stride,
                                outHeight: s.outHeight, outWidth: s.outWidth, kernel: s.kernel, channels: s.channels, avx512: avx512)
        pool.forEachPart(s.batch) { part, images in
            let padded = workspace + part * s.paddedImageFloats
            for n in images {
                image.pad(input + n * s.height * s.width * s.channels, into: padded)
                image.correlate(padded, weight: weight, start: bias, accumulate: false,
                                into: output + n * s.outHeight * s.outWidth * s.channels)
            }
        }
    }

    /// din[n,ih,iw,c]  = Σ dout[n,oh,ow,c] · W[kh,kw,c]   over ih = oh·s−p+kh, iw = ow·s−p+kw
    ///                   (written: its buffer needs no zeroing)
    /// dW[kh,kw,c]    += Σ_{n,oh,ow} in[n,ih,iw,c] · dout[n,oh,ow,c]
    /// db[c]          += Σ_{n,oh,ow} dout[n,oh,ow,c]
    /// With stride 1 the input gradient is itself a correlation: dout padded by K−1−p with the
    /// filter flipped, so it runs through the forward's register-tiled loop.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        shape s: DepthwiseConv2DShape, workspace: UnsafeMutablePointer<Float>, pool: ComputePool, avx512: Bool = usesAVX512
    ) {
        let partials = workspace + pool.threads * s.paddedImageFloats
        let flipped = partials + s.weightBlocks * s.filterFloats
        if let dInput {
            if s.stride == 1 {
                flip(weight, into: flipped, kernel: s.kernel, channels: s.channels)
                let transposed = Correlation(height: s.outHeight, width: s.outWidth, padding: s.kernel - 1 - s.padding, stride: 1,
                                             outHeight: s.height, outWidth: s.width, kernel: s.kernel, channels: s.channels,
                                             avx512: avx512)
                pool.forEachPart(s.batch) { part, images in
                    let padded = workspace + part * s.paddedImageFloats
                    for n in images {
                        transposed.pad(dOutput + n * s.outHeight * s.outWidth * s.channels, into: padded)
                        transposed.correlate(padded, weight: flipped, start: nil, accumulate: false,
                                             into: dInput + n * s.height * s.width * s.channels)
                    }
                }
            } else {
                stridedInputGradient(s, dInput: dInput, dOutput: dOutput, weight: weight, pool: pool)
            }
        }
        if let dWeight {
            weightGradient(s, dWeight: dWeight, dOutput: dOutput, input: input, workspace: workspace, partials: partials,
                           pool: pool, avx512: avx512)
        }
        if let dBias {
            Bias.backward(dBias: dBias, dOutput: dOutput, rows: s.batch * s.outHeight * s.outWidth, channels: s.channels, pool: pool)
        }
    }

    /// flipped[kh,kw,c] = W[K−1−kh, K−1−kw, c]
    static func flip(_ weight: UnsafePointer<Float>, into flipped: UnsafeMutablePointer<Float>, kernel: Int, channels: Int) {
        let taps = kernel * kernel
        for tap in 0..<taps {
            flipped.advanced(by: tap * channels).update(from: weight + (taps - 1 - tap) * channels, count: channels)
        }
    }

    /// The input gradient for stride > 1, gathered per input row: threads own rows, so the
    /// summation order is fixed.
    static func stridedInputGradient(_ s: DepthwiseConv2DShape, dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                     weight: UnsafePointer<Float>, pool: ComputePool) {
        let c = s.channels
        pool.forEachRange(s.batch * s.height, minimumPerThread: 2) { rows in
            for row in rows {
                let n = row / s.height, ih = row % s.height
                let target = dInput + row * s.width * c
                target.update(repeating: 0, count: s.width * c)
                for kh in 0..<s.kernel {
                    let th = ih + s.padding - kh
                    guard th >= 0, th % s.stride == 0, th / s.stride < s.outHeight else { continue }
                    let gradientRow = dOutput + (n * s.outHeight + th / s.stride) * s.outWidth * c
                    for kw in 0..<s.kernel {
                        let filter = weight + (kh * s.kernel + kw) * c
                        for iw in 0..<s.width {
                            let tw = iw + s.padding - kw
                            guard tw >= 0, tw % s.stride == 0, tw / s.stride < s.outWidth else { continue }
                            multiplyAdd(target + iw * c, gradientRow + (tw / s.stride) * c, filter, count: c)
                        }
                    }
                }
            }
        }
    }

    /// Per fixed block of images: pad each image, then for every output row and tap (kh, kw)
    /// dot the input row under the tap with the gradient row, four pixels at a time (with
    /// `avx512`, CKernels' loop takes a whole kernel row at once, the padding included, summing
    /// in another order: the bits differ from these loops').
    static func weightGradient(_ s: DepthwiseConv2DShape, dWeight: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                               input: UnsafePointer<Float>, workspace: UnsafeMutablePointer<Float>,
                               partials: UnsafeMutablePointer<Float>, pool: ComputePool, avx512: Bool) {
        let c = s.channels, blocks = s.weightBlocks
        let image = Correlation(height: s.height, width: s.width, padding: s.padding, stride: s.stride,
                                outHeight: s.outHeight, outWidth: s.outWidth, kernel: s.kernel, channels: c, avx512: avx512)
        let paddedWidth = s.width + 2 * s.padding
        pool.forEachPart(blocks) { part, blockRange in
            let padded = workspace + part * s.paddedImageFloats
            for block in blockRange {
                let partial = partials + block * s.filterFloats
                partial.update(repeating: 0, count: s.filterFloats)
                for n in (s.batch * block / blocks)..<(s.batch * (block + 1) / blocks) {
                    image.pad(input + n * s.height * s.width * c, into: padded)
                    for oh in 0..<s.outHeight {
                        let gradientRow = dOutput + (n * s.outHeight + oh) * s.outWidth * c
                        // Only taps on image rows and, per tap column, the output pixels whose
                        // input is inside the image: the rest multiply the zero padding.
                        for kh in image.taps(outIndex: oh, size: s.height) {
                            let inputRow = padded + (oh * s.stride + kh) * paddedWidth * c
                            if avx512 {
                                kaleido_depthwise_weight_gradient_row_avx512(partial + kh * s.kernel * c, inputRow, gradientRow,
                                                                             Int32(s.outWidth), Int32(s.stride), Int32(s.kernel), Int32(c))
                                continue
                            }
                            for kw in 0..<s.kernel {
                                let pixels = outputPixels(tap: kw, s)
                                dotAlongRow(partial + (kh * s.kernel + kw) * c, inputRow + (pixels.lowerBound * s.stride + kw) * c,
                                            gradientRow + pixels.lowerBound * c,
                                            count: pixels.count, sourceStep: s.stride * c, channels: c)
                            }
                        }
                    }
                }
            }
        }
        for block in 0..<blocks {
            let partial = partials + block * s.filterFloats
            for i in 0..<s.filterFloats { dWeight[i] += partial[i] }
        }
    }

    /// Output columns ow whose input column ow·s − p + kw lies inside the image.
    @inline(__always) static func outputPixels(tap kw: Int, _ s: DepthwiseConv2DShape) -> Range<Int> {
        // ow·s ≥ p − kw  and  ow·s < W + p − kw
        let low = max(0, (s.padding - kw + s.stride - 1) / s.stride)
        let high = min(s.outWidth, max(0, (s.width + s.padding - kw + s.stride - 1) / s.stride))
        return low..<max(low, high)
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
    }

    @inline(__always) static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }

    /// target[c] += Σ_j a[j·aStep + c] · b[j·C + c], with four partial sums in registers.
    @inline(__always) static func dotAlongRow(_ target: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                              count: Int, sourceStep: Int, channels: Int) {
        var c0 = 0
        while c0 + 8 <= channels {
            var s0 = Vector(), s1 = Vector(), s2 = Vector(), s3 = Vector()
            var j = 0
            while j + 4 <= count {
                s0 = s0.addingProduct(load(a + j * sourceStep + c0), load(b + j * channels + c0))
                s1 = s1.addingProduct(load(a + (j + 1) * sourceStep + c0), load(b + (j + 1) * channels + c0))
                s2 = s2.addingProduct(load(a + (j + 2) * sourceStep + c0), load(b + (j + 2) * channels + c0))
                s3 = s3.addingProduct(load(a + (j + 3) * sourceStep + c0), load(b + (j + 3) * channels + c0))
                j += 4
            }
            while j < count {
                s0 = s0.addingProduct(load(a + j * sourceStep + c0), load(b + j * channels + c0))
                j += 1
            }
            store(load(target + c0) + ((s0 + s1) + (s2 + s3)), target + c0)
            c0 += 8
        }
        for channel in c0..<channels {
            var sum: Float = 0
            for j in 0..<count { sum += a[j * sourceStep + channel] * b[j * channels + channel] }
            target[channel] += sum
        }
    }

    /// target[c] += a[c] · b[c]
    @inline(__always) static func multiplyAdd(_ target: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        var c0 = 0
        while c0 + 8 <= count {
            store(load(target + c0).addingProduct(load(a + c0), load(b + c0)), target + c0)
            c0 += 8
        }
        for channel in c0..<count { target[channel] += a[channel] * b[channel] }
    }
}

/// One image's depthwise correlation over a zero-padded copy: the loop shared by the forward
/// pass and (with the flipped filter) the stride-1 input gradient.
struct Correlation {
    let height, width, padding, stride, outHeight, outWidth, kernel, channels: Int
    /// Run CKernels' AVX-512 loop (`kaleido_depthwise_correlate_avx512`, the same sums).
    let avx512: Bool
    typealias Vector = SIMD8<Float>
    static let tile = 8

    var paddedWidth: Int { width + 2 * padding }

    /// Copies an (H, W, C) image into the middle of `padded`, zeroing the border.
    func pad(_ image: UnsafePointer<Float>, into padded: UnsafeMutablePointer<Float>) {
        let rowFloats = paddedWidth * channels
        let border = padding * channels
        for row in 0..<(height + 2 * padding) {
            let target = padded + row * rowFloats
            let ih = row - padding
            if ih < 0 || ih >= height {
                target.update(repeating: 0, count: rowFloats)
                continue
            }
            target.update(repeating: 0, count: border)
            (target + border).update(from: image + ih * width * channels, count: width * channels)
            (target + border + width * channels).update(repeating: 0, count: border)
        }
    }

    /// out[oh,ow,c] (= or +=) start[c] + Σ_{kh,kw} padded[oh·s+kh, ow·s+kw, c] · W[kh,kw,c]
    func correlate(_ padded: UnsafePointer<Float>, weight: UnsafePointer<Float>, start: UnsafePointer<Float>?,
                   accumulate: Bool, into output: UnsafeMutablePointer<Float>) {
        if avx512 {
            kaleido_depthwise_correlate_avx512(padded, weight, start, accumulate ? 1 : 0, output, Int32(height), Int32(width),
                                               Int32(padding), Int32(stride), Int32(outHeight), Int32(outWidth), Int32(kernel),
                                               Int32(channels))
            return
        }
        let c = channels, rowFloats = paddedWidth * c, step = stride * c
        for oh in 0..<outHeight {
            let outRow = output + oh * outWidth * c
            let top = padded + oh * stride * rowFloats
            // Kernel rows that land on padding multiply zeros: on the 2×2 and 4×4 maps of the
            // last ConvNeXt stages most of a 7×7 window does, so only the rows inside the
            // image are visited (skipping a zero product leaves every sum bit for bit the same).
            let rows = taps(outIndex: oh, size: height)
            var ow = 0
            while ow < outWidth {
                let pixels = min(Correlation.tile, outWidth - ow)
                var c0 = 0
                while c0 + 8 <= c {
                    let destination = outRow + ow * c + c0
                    let source = top + ow * step + c0
                    let filter = weight + c0
                    let bias = start.map { $0 + c0 }
                    switch pixels {
                    case 8:
                        tile8(destination, source, filter, rows: rows, start: bias, accumulate: accumulate, rowFloats: rowFloats, step: step)
                    case 4...7:
                        tile4(destination, source, filter, rows: rows, start: bias, accumulate: accumulate, rowFloats: rowFloats, step: step)
                        for p in 4..<pixels {
                            pixel(destination + p * c, source + p * step, filter, rows: rows, columns: taps(outIndex: ow + p, size: width),
                                  start: bias, accumulate: accumulate, rowFloats: rowFloats)
                        }
                    default:
                        for p in 0..<pixels {
                            pixel(destination + p * c, source + p * step, filter, rows: rows, columns: taps(outIndex: ow + p, size: width),
                                  start: bias, accumulate: accumulate, rowFloats: rowFloats)
                        }
                    }
                    c0 += 8
                }
                // Channels beyond the last multiple of 8.
                for channel in c0..<c {
                    for p in 0..<pixels {
                        let target = outRow + (ow + p) * c + channel
                        var sum = accumulate ? target.pointee : 0
                        sum += start?[channel] ?? 0
                        for kh in rows {
                            for kw in 0..<kernel {
                                sum += top[(ow + p) * step + kh * rowFloats + kw * c + channel] * weight[(kh * kernel + kw) * c + channel]
                            }
                        }
                        target.pointee = sum
                    }
                }
                ow += pixels
            }
        }
    }

    /// The kernel taps k of output index `outIndex` whose padded input index outIndex·s + k lies
    /// inside the image (size `size` plus `padding` on each side) rather than on the padding.
    @inline(__always) func taps(outIndex: Int, size: Int) -> Range<Int> {
        let first = outIndex * stride
        return max(0, padding - first)..<max(max(0, padding - first), min(kernel, size + padding - first))
    }

    @inline(__always) private func initial(_ destination: UnsafeMutablePointer<Float>, start: UnsafePointer<Float>?, accumulate: Bool) -> Vector {
        var value = start.map { load($0) } ?? Vector()
        if accumulate { value += load(destination) }
        return value
    }

    /// Eight adjacent output pixels × eight channels, all in registers.
    @inline(__always) private func tile8(_ destination: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>,
                                         _ filter: UnsafePointer<Float>, rows: Range<Int>, start: UnsafePointer<Float>?, accumulate: Bool,
                                         rowFloats: Int, step: Int) {
        let c = channels
        var a0 = initial(destination, start: start, accumulate: accumulate)
        var a1 = initial(destination + c, start: start, accumulate: accumulate)
        var a2 = initial(destination + 2 * c, start: start, accumulate: accumulate)
        var a3 = initial(destination + 3 * c, start: start, accumulate: accumulate)
        var a4 = initial(destination + 4 * c, start: start, accumulate: accumulate)
        var a5 = initial(destination + 5 * c, start: start, accumulate: accumulate)
        var a6 = initial(destination + 6 * c, start: start, accumulate: accumulate)
        var a7 = initial(destination + 7 * c, start: start, accumulate: accumulate)
        for kh in rows {
            let row = source + kh * rowFloats
            let taps = filter + kh * kernel * c
            for kw in 0..<kernel {
                let w = load(taps + kw * c)
                let p = row + kw * c
                a0 = a0.addingProduct(load(p), w)
                a1 = a1.addingProduct(load(p + step), w)
                a2 = a2.addingProduct(load(p + 2 * step), w)
                a3 = a3.addingProduct(load(p + 3 * step), w)
                a4 = a4.addingProduct(load(p + 4 * step), w)
                a5 = a5.addingProduct(load(p + 5 * step), w)
                a6 = a6.addingProduct(load(p + 6 * step), w)
                a7 = a7.addingProduct(load(p + 7 * step), w)
            }
        }
        store(a0, destination); store(a1, destination + c); store(a2, destination + 2 * c); store(a3, destination + 3 * c)
        store(a4, destination + 4 * c); store(a5, destination + 5 * c); store(a6, destination + 6 * c); store(a7, destination + 7 * c)
    }

    /// Four adjacent output pixels × eight channels (narrow images and row ends).
    @inline(__always) private func tile4(_ destination: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>,
                                         _ filter: UnsafePointer<Float>, rows: Range<Int>, start: UnsafePointer<Float>?, accumulate: Bool,
                                         rowFloats: Int, step: Int) {
        let c = channels
        var a0 = initial(destination, start: start, accumulate: accumulate)
        var a1 = initial(destination + c, start: start, accumulate: accumulate)
        var a2 = initial(destination + 2 * c, start: start, accumulate: accumulate)
        var a3 = initial(destination + 3 * c, start: start, accumulate: accumulate)
        for kh in rows {
            let row = source + kh * rowFloats
            let taps = filter + kh * kernel * c
            for kw in 0..<kernel {
                let w = load(taps + kw * c)
                let p = row + kw * c
                a0 = a0.addingProduct(load(p), w)
                a1 = a1.addingProduct(load(p + step), w)
                a2 = a2.addingProduct(load(p + 2 * step), w)
                a3 = a3.addingProduct(load(p + 3 * step), w)
            }
        }
        store(a0, destination); store(a1, destination + c); store(a2, destination + 2 * c); store(a3, destination + 3 * c)
    }

    /// One output pixel × eight channels over the taps inside the image; even and odd kernel rows
    /// go to separate sums so two FMA chains are in flight.
    @inline(__always) private func pixel(_ destination: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>,
                                         _ filter: UnsafePointer<Float>, rows: Range<Int>, columns: Range<Int>,
                                         start: UnsafePointer<Float>?, accumulate: Bool, rowFloats: Int) {
        let c = channels
        var even = initial(destination, start: start, accumulate: accumulate), odd = Vector()
        for kh in rows {
            for kw in columns {
                let product = (load(source + kh * rowFloats + kw * c), load(filter + (kh * kernel + kw) * c))
                if kh & 1 == 0 { even = even.addingProduct(product.0, product.1) } else { odd = odd.addingProduct(product.0, product.1) }
            }
        }
        store(even + odd, destination)
    }

    @inline(__always) private func load(_ p: UnsafePointer<Float>) -> Vector { UnsafeRawPointer(p).loadUnaligned(as: Vector.self) }
    @inline(__always) private func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }
}
