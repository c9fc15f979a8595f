/// Geometry of a depthwise 2-D convolution over channels-last images: every channel is
/// convolved with its own K×K filter. OH = (H + 2·pad − K) / stride + 1.
public struct DepthwiseConv2DShape: Equatable, Sendable {
    public let batch, height, width, channels, kernel, stride, padding: Int
    public let outHeight, outWidth: Int

    /// The weight gradient is summed in this many fixed blocks of output rows, each into its
    /// own partial, then the partials are added in order: parallel and still deterministic.
    public static let weightGradientBlocks = 16

    public init(batch: Int, height: Int, width: Int, channels: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        precondition(kernel >= 1 && stride >= 1 && padding >= 0, "bad depthwise geometry k\(kernel) s\(stride) p\(padding)")
        self.batch = batch; self.height = height; self.width = width; self.channels = channels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        outHeight = (height + 2 * padding - kernel) / stride + 1
        outWidth = (width + 2 * padding - kernel) / stride + 1
    }

    var outputRows: Int { batch * outHeight }
    var weightBlocks: Int { min(outputRows, DepthwiseConv2DShape.weightGradientBlocks) }

    /// Floats of scratch `backward` needs for the weight-gradient partials.
    public var workspaceFloats: Int { weightBlocks * kernel * kernel * channels }

    public var forwardFLOPs: Double { 2 * Double(batch * outHeight * outWidth * channels * kernel * kernel) }

    /// Output columns ow whose input column ow·s − p + kw lies inside the image.
    @inline(__always) func validColumns(kw: Int) -> Range<Int> {
        let low = max(0, (padding - kw + stride - 1) / stride)
        let high = min(outWidth, (width - 1 + padding - kw) / stride + 1)
        return low..<max(low, high)
    }
}

