import CKernels

/// Geometry of a 2-D convolution over channels-last images (groups = 1).
///
/// OH = (H + 2·pad − K) / stride + 1, and likewise OW. The im2col matrix of one image has
/// OH·OW rows and K·K·IC columns; images are processed in chunks so the workspace stays bounded
/// and, more importantly, stays in cache between im2col writing it and sgemm reading it.
public struct Conv2DShape: Equatable, Sendable {
    public let batch, height, width, inChannels, outChannels: Int
    public let kernel, stride, padding: Int
    public let outHeight, outWidth: Int
    /// Images whose columns fit the workspace at once.
    public let imagesPerChunk: Int
    /// The instruction set of the direct 3×3 kernels (see `Conv2DDirect`) that the forward
    /// pass and both gradients run with rather than im2col + sgemm, where they apply; nil for
    /// im2col everywhere.
    public let direct: Conv2DDirect.InstructionSet?
    /// Whether the forward pass and both gradients run as Winograd F(2×2, 3×3) products
    /// (`Conv2DWinograd`) instead of the direct kernel.
    public let winograd: Bool

    /// - Parameter workspaceCap: floats of im2col columns held at once. The default (2 MB) was
    ///   measured with `kaleido bench kernels` on ResNet-18 CIFAR shapes, 2 threads: conv
    ///   fwd+bwd reached 48% of sgemm with 32 MB chunks, 80% with 4 MB and 84% with 2 MB.
    public init(batch: Int, height: Int, width: Int, inChannels: Int, outChannels: Int,
                kernel: Int, stride: Int = 1, padding: Int = 0, workspaceCap: Int = 1 << 19,
                direct: Conv2DDirect.InstructionSet? = Conv2DDirect.best,
                winograd allowed: Bool = Conv2DDirect.path.allowsWinograd) {
        precondition(kernel >= 1 && stride >= 1 && padding >= 0, "bad convolution geometry k\(kernel) s\(stride) p\(padding)")
        precondition(height + 2 * padding >= kernel && width + 2 * padding >= kernel,
                     "kernel \(kernel) larger than padded input \(height)×\(width)")
        self.batch = batch; self.height = height; self.width = width
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        outHeight = (height + 2 * padding - kernel) / stride + 1
        outWidth = (width + 2 * padding - kernel) / stride + 1
        let columnsPerImage = outHeight * outWidth * kernel * kernel * inChannels
        imagesPerChunk = max(1, min(batch, workspaceCap / max(1, columnsPerImage)))
        precondition(direct?.isSupported ?? true, "this CPU does not run the direct convolution's \(direct!) kernels")
        let set = Conv2DShape.panelFilling(direct, inChannels: inChannels, outChannels: outChannels)
        self.direct = set
        winograd = allowed && Conv2DWinograd.pays(height: height, width: width, inChannels: inChannels,
                                                  outChannels: outChannels, kernel: kernel, stride: stride,
                                                  padding: padding, direct: set)
    }

    /// AVX-512 for a layer whose channels fill its 32-channel panels; AVX2 where they fill only
    /// AVX2's 16 (a narrow network's first stage), which then runs the direct kernel or
    /// Winograd's products instead of im2col + sgemm. On the Zen 4 EPYC the debug run's
    /// ResNet-18 of width 16 trained at 171–186 images/s with the AVX-512 kernels and 190–239
    /// capped at AVX2 before this (BENCHMARKS.md, 2026-12-07).
    static func panelFilling(_ direct: Conv2DDirect.InstructionSet?, inChannels: Int,
                             outChannels: Int) -> Conv2DDirect.InstructionSet? {
        guard direct == .avx512 else { return direct }
        func fills(_ set: Conv2DDirect.InstructionSet) -> Bool {
            inChannels % set.panelChannels == 0 && outChannels % set.panelChannels == 0
        }
        return !fills(.avx512) && fills(.avx2) ? .avx2 : .avx512
    }

