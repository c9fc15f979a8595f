import Testing
@testable import KaleidoTensor

@Suite struct Conv2DTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let batch, height, width, inChannels, outChannels, kernel, stride, padding: Int
        var testDescription: String { "n\(batch) \(height)×\(width)×\(inChannels)→\(outChannels) k\(kernel) s\(stride) p\(padding)" }
        var workspaceCap = 8 << 20
        var direct = Conv2DDirect.best
        var winograd = true
        var shape: Conv2DShape {
            Conv2DShape(batch: batch, height: height, width: width, inChannels: inChannels, outChannels: outChannels,
                        kernel: kernel, stride: stride, padding: padding, workspaceCap: workspaceCap,
                        direct: direct, winograd: winograd)
        }
    }

    static let cases = [
        Case(batch: 2, height: 5, width: 4, inChannels: 3, outChannels: 4, kernel: 3, stride: 1, padding: 1),
        Case(batch: 1, height: 7, width: 7, inChannels: 2, outChannels: 3, kernel: 3, stride: 2, padding: 1),
        Case(batch: 2, height: 6, width: 5, inChannels: 3, outChannels: 2, kernel: 1, stride: 1, padding: 0),
        Case(batch: 1, height: 5, width: 5, inChannels: 2, outChannels: 3, kernel: 1, stride: 2, padding: 0),
        Case(batch: 1, height: 6, width: 7, inChannels: 2, outChannels: 2, kernel: 5, stride: 1, padding: 2),
        Case(batch: 1, height: 9, width: 9, inChannels: 1, outChannels: 2, kernel: 7, stride: 2, padding: 3),
        // Channels in panels of 32: the direct 3×3 kernels (where the CPU has AVX-512 or AVX2);
        // one row, two columns and a 3-channel input (the stem: forward direct, input gradient im2col).
        Case(batch: 2, height: 5, width: 4, inChannels: 32, outChannels: 64, kernel: 3, stride: 1, padding: 1),
        Case(batch: 3, height: 1, width: 2, inChannels: 32, outChannels: 32, kernel: 3, stride: 1, padding: 1),
        Case(batch: 1, height: 6, width: 3, inChannels: 3, outChannels: 32, kernel: 3, stride: 1, padding: 1),
        // Winograd's products for the forward pass and the input gradient (an odd width: the
        // last column of tiles half outside the image).
        Case(batch: 1, height: 8, width: 9, inChannels: 32, outChannels: 32, kernel: 3, stride: 1, padding: 1),
    ]

    /// Direct evaluation of the defining sum, for comparing the im2col path.
    func naiveForward(_ c: Case, input: [Float], weight: [Float], bias: [Float]) -> [Float] {
        let s = c.shape
        var out = [Float](repeating: 0, count: s.outputPixels * c.outChannels)
        for n in 0..<c.batch { for oh in 0..<s.outHeight { for ow in 0..<s.outWidth { for oc in 0..<c.outChannels {
            var sum = bias[oc]
            for kh in 0..<c.kernel { for kw in 0..<c.kernel {
                let ih = oh * c.stride - c.padding + kh, iw = ow * c.stride - c.padding + kw
                guard ih >= 0, ih < c.height, iw >= 0, iw < c.width else { continue }
                for ic in 0..<c.inChannels {
                    sum += input[((n * c.height + ih) * c.width + iw) * c.inChannels + ic]
                        * weight[((oc * c.kernel + kh) * c.kernel + kw) * c.inChannels + ic]
                }
            } }
            out[((n * s.outHeight + oh) * s.outWidth + ow) * c.outChannels + oc] = sum
        } } } }
        return out
    }

    func forward(_ c: Case, _ v: [String: [Float]], pool: ComputePool = .serial) -> [Float] {
        let s = c.shape
        return withPointers([[Float](repeating: 0, count: s.outputPixels * c.outChannels)], scratch: [s.workspaceFloats]) { p, scratch in
            Conv2D.forward(output: p[0], input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!,
                           shape: s, workspace: scratch[0], pool: pool)
        }[0]
    }

    func inputs(_ c: Case) -> [String: [Float]] {
        ["input": randomValues(c.batch * c.height * c.width * c.inChannels, seed: 11),
         "weight": randomValues(c.outChannels * c.kernel * c.kernel * c.inChannels, seed: 12),
         "bias": randomValues(c.outChannels, seed: 13)]
    }

    @Test(arguments: cases)
    func forwardMatchesTheDefiningSum(_ c: Case) {
        let v = inputs(c)
        let expected = naiveForward(c, input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!)
        let got = forward(c, v)
        // Float32 sums of K·K·IC products of values in [−1, 1].
        let tolerance = 1e-5 + 1e-6 * Float(c.shape.patchSize)
        #expect(zip(got, expected).allSatisfy { abs($0 - $1) < tolerance })
    }

    @Test(arguments: cases)
    func backwardMatchesFiniteDifferences(_ c: Case) {
        let s = c.shape
        GradientCheck().run(inputs: inputs(c), forward: { forward(c, $0) }, backward: { v, dOut in
            let g = withPointers([v["input"]!.map { _ in 0 }, v["weight"]!.map { _ in 0 }, v["bias"]!.map { _ in 0 }],
                                 scratch: [s.workspaceFloats]) { p, scratch in
                Conv2D.backward(dInput: p[0], dWeight: p[1], dBias: p[2], dOutput: dOut, input: v["input"]!,
                                weight: v["weight"]!, shape: s, workspace: scratch[0], pool: .serial)
            }
            return ["input": g[0], "weight": g[1], "bias": g[2]]
        })
    }

    /// Large enough that the pool cuts every product into pieces (rows of the forward and the
    /// column gradient, columns of the weight gradient): same values as one OpenBLAS call, and
    /// the same bits for two and three threads.
    @Test func productsSplitOverThePoolMatchOneCall() {
        let c = Case(batch: 2, height: 16, width: 16, inChannels: 32, outChannels: 64, kernel: 3, stride: 1, padding: 1)
        let v = inputs(c)
        let pools = [2, 3].map { ComputePool(threads: $0, splitsMatrixProducts: true) }
        let reference = forward(c, v, pool: .serial)
        let split = pools.map { forward(c, v, pool: $0) }
        #expect(split[0] == split[1])
        #expect(zip(split[0], reference).allSatisfy { abs($0 - $1) < 1e-4 })
        let dOut = randomValues(reference.count, seed: 6)
        func gradients(_ pool: ComputePool) -> [[Float]] {
            withPointers([v["input"]!.map { _ in 0 }, v["weight"]!.map { _ in 0 }], scratch: [c.shape.workspaceFloats]) { p, scratch in
                Conv2D.backward(dInput: p[0], dWeight: p[1], dBias: nil, dOutput: dOut, input: v["input"]!,
                                weight: v["weight"]!, shape: c.shape, workspace: scratch[0], pool: pool)
            }
        }
        let expected = gradients(.serial), splitGradients = pools.map(gradients)
        #expect(splitGradients[0] == splitGradients[1])
        for (g, e) in zip(splitGradients[0], expected) { #expect(zip(g, e).allSatisfy { abs($0 - $1) < 1e-3 }) }
    }

    @Test func chunkedBatchAndThreadsGiveTheSameResultAsOneChunk() {
        let whole = Case(batch: 5, height: 8, width: 8, inChannels: 4, outChannels: 3, kernel: 3, stride: 1, padding: 1)
        var chunked = whole
        chunked.workspaceCap = 2 * 8 * 8 * 9 * 4
        #expect(whole.shape.imagesPerChunk == 5 && chunked.shape.imagesPerChunk == 2)
        let v = inputs(whole)
        let reference = forward(whole, v, pool: .serial)
        #expect(forward(chunked, v, pool: .serial) == reference)
        #expect(forward(whole, v, pool: ComputePool(threads: 2)) == reference)

        let dOut = randomValues(reference.count, seed: 5)
        func gradients(_ c: Case, _ pool: ComputePool) -> [[Float]] {
            return withPointers([v["input"]!.map { _ in 0 }, v["weight"]!.map { _ in 0 }], scratch: [c.shape.workspaceFloats]) { p, scratch in
                Conv2D.backward(dInput: p[0], dWeight: p[1], dBias: nil, dOutput: dOut, input: v["input"]!,
                                weight: v["weight"]!, shape: c.shape, workspace: scratch[0], pool: pool)
            }
        }
        let expected = gradients(whole, .serial)
        #expect(gradients(whole, ComputePool(threads: 2)) == expected)
        let fromChunks = gradients(chunked, .serial)
        #expect(fromChunks[0] == expected[0])
        // Weight gradients sum chunk by chunk, a different order of float additions.
        #expect(zip(fromChunks[1], expected[1]).allSatisfy { abs($0 - $1) < 1e-4 })
    }

    /// Whole chunks on lanes (the layer's path with a splitting pool) give the bits of the
    /// one-lane path, for one and two threads: the weight gradient's two halves are fixed.
    @Test func chunksOnLanesGiveTheSameBitsForAnyThreadCount() {
        var c = Case(batch: 7, height: 8, width: 8, inChannels: 4, outChannels: 3, kernel: 3, stride: 1, padding: 1)
        c.workspaceCap = 2 * 8 * 8 * 9 * 4
        #expect(c.shape.chunks == 4 && c.shape.weightScratchFloats == 3 * 9 * 4)
        let v = inputs(c)
        let reference = forward(c, v, pool: .serial)
        let dOut = randomValues(reference.count, seed: 9)
        func run(_ pool: ComputePool, lanes: Int) -> [[Float]] {
            withPointers([reference.map { _ in 0 }, v["input"]!.map { _ in 0 }, v["weight"]!.map { _ in 0 }],
                         scratch: [c.shape.workspaceFloats(lanes: lanes)]) { p, scratch in
                Conv2D.forward(output: p[0], input: v["input"]!, weight: v["weight"]!, bias: nil, shape: c.shape,
                               workspace: scratch[0], workspaceLanes: lanes, pool: pool)
                Conv2D.backward(dInput: p[1], dWeight: p[2], dBias: nil, dOutput: dOut, input: v["input"]!,
                                weight: v["weight"]!, shape: c.shape, workspace: scratch[0], workspaceLanes: lanes, pool: pool)
            }
        }
        let serial = run(.serial, lanes: 1)
        #expect(run(ComputePool(threads: 2, splitsMatrixProducts: true), lanes: 2) == serial)
        #expect(run(ComputePool(threads: 2, splitsMatrixProducts: false), lanes: 2) == serial)
        #expect(run(ComputePool(threads: 1), lanes: 1) == serial)
    }

    /// The direct kernels, with each instruction set this CPU has (AVX-512 and AVX2 on the
    /// reference machine), against im2col + sgemm on shapes whose border classes have remainders
    /// (batches not a multiple of the tile, 1- and 2-pixel sides, channels not a multiple of the
    /// weight gradient's channel tile): same values, every output written (it starts as NaN),
    /// both gradients added onto what was there, and the same bits for one, two and three threads.
    @Test(arguments: [
        Case(batch: 5, height: 7, width: 9, inChannels: 64, outChannels: 32, kernel: 3, stride: 1, padding: 1),
        Case(batch: 17, height: 2, width: 2, inChannels: 32, outChannels: 96, kernel: 3, stride: 1, padding: 1),
        Case(batch: 3, height: 1, width: 13, inChannels: 32, outChannels: 32, kernel: 3, stride: 1, padding: 1),
        Case(batch: 2, height: 16, width: 16, inChannels: 32, outChannels: 64, kernel: 3, stride: 1, padding: 1),
    ], Conv2DDirect.InstructionSet.allCases.filter(\.isSupported))
    func directKernelsMatchIm2col(_ directCase: Case, _ set: Conv2DDirect.InstructionSet) {
        var c = directCase, im2col = directCase
        c.direct = set
        c.winograd = false
        im2col.direct = nil
        #expect(c.shape.forwardIsDirect && c.shape.inputGradientIsDirect && c.shape.weightGradientIsDirect)
        #expect(!im2col.shape.forwardIsDirect && !im2col.shape.inputGradientIsDirect && !im2col.shape.weightGradientIsDirect)
        let v = inputs(c)
        let dOut = randomValues(c.shape.outputPixels * c.outChannels, seed: 21)
        let dInputBefore = randomValues(v["input"]!.count, seed: 22), dWeightBefore = randomValues(v["weight"]!.count, seed: 23)
        func run(_ c: Case, _ pool: ComputePool) -> [[Float]] {
            let s = c.shape
            return withPointers([[Float](repeating: .nan, count: s.outputPixels * c.outChannels), dInputBefore, dWeightBefore],
                                scratch: [s.workspaceFloats(lanes: pool.threads)]) { p, scratch in
                Conv2D.forward(output: p[0], input: v["input"]!, weight: v["weight"]!, bias: nil, shape: s,
                               workspace: scratch[0], workspaceLanes: pool.threads, pool: pool)
                Conv2D.backward(dInput: p[1], dWeight: p[2], dBias: nil, dOutput: dOut, input: v["input"]!,
                                weight: v["weight"]!, shape: s, workspace: scratch[0], workspaceLanes: pool.threads,
                                pool: pool)
            }
        }
        let reference = run(im2col, .serial)
        let direct = run(c, .serial)
        #expect(direct[0].allSatisfy { $0.isFinite })
        // Sums of K·K·IC products for the output, OC·K·K for the input gradient and N·H·W for the weight gradient.
        let terms = [c.shape.patchSize, c.outChannels * 9, c.shape.outputPixels]
        for (index, name) in ["output", "input gradient", "weight gradient"].enumerated() {
            let tolerance = 1e-5 + 1e-6 * Float(terms[index])
            #expect(zip(direct[index], reference[index]).allSatisfy { abs($0 - $1) < tolerance }, "\(name)")
        }
        for threads in [2, 3] {
            #expect(run(c, ComputePool(threads: threads, splitsMatrixProducts: true)) == direct, "\(threads) threads")
        }
    }

    /// Winograd's products against the direct kernel, with each instruction set this CPU has, on
    /// shapes whose tiles have remainders (odd sides, a last block short of full, batches across
    /// blocks, input channels not a multiple of the register tile): the same values within the
    /// rounding of the transforms, every output and input gradient written (they start as NaN),
    /// the bias and the weight gradient added onto, and the same bits for one, two and three threads.
    @Test(arguments: [
        Case(batch: 3, height: 8, width: 8, inChannels: 32, outChannels: 64, kernel: 3, stride: 1, padding: 1),
        Case(batch: 2, height: 9, width: 11, inChannels: 64, outChannels: 32, kernel: 3, stride: 1, padding: 1),
        Case(batch: 1, height: 16, width: 10, inChannels: 96, outChannels: 96, kernel: 3, stride: 1, padding: 1),
        Case(batch: 4, height: 12, width: 8, inChannels: 160, outChannels: 32, kernel: 3, stride: 1, padding: 1),
    ], Conv2DDirect.InstructionSet.allCases.filter(\.isSupported))
    func winogradMatchesTheDirectKernel(_ winogradCase: Case, _ set: Conv2DDirect.InstructionSet) {
        var c = winogradCase, direct = winogradCase
        c.direct = set
        direct.direct = set
        direct.winograd = false
        #expect(c.shape.winograd && !direct.shape.winograd)
        let v = inputs(c)
        let dOut = randomValues(c.shape.outputPixels * c.outChannels, seed: 31)
        let dWeightBefore = randomValues(v["weight"]!.count, seed: 32)
        func run(_ c: Case, _ pool: ComputePool) -> [[Float]] {
            let s = c.shape
            let unwritten = [Float](repeating: .nan, count: s.outputPixels * c.outChannels)
            return withPointers([unwritten, unwritten, v["input"]!.map { _ in .nan }, dWeightBefore],
                                scratch: [s.workspaceFloats(lanes: pool.threads)]) { p, scratch in
                Conv2D.forward(output: p[0], input: v["input"]!, weight: v["weight"]!, bias: nil, shape: s,
                               workspace: scratch[0], workspaceLanes: pool.threads, pool: pool)
                Conv2D.forward(output: p[1], input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!, shape: s,
                               workspace: scratch[0], workspaceLanes: pool.threads, pool: pool)
                Conv2D.backward(dInput: p[2], dWeight: p[3], dBias: nil, dOutput: dOut, input: v["input"]!,
                                weight: v["weight"]!, shape: s, workspace: scratch[0], workspaceLanes: pool.threads,
                                pool: pool)
            }
        }
        let reference = run(direct, .serial), winograd = run(c, .serial)
        // Sums of 9·IC products for the output, 9·OC for the input gradient and N·H·W for the
        // weight gradient, of values in [−1, 1]; the largest differences seen were 0.9e-5 to
        // 4.4e-5 (AVX-512 and AVX2), against tolerances of 0.9e-4 to 6e-4 here.
        let terms = [9 * c.inChannels, 9 * c.inChannels, 9 * c.outChannels, c.shape.outputPixels]
        for (index, name) in ["output", "output with bias", "input gradient", "weight gradient"].enumerated() {
            let tolerance = 1e-5 + 4e-7 * Float(terms[index])
            let worst = zip(winograd[index], reference[index]).map { abs($0 - $1) }.max() ?? .nan
            #expect(worst < tolerance, "\(name): largest difference \(worst)")
        }
        for threads in [2, 3] {
            #expect(run(c, ComputePool(threads: threads, splitsMatrixProducts: true)) == winograd, "\(threads) threads")
        }
    }

    /// A 1×1 stride-1 convolution with enough pixels for `Linear`'s packed product (the
    /// activations read in place): the defining sums for the output, the input gradient (written
    /// whole: it starts as NaN), the weight gradient (added onto what was there) and the bias
    /// gradient, and the same bits for one, two and three threads.
    @Test func pointwiseConvolutionsRunAsLinearLayersOverThePixels() {
        let c = Case(batch: 2, height: 32, width: 17, inChannels: 24, outChannels: 40, kernel: 1, stride: 1, padding: 0)
        let s = c.shape, rows = s.outputPixels
        #expect(rows >= 1024 && s.workspaceFloats == 0)
        if BLAS.packedProductAvailable {
            #expect(BLAS.prefersPackedProduct(m: rows, n: c.outChannels, k: c.inChannels, accumulate: false))
            #expect(BLAS.prefersPackedProduct(m: rows, n: c.inChannels, k: c.outChannels, accumulate: false))
        }
        let v = inputs(c)
        let (x, w) = (v["input"]!, v["weight"]!)
        let dOut = randomValues(rows * c.outChannels, seed: 41)
        let dWeightBefore = randomValues(w.count, seed: 42), dBiasBefore = randomValues(c.outChannels, seed: 43)
        func run(_ pool: ComputePool) -> [[Float]] {
            withPointers([[Float](repeating: .nan, count: rows * c.outChannels), x.map { _ in .nan }, dWeightBefore, dBiasBefore],
                         scratch: [1]) { p, scratch in
                Conv2D.forward(output: p[0], input: x, weight: w, bias: v["bias"]!, shape: s, workspace: scratch[0], pool: pool)
                Conv2D.backward(dInput: p[1], dWeight: p[2], dBias: p[3], dOutput: dOut, input: x, weight: w, shape: s,
                                workspace: scratch[0], pool: pool)
            }
        }
        var dInput = [Float](repeating: 0, count: x.count), dWeight = dWeightBefore, dBias = dBiasBefore
        for r in 0..<rows {
            for oc in 0..<c.outChannels {
                let g = dOut[r * c.outChannels + oc]
                dBias[oc] += g
                for ic in 0..<c.inChannels {
                    dInput[r * c.inChannels + ic] += g * w[oc * c.inChannels + ic]
                    dWeight[oc * c.inChannels + ic] += g * x[r * c.inChannels + ic]
                }
            }
        }
        let expected = [naiveForward(c, input: x, weight: w, bias: v["bias"]!), dInput, dWeight, dBias]
        let serial = run(.serial)
        // Sums of IC, OC, N·H·W and N·H·W products of values in [−1, 1].
        let terms = [c.inChannels, c.outChannels, rows, rows]
        for (index, name) in ["output", "input gradient", "weight gradient", "bias gradient"].enumerated() {
            let tolerance = 1e-5 + 1e-6 * Float(terms[index])
            let worst = zip(serial[index], expected[index]).map { abs($0 - $1) }.max() ?? .nan
            #expect(worst < tolerance, "\(name): largest difference \(worst)")
        }
        for threads in [1, 2, 3] {
            #expect(run(ComputePool(threads: threads, splitsMatrixProducts: true)) == serial, "\(threads) threads")
        }
    }

    /// A layer with 16 channels (a width-16 ResNet's first stage) runs AVX2's 16-channel panels
    /// rather than im2col where the CPU's widest kernels want 32; layers filling 32 keep AVX-512.
    @Test func narrowLayersRunTheKernelsWhosePanelsTheyFill() {
        #expect(Conv2DShape.panelFilling(.avx512, inChannels: 16, outChannels: 16) == .avx2)
        #expect(Conv2DShape.panelFilling(.avx512, inChannels: 16, outChannels: 32) == .avx2)
        #expect(Conv2DShape.panelFilling(.avx512, inChannels: 32, outChannels: 64) == .avx512)
        #expect(Conv2DShape.panelFilling(.avx512, inChannels: 16, outChannels: 24) == .avx512, "fills neither")
        #expect(Conv2DShape.panelFilling(.avx2, inChannels: 16, outChannels: 16) == .avx2)
        #expect(Conv2DShape.panelFilling(nil, inChannels: 16, outChannels: 16) == nil)
        guard Conv2DDirect.InstructionSet.avx512.isSupported else { return }
        let narrow = Conv2DShape(batch: 2, height: 16, width: 16, inChannels: 16, outChannels: 16, kernel: 3, padding: 1,
                                 direct: .avx512)
        #expect(narrow.direct == .avx2 && (narrow.winograd || narrow.forwardIsDirect))
    }
}