/// Depthwise convolution, channels-last (ConvNeXt's 7×7, MobileNet-style 3×3).
///
/// out[n,oh,ow,c] = b[c] + Σ_{kh,kw} in[n, oh·s−p+kh, ow·s−p+kw, c] · W[kh,kw,c]
/// in is (N, H, W, C), weight is (K, K, C), bias (C) or nil, out is (N, OH, OW, C).
/// Channels are contiguous, so every inner loop is 8-wide SIMD over c. The forward keeps a
/// 4-pixel × 8-channel tile of outputs in registers, so each weight load feeds four FMAs.
public enum DepthwiseConv2D {
    typealias Vector = SIMD8<Float>
    static let tile = 4

    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        shape s: DepthwiseConv2DShape, pool: ComputePool
    ) {
        let c = s.channels
        // First and last output columns whose whole K-wide window is inside the image.
        let interiorStart = (s.padding + s.stride - 1) / s.stride
        let interiorEnd = (s.width - s.kernel + s.padding) / s.stride + 1
        pool.forEachRange(s.outputRows, minimumPerThread: 2) { rows in
            for row in rows {
                let n = row / s.outHeight, oh = row % s.outHeight
                let outRow = output + row * s.outWidth * c
                let kernelRows = validKernelRows(s, outputRow: oh)
                let imageBase = input + n * s.height * s.width * c
                var ow = 0
                while ow < s.outWidth {
                    if ow >= interiorStart && ow + tile <= interiorEnd {
                        forwardInteriorTile(s, outRow: outRow, imageBase: imageBase, oh: oh, ow: ow,
                                            kernelRows: kernelRows, weight: weight, bias: bias)
                        ow += tile
                    } else {
                        forwardPixel(s, outRow: outRow, imageBase: imageBase, oh: oh, ow: ow,
                                     kernelRows: kernelRows, weight: weight, bias: bias)
                        ow += 1
                    }
                }
            }
        }
    }

    /// Rows kh of the kernel that land inside the image for output row oh.
    @inline(__always) static func validKernelRows(_ s: DepthwiseConv2DShape, outputRow oh: Int) -> Range<Int> {
        let top = oh * s.stride - s.padding
        return max(0, -top)..<min(s.kernel, s.height - top)
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
    }

    @inline(__always) static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }

    /// Four adjacent output pixels whose windows are entirely inside the image.
    @inline(__always) static func forwardInteriorTile(
        _ s: DepthwiseConv2DShape, outRow: UnsafeMutablePointer<Float>, imageBase: UnsafePointer<Float>,
        oh: Int, ow: Int, kernelRows: Range<Int>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?
    ) {
        let c = s.channels, step = s.stride * c
        let top = oh * s.stride - s.padding, left = ow * s.stride - s.padding
        var c0 = 0
        while c0 + 8 <= c {
            let start = bias.map { load($0 + c0) } ?? Vector()
            var a0 = start, a1 = start, a2 = start, a3 = start
            for kh in kernelRows {
                let source = imageBase + ((top + kh) * s.width + left) * c + c0
                let filter = weight + kh * s.kernel * c + c0
                for kw in 0..<s.kernel {
                    let w = load(filter + kw * c)
                    let p = source + kw * c
                    a0 = a0.addingProduct(load(p), w)
                    a1 = a1.addingProduct(load(p + step), w)
                    a2 = a2.addingProduct(load(p + 2 * step), w)
                    a3 = a3.addingProduct(load(p + 3 * step), w)
                }
            }
            let destination = outRow + ow * c + c0
            store(a0, destination); store(a1, destination + c); store(a2, destination + 2 * c); store(a3, destination + 3 * c)
            c0 += 8
        }
        for t in 0..<tile where c0 < c {
            forwardChannels(s, destination: outRow + (ow + t) * c, imageBase: imageBase, top: top,
                            left: left + t * s.stride, kernelRows: kernelRows, kernelColumns: 0..<s.kernel,
                            weight: weight, bias: bias, channels: c0..<c)
        }
    }

    /// One output pixel anywhere, with the kernel clipped to the image.
    @inline(__always) static func forwardPixel(
        _ s: DepthwiseConv2DShape, outRow: UnsafeMutablePointer<Float>, imageBase: UnsafePointer<Float>,
        oh: Int, ow: Int, kernelRows: Range<Int>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?
    ) {
        let left = ow * s.stride - s.padding
        let kernelColumns = max(0, -left)..<min(s.kernel, s.width - left)
        forwardChannels(s, destination: outRow + ow * s.channels, imageBase: imageBase, top: oh * s.stride - s.padding,
                        left: left, kernelRows: kernelRows, kernelColumns: kernelColumns,
                        weight: weight, bias: bias, channels: 0..<s.channels)
    }

    @inline(__always) static func forwardChannels(
        _ s: DepthwiseConv2DShape, destination: UnsafeMutablePointer<Float>, imageBase: UnsafePointer<Float>,
        top: Int, left: Int, kernelRows: Range<Int>, kernelColumns: Range<Int>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, channels: Range<Int>
    ) {
        let c = s.channels
        var c0 = channels.lowerBound
        while c0 + 8 <= channels.upperBound {
            var sum = bias.map { load($0 + c0) } ?? Vector()
            for kh in kernelRows {
                for kw in kernelColumns {
                    sum = sum.addingProduct(load(imageBase + ((top + kh) * s.width + left + kw) * c + c0),
                                            load(weight + (kh * s.kernel + kw) * c + c0))
                }
            }
            store(sum, destination + c0)
            c0 += 8
        }
        for channel in c0..<channels.upperBound {
            var sum = bias?[channel] ?? 0
            for kh in kernelRows {
                for kw in kernelColumns {
                    sum += imageBase[((top + kh) * s.width + left + kw) * c + channel] * weight[(kh * s.kernel + kw) * c + channel]
                }
            }
            destination[channel] = sum
        }
    }

    /// din[n,ih,iw,c] += Σ dout[n,oh,ow,c] · W[kh,kw,c]   over ih = oh·s−p+kh, iw = ow·s−p+kw
    /// dW[kh,kw,c]    += Σ_{n,oh,ow} in[n,ih,iw,c] · dout[n,oh,ow,c]
    /// db[c]          += Σ_{n,oh,ow} dout[n,oh,ow,c]
    /// The input gradient is gathered per input row (threads own rows); the weight gradient is
    /// summed per fixed block of output rows into `workspace`, then the blocks are added in order.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        shape s: DepthwiseConv2DShape, workspace: UnsafeMutablePointer<Float>?, pool: ComputePool
    ) {
        if let dInput { inputGradient(s, dInput: dInput, dOutput: dOutput, weight: weight, pool: pool) }
        if let dWeight {
            guard let workspace else { preconditionFailure("DepthwiseConv2D backward needs \(s.workspaceFloats) floats of workspace") }
            weightGradient(s, dWeight: dWeight, dOutput: dOutput, input: input, partials: workspace, pool: pool)
        }
        if let dBias {
            Bias.backward(dBias: dBias, dOutput: dOutput, rows: s.batch * s.outHeight * s.outWidth, channels: s.channels, pool: pool)
        }
    }

    static func inputGradient(_ s: DepthwiseConv2DShape, dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>, pool: ComputePool) {
        let c = s.channels
        pool.forEachRange(s.batch * s.height, minimumPerThread: 2) { rows in
            for row in rows {
                let n = row / s.height, ih = row % s.height
                let target = dInput + row * s.width * c
                for kh in 0..<s.kernel {
                    let th = ih + s.padding - kh
                    guard th >= 0, th % s.stride == 0, th / s.stride < s.outHeight else { continue }
                    let gradientRow = dOutput + (n * s.outHeight + th / s.stride) * s.outWidth * c
                    for kw in 0..<s.kernel {
                        let filter = weight + (kh * s.kernel + kw) * c
                        for ow in s.validColumns(kw: kw) {
                            let iw = ow * s.stride - s.padding + kw
                            multiplyAdd(target + iw * c, gradientRow + ow * c, filter, count: c)
                        }
                    }
                }
            }
        }
    }

    static func weightGradient(_ s: DepthwiseConv2DShape, dWeight: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                               input: UnsafePointer<Float>, partials: UnsafeMutablePointer<Float>, pool: ComputePool) {
        let c = s.channels, filterSize = s.kernel * s.kernel * c
        let blocks = s.weightBlocks
        pool.forEachRange(blocks) { blockRange in
            for block in blockRange {
                let partial = partials + block * filterSize
                partial.update(repeating: 0, count: filterSize)
                let rowStart = s.outputRows * block / blocks, rowEnd = s.outputRows * (block + 1) / blocks
                for row in rowStart..<rowEnd {
                    let n = row / s.outHeight, oh = row % s.outHeight
                    let gradientRow = dOutput + row * s.outWidth * c
                    let top = oh * s.stride - s.padding
                    for kh in validKernelRows(s, outputRow: oh) {
                        let inputRow = input + (n * s.height + top + kh) * s.width * c
                        for kw in 0..<s.kernel {
                            let columns = s.validColumns(kw: kw)
                            let sourceStart = inputRow + (columns.lowerBound * s.stride - s.padding + kw) * c
                            dotAlongRow(partial + (kh * s.kernel + kw) * c, sourceStart, gradientRow + columns.lowerBound * c,
                                        count: columns.count, sourceStep: s.stride * c, channels: c)
                        }
                    }
                }
            }
        }
        for block in 0..<blocks {
            let partial = partials + block * filterSize
            for i in 0..<filterSize { dWeight[i] += partial[i] }
        }
    }

    /// target[c] += Σ_j a[j·aStep + c] · b[j·C + c] for c < channels, accumulating in registers.
    @inline(__always) static func dotAlongRow(_ target: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                              count: Int, sourceStep: Int, channels: Int) {
        var c0 = 0
        while c0 + 8 <= channels {
            var sum = Vector()
            for j in 0..<count { sum = sum.addingProduct(load(a + j * sourceStep + c0), load(b + j * channels + c0)) }
            store(load(target + c0) + sum, target + c0)
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