    /// A 3×3, stride-1, padding-1 convolution whose output channels fill the direct kernel's
    /// panels (32 channels; 16 with AVX2) runs its forward pass directly.
    public var forwardIsDirect: Bool { fillsPanels(outChannels) }

    /// So does its weight gradient, summed pixel by pixel onto packed panels.
    public var weightGradientIsDirect: Bool { forwardIsDirect }

    /// Its input gradient is the same convolution with the channels swapped.
    public var inputGradientIsDirect: Bool { fillsPanels(inChannels) }

    private func fillsPanels(_ channels: Int) -> Bool {
        guard let direct, kernel == 3, stride == 1, padding == 1 else { return false }
        return channels % direct.panelChannels == 0
    }

    /// The weights (or the weight gradient) packed for the direct kernel, when a pass uses it;
    /// transformed for Winograd's products (16 values per kernel instead of 9), when they run.
    public var packedWeightFloats: Int {
        if winograd { return Int(kaleido_winograd_packed_weight_floats(Int32(inChannels), Int32(outChannels))) }
        return forwardIsDirect || inputGradientIsDirect || weightGradientIsDirect ? outChannels * patchSize : 0
    }

    /// Each lane's scratch for Winograd's blocks (their transformed input and products).
    public var winogradScratchFloats: Int {
        guard winograd, let direct else { return 0 }
        // The forward pass and the weight gradient transform IC channels, the input gradient
        // OC: room for the larger.
        return kaleido_winograd_scratch_floats(direct.rawValue, Int32(max(inChannels, outChannels)))
    }

    /// Rows of the im2col matrix (output pixels) and its width (K·K·IC).
    public var outputPixels: Int { batch * outHeight * outWidth }
    public var patchSize: Int { kernel * kernel * inChannels }

    /// A 1×1 stride-1 unpadded convolution is a plain matrix product on the input itself.
    public var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }

    /// Floats of im2col columns of one chunk: none when every pass is direct.
    public var chunkFloats: Int {
        isPointwise || (forwardIsDirect && inputGradientIsDirect && weightGradientIsDirect)
            ? 0 : imagesPerChunk * outHeight * outWidth * patchSize
    }

    /// A second weight gradient, for the second half of the chunks (see `Conv2D.backward`).
    public var weightScratchFloats: Int {
        isPointwise || chunks < 2 || weightGradientIsDirect ? 0 : outChannels * patchSize
    }

    /// Floats of scratch memory `forward` and `backward` need with one lane.
    public var workspaceFloats: Int { workspaceFloats(lanes: 1) }

    /// Scratch for `lanes` chunks at once (`workspaceLanes` of `forward` and `backward`): the
    /// lanes' columns, then the second weight gradient, then the packed weights, then the lanes'
    /// Winograd scratch.
    public func workspaceFloats(lanes: Int) -> Int {
        chunkFloats * lanes + weightScratchFloats + packedWeightFloats + winogradScratchFloats * lanes
    }

    /// Where the packed weights start in a workspace of `workspaceFloats(lanes:)`.
    func packedWeightOffset(lanes: Int) -> Int { chunkFloats * lanes + weightScratchFloats }

    /// Where the Winograd scratch of lane 0 starts in a workspace of `workspaceFloats(lanes:)`.
    func winogradScratchOffset(lanes: Int) -> Int { packedWeightOffset(lanes: lanes) + packedWeightFloats }

    /// Chunks of `imagesPerChunk` images covering the batch.
    public var chunks: Int { (batch + imagesPerChunk - 1) / imagesPerChunk }

    /// The first image of `chunk` and how many it holds (the last chunk may be short).
    public func images(inChunk chunk: Int) -> (first: Int, count: Int) {
        let first = chunk * imagesPerChunk
        return (first, min(imagesPerChunk, batch - first))
    }

    /// Multiply-adds ×2 of the forward pass.
    public var forwardFLOPs: Double { 2 * Double(outputPixels) * Double(patchSize) * Double(outChannels) }
}

/// 2-D convolution, channels-last, as im2col + sgemm; 3×3 same-size convolutions whose channels
/// fill the direct kernels' panels go to `Conv2DDirect` instead where the CPU has AVX-512 or AVX2,
/// and 1×1 stride-1 convolutions are linear layers over the pixels (`Linear`, which reads the
/// activations in place where `BLAS.prefersPackedProduct`).
///
/// out[n,oh,ow,oc] = b[oc] + Σ_{kh,kw,ic} in[n, oh·s−p+kh, ow·s−p+kw, ic] · W[oc,kh,kw,ic]
/// in is (N, H, W, IC), weight is (OC, K, K, IC), bias (OC) or nil, out is (N, OH, OW, OC).
/// With col the (N·OH·OW, K·K·IC) patch matrix: out = col · Wᵀ.
///
/// `workspaceLanes` is how many chunk-sized slices `workspace` holds. With more than one (and a
/// pool that `splitsMatrixProducts`), the forward pass and the input gradient give whole chunks
/// to the pool's threads, each with its own slice: one im2col and one single-threaded product
/// per chunk, rather than every chunk's im2col and product cut in pieces across the threads.
/// The weights are then packed once per chunk instead of once per piece, and a step starts a
/// tenth as many parallel loops. Each output element is still one product over the whole K in
/// OpenBLAS's order, so the bits do not change.
public enum Conv2D {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        shape s: Conv2DShape, workspace: UnsafeMutablePointer<Float>?, workspaceLanes: Int = 1, pool: ComputePool
    ) {
        if s.isPointwise {
            // A 1×1 stride-1 convolution is a linear layer over the pixels: the input is its
            // (N·H·W, IC) matrix as it lies, the (OC, 1, 1, IC) weight a linear layer's (OC, IC).
            Linear.forward(output: output, input: input, weight: weight, bias: bias, rows: s.outputPixels,
                           inChannels: s.inChannels, outChannels: s.outChannels, pool: pool)
            return
        }
        // With a bias, out starts as the bias rows and the products add onto it (beta 1).
        if let bias { Bias.broadcast(output: output, bias: bias, rows: s.outputPixels, channels: s.outChannels, pool: pool) }
        if s.winograd, let set = s.direct, let workspace {
            Conv2DWinograd.convolve(output: output, accumulate: bias != nil, input: input, weight: weight,
                                    forInputGradient: false, shape: s, workspace: workspace, lanes: workspaceLanes,
                                    with: set, pool: pool)
            return
        }
        if s.forwardIsDirect, let set = s.direct, let workspace {
            let packed = workspace + s.packedWeightOffset(lanes: workspaceLanes)
            Conv2DDirect.packWeights(weight, shape: s, forInputGradient: false, into: packed, with: set, pool: pool)
            Conv2DDirect.run(output: output, accumulate: bias != nil, input: input, batch: s.batch, height: s.height,
                             width: s.width, inChannels: s.inChannels, packedWeight: packed, outChannels: s.outChannels,
                             with: set, pool: pool)
            return
        }
        forEachChunk(s, lanes: workspaceLanes, pool: pool) { firstImage, images, lane, chunkPool in
            let rows = images * s.outHeight * s.outWidth
            let columns = patches(s, input: input, firstImage: firstImage, images: images,
                                  workspace: workspace.map { $0 + lane * s.chunkFloats }, pool: chunkPool)
            BLAS.sgemm(transposeA: false, transposeB: true, m: rows, n: s.outChannels, k: s.patchSize,
                       a: columns, lda: s.patchSize, b: weight, ldb: s.patchSize,
                       beta: bias == nil ? 0 : 1, c: output + firstImage * s.outHeight * s.outWidth * s.outChannels,
                       ldc: s.outChannels, pool: chunkPool)
        }
    }

    /// dW   += doutᵀ · col          (OC, M)·(M, K·K·IC)
    /// dcol  = dout · W             (M, OC)·(OC, K·K·IC), then col2im gathers it into din
    /// db   += Σ_pixels dout
    /// din is written whole (not added to), so its buffer needs no zeroing; dW and db accumulate.
    /// The columns are recomputed from the input rather than cached: that costs one pass over
    /// memory and saves K·K copies of every activation.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        shape s: Conv2DShape, workspace: UnsafeMutablePointer<Float>?, workspaceLanes: Int = 1, pool: ComputePool
    ) {
        if s.isPointwise {
            Linear.backward(dInput: dInput, dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: input, weight: weight,
                            rows: s.outputPixels, inChannels: s.inChannels, outChannels: s.outChannels, pool: pool)
            return
        }
        if let dWeight {
            addWeightGradient(dWeight, dOutput: dOutput, input: input, shape: s, workspace: workspace,
                              workspaceLanes: workspaceLanes, pool: pool)
        }
        if let dInput, s.winograd, let set = s.direct, let workspace {
            // din = dout ⊛ W flipped and transposed, written whole.
            Conv2DWinograd.convolve(output: dInput, accumulate: false, input: dOutput, weight: weight,
                                    forInputGradient: true, shape: s, workspace: workspace, lanes: workspaceLanes,
                                    with: set, pool: pool)
        } else if let dInput, s.inputGradientIsDirect, let set = s.direct, let workspace {
            // din = dout ⊛ W flipped and transposed, written whole.
            let packed = workspace + s.packedWeightOffset(lanes: workspaceLanes)
            Conv2DDirect.packWeights(weight, shape: s, forInputGradient: true, into: packed, with: set, pool: pool)
            Conv2DDirect.run(output: dInput, accumulate: false, input: dOutput, batch: s.batch, height: s.height,
                             width: s.width, inChannels: s.outChannels, packedWeight: packed, outChannels: s.inChannels,
                             with: set, pool: pool)
        } else if let dInput {
            // The input gradient of a chunk lands on that chunk's images only.
            forEachChunk(s, lanes: workspaceLanes, pool: pool) { firstImage, images, lane, chunkPool in
                let rows = images * s.outHeight * s.outWidth
                let chunkOutput = dOutput + firstImage * s.outHeight * s.outWidth * s.outChannels
                let chunkInput = dInput + firstImage * s.height * s.width * s.inChannels
                let dColumns = workspace! + lane * s.chunkFloats
                BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: s.patchSize, k: s.outChannels,
                           a: chunkOutput, lda: s.outChannels, b: weight, ldb: s.patchSize,
                           beta: 0, c: dColumns, ldc: s.patchSize, pool: chunkPool)
                gatherColumnsIntoImage(s, dColumns: dColumns, dInput: chunkInput, images: images, pool: chunkPool)
            }
        }
        if let dBias {
            Bias.backward(dBias: dBias, dOutput: dOutput, rows: s.outputPixels, channels: s.outChannels, pool: pool)
        }
    }

    /// dW += Σ_chunks doutᵀ · col. The sum's order must not depend on the thread count, so the
    /// chunks form two fixed halves: the first is summed into dW, the second into the
    /// workspace's second weight gradient, which is then added to dW. With two lanes the halves
    /// run at once, one thread each (whole chunks, single-threaded products); otherwise one after
    /// the other, every product split across the pool.
    private static func addWeightGradient(_ dWeight: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                          input: UnsafePointer<Float>, shape s: Conv2DShape,
                                          workspace: UnsafeMutablePointer<Float>?, workspaceLanes: Int, pool: ComputePool) {
        if s.winograd, let set = s.direct, let workspace {
            Conv2DWinograd.addWeightGradient(dWeight, dOutput: dOutput, input: input, shape: s, workspace: workspace,
                                             lanes: workspaceLanes, with: set, pool: pool)
            return
        }
        if s.weightGradientIsDirect, let set = s.direct, let workspace {
            Conv2DDirect.addWeightGradient(dWeight, dOutput: dOutput, input: input, shape: s,
                                           packed: workspace + s.packedWeightOffset(lanes: workspaceLanes), with: set,
                                           pool: pool)
            return
        }
        func addChunks(_ chunks: Range<Int>, into sum: UnsafeMutablePointer<Float>, columns: UnsafeMutablePointer<Float>?,
                       pool: ComputePool) {
            for chunk in chunks {
                let (firstImage, images) = s.images(inChunk: chunk)
                let patchRows = patches(s, input: input, firstImage: firstImage, images: images, workspace: columns, pool: pool)
                let rows = images * s.outHeight * s.outWidth
                let dOutputRows = dOutput + firstImage * s.outHeight * s.outWidth * s.outChannels
                if BLAS.prefersOuterProductTiles(m: s.outChannels, n: s.patchSize, k: rows) {
                    BLAS.outerProductTiles(m: s.outChannels, n: s.patchSize, k: rows, a: dOutputRows, lda: s.outChannels,
                                           b: patchRows, ldb: s.patchSize, c: sum, ldc: s.patchSize, pool: pool)
                } else {
                    BLAS.sgemm(transposeA: true, transposeB: false, m: s.outChannels, n: s.patchSize, k: rows,
                               a: dOutputRows, lda: s.outChannels, b: patchRows, ldb: s.patchSize, beta: 1, c: sum,
                               ldc: s.patchSize, pool: pool)
                }
            }
        }
        guard s.weightScratchFloats > 0, let workspace else {
            addChunks(0..<s.chunks, into: dWeight, columns: workspace, pool: pool)
            return
        }
        let secondHalf = workspace + workspaceLanes * s.chunkFloats
        secondHalf.update(repeating: 0, count: s.weightScratchFloats)
        let halves = [0..<(s.chunks / 2), (s.chunks / 2)..<s.chunks]
        if workspaceLanes > 1, pool.threads > 1, pool.splitsMatrixProducts {
            pool.forEachPart(2, parts: 2) { half, _ in
                addChunks(halves[half], into: half == 0 ? dWeight : secondHalf, columns: workspace + half * s.chunkFloats,
                          pool: .serial)
            }
        } else {
            addChunks(halves[0], into: dWeight, columns: workspace, pool: pool)
            addChunks(halves[1], into: secondHalf, columns: workspace, pool: pool)
        }
        Add.backward(dA: dWeight, dB: nil, dOutput: secondHalf, count: s.weightScratchFloats, pool: pool)
    }

    /// Calls `body` for every chunk: in order on this thread with `pool` when `lanes` is 1 (or
    /// the pool does not split products), else on up to `lanes` threads at once, each passing its
    /// lane (its workspace slice) and a serial pool.
    private static func forEachChunk(_ s: Conv2DShape, lanes: Int, pool: ComputePool,
                                     _ body: (_ firstImage: Int, _ images: Int, _ lane: Int, _ pool: ComputePool) -> Void) {
        func run(_ chunk: Int, lane: Int, pool: ComputePool) {
            let (first, images) = s.images(inChunk: chunk)
            body(first, images, lane, pool)
        }
        let parallel = min(lanes, pool.threads, s.chunks)
        guard parallel > 1, pool.splitsMatrixProducts else {
            for chunk in 0..<s.chunks { run(chunk, lane: 0, pool: pool) }
            return
        }
        pool.forEachPiece(s.chunks, lanes: parallel) { lane, chunk in run(chunk, lane: lane, pool: .serial) }
    }

    /// The im2col matrix of images [firstImage, firstImage + images): row (n, oh, ow) holds the
    /// K·K·IC input values under the kernel, zeros where it hangs over the padding.
    private static func patches(_ s: Conv2DShape, input: UnsafePointer<Float>, firstImage: Int, images: Int,
                                workspace: UnsafeMutablePointer<Float>?, pool: ComputePool) -> UnsafePointer<Float> {
        let image = input + firstImage * s.height * s.width * s.inChannels
        guard let columns = workspace else { preconditionFailure("Conv2D \(s) needs a workspace of \(s.workspaceFloats) floats") }
        let ic = s.inChannels
        let rowsPerImage = s.outHeight * s.outWidth
        pool.forEachRange(images * s.outHeight, minimumPerThread: 4) { range in
            for imageRow in range {
                let n = imageRow / s.outHeight, oh = imageRow % s.outHeight
                let source = image + n * s.height * s.width * ic
                for ow in 0..<s.outWidth {
                    var destination = columns + ((n * rowsPerImage) + oh * s.outWidth + ow) * s.patchSize
                    // A row of the kernel is K·IC contiguous floats of the input, except where it
                    // leaves the image: columns kw ∈ [inside.lower, inside.upper) are inside it,
                    // copied in one piece (one call per kernel row, not per tap: with 16–64
                    // channels the calls cost more than the copies).
                    let firstColumn = ow * s.stride - s.padding
                    let firstInside = max(0, -firstColumn)
                    let inside = firstInside..<max(firstInside, min(s.kernel, s.width - firstColumn))
                    for kh in 0..<s.kernel {
                        let ih = oh * s.stride - s.padding + kh
                        if ih < 0 || ih >= s.height || inside.isEmpty {
                            destination.update(repeating: 0, count: s.kernel * ic)
                        } else {
                            if inside.lowerBound > 0 { destination.update(repeating: 0, count: inside.lowerBound * ic) }
                            (destination + inside.lowerBound * ic).update(
                                from: source + (ih * s.width + firstColumn + inside.lowerBound) * ic, count: inside.count * ic)
                            if inside.upperBound < s.kernel {
                                (destination + inside.upperBound * ic).update(repeating: 0, count: (s.kernel - inside.upperBound) * ic)
                            }
                        }
                        destination += s.kernel * ic
                    }
                }
            }
        }
        return UnsafePointer(columns)
    }

    /// col2im as a gather: each input pixel is the sum of the column entries that read it (din is
    /// written, not added to, so the caller need not zero it). Written this way round, threads own
    /// disjoint input rows and the summation order is fixed, so the result is the same for any
    /// thread count.
    private static func gatherColumnsIntoImage(_ s: Conv2DShape, dColumns: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>,
                                          images: Int, pool: ComputePool) {
        let ic = s.inChannels
        let rowsPerImage = s.outHeight * s.outWidth
        // The taps that read input row ih (column iw): (kernel row, output row) pairs, kernel row
        // ascending — worked out once here instead of with divisions for every pixel.
        func taps(_ inputIndex: Int, outputs: Int) -> [(tap: Int, output: Int)] {
            (0..<s.kernel).compactMap { k in
                let t = inputIndex + s.padding - k
                return t >= 0 && t % s.stride == 0 && t / s.stride < outputs ? (k, t / s.stride) : nil
            }
        }
        let rowTaps = (0..<s.height).map { taps($0, outputs: s.outHeight) }
        let columnTaps = (0..<s.width).map { taps($0, outputs: s.outWidth) }
        pool.forEachRange(images * s.height, minimumPerThread: 4) { range in
            for imageRow in range {
                let n = imageRow / s.height, ih = imageRow % s.height
                for iw in 0..<s.width {
                    let target = dInput + ((n * s.height + ih) * s.width + iw) * ic
                    // 0 + the first tap, then the others in order: the sum a zeroed pixel would get.
                    var first = true
                    for (kh, oh) in rowTaps[ih] {
                        for (kw, ow) in columnTaps[iw] {
                            let source = dColumns + (n * rowsPerImage + oh * s.outWidth + ow) * s.patchSize + (kh * s.kernel + kw) * ic
                            if first {
                                for c in 0..<ic { target[c] = Float(0) + source[c] }
                                first = false
                            } else {
                                for c in 0..<ic { target[c] += source[c] }
                            }
                        }
                    }
                    if first { target.update(repeating: 0, count: ic) }
                }
            }
        }
    }
}
