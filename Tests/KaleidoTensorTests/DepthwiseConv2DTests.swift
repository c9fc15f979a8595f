import CKernels
import Testing
@testable import KaleidoTensor

@Suite struct DepthwiseConv2DTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let batch, height, width, channels, kernel, stride, padding: Int
        var testDescription: String { "n\(batch) \(height)×\(width)×\(channels) k\(kernel) s\(stride) p\(padding)" }
        var shape: DepthwiseConv2DShape {
            DepthwiseConv2DShape(batch: batch, height: height, width: width, channels: channels,
                                 kernel: kernel, stride: stride, padding: padding)
        }
    }

    /// Channel counts below, at and above the 8-wide vector, widths with interior 4-pixel tiles
    /// and ragged edges, and the 4×4, 2×2 and 1×1 maps of the last ConvNeXt stages (where most
    /// of the 7×7 window is padding, which the kernels skip).
    static let cases = [
        Case(batch: 2, height: 9, width: 11, channels: 12, kernel: 7, stride: 1, padding: 3),
        Case(batch: 1, height: 7, width: 7, channels: 3, kernel: 7, stride: 1, padding: 3),
        Case(batch: 1, height: 9, width: 9, channels: 16, kernel: 3, stride: 2, padding: 1),
        Case(batch: 2, height: 6, width: 5, channels: 9, kernel: 3, stride: 1, padding: 1),
        Case(batch: 1, height: 8, width: 13, channels: 8, kernel: 3, stride: 2, padding: 2),
        Case(batch: 3, height: 5, width: 21, channels: 17, kernel: 7, stride: 1, padding: 3),
        Case(batch: 2, height: 9, width: 10, channels: 8, kernel: 3, stride: 1, padding: 0),
        Case(batch: 2, height: 4, width: 4, channels: 16, kernel: 7, stride: 1, padding: 3),
        Case(batch: 2, height: 2, width: 2, channels: 10, kernel: 7, stride: 1, padding: 3),
        Case(batch: 3, height: 1, width: 1, channels: 8, kernel: 7, stride: 1, padding: 3),
        Case(batch: 1, height: 3, width: 6, channels: 8, kernel: 5, stride: 2, padding: 2),
    ]

    func naiveForward(_ c: Case, input: [Float], weight: [Float], bias: [Float]) -> [Float] {
        let s = c.shape
        var out = [Float](repeating: 0, count: c.batch * s.outHeight * s.outWidth * c.channels)
        for n in 0..<c.batch { for oh in 0..<s.outHeight { for ow in 0..<s.outWidth { for ch in 0..<c.channels {
            var sum = bias[ch]
            for kh in 0..<c.kernel { for kw in 0..<c.kernel {
                let ih = oh * c.stride - c.padding + kh, iw = ow * c.stride - c.padding + kw
                guard ih >= 0, ih < c.height, iw >= 0, iw < c.width else { continue }
                sum += input[((n * c.height + ih) * c.width + iw) * c.channels + ch] * weight[(kh * c.kernel + kw) * c.channels + ch]
            } }
            out[((n * s.outHeight + oh) * s.outWidth + ow) * c.channels + ch] = sum
        } } } }
        return out
    }

    func inputs(_ c: Case) -> [String: [Float]] {
        ["input": randomValues(c.batch * c.height * c.width * c.channels, seed: 21),
         "weight": randomValues(c.kernel * c.kernel * c.channels, seed: 22),
         "bias": randomValues(c.channels, seed: 23)]
    }

    func forward(_ c: Case, _ v: [String: [Float]], pool: ComputePool = .serial, avx512: Bool = DepthwiseConv2D.usesAVX512) -> [Float] {
        let s = c.shape
        return withPointers([[Float](repeating: 0, count: c.batch * s.outHeight * s.outWidth * c.channels)],
                            scratch: [s.workspaceFloats(threads: pool.threads)]) { p, scratch in
            DepthwiseConv2D.forward(output: p[0], input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!,
                                    shape: s, workspace: scratch[0], pool: pool, avx512: avx512)
        }[0]
    }

    func backward(_ c: Case, _ v: [String: [Float]], _ dOut: [Float], pool: ComputePool = .serial,
                  avx512: Bool = DepthwiseConv2D.usesAVX512) -> [String: [Float]] {
        // The input gradient is written, not added to: it starts as NaN to show that.
        let g = withPointers([v["input"]!.map { _ in .nan }, v["weight"]!.map { _ in 0 }, v["bias"]!.map { _ in 0 }],
                             scratch: [c.shape.workspaceFloats(threads: pool.threads)]) { p, scratch in
            DepthwiseConv2D.backward(dInput: p[0], dWeight: p[1], dBias: p[2], dOutput: dOut, input: v["input"]!,
                                     weight: v["weight"]!, shape: c.shape, workspace: scratch[0], pool: pool, avx512: avx512)
        }
        return ["input": g[0], "weight": g[1], "bias": g[2]]
    }

    @Test(arguments: cases)
    func forwardMatchesTheDefiningSum(_ c: Case) {
        let v = inputs(c)
        let expected = naiveForward(c, input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!)
        #expect(zip(forward(c, v), expected).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test(arguments: cases)
    func backwardMatchesFiniteDifferences(_ c: Case) {
        GradientCheck().run(inputs: inputs(c), forward: { forward(c, $0) }, backward: { backward(c, $0, $1) })
    }

    @Test func resultsDoNotDependOnTheThreadCount() {
        let c = Case(batch: 3, height: 14, width: 14, channels: 24, kernel: 7, stride: 1, padding: 3)
        let v = inputs(c)
        #expect(forward(c, v, pool: .serial) == forward(c, v, pool: ComputePool(threads: 2)))
        let dOut = randomValues(forward(c, v).count, seed: 9)
        #expect(backward(c, v, dOut, pool: .serial) == backward(c, v, dOut, pool: ComputePool(threads: 2)))
    }

    /// The AVX-512 loops (C) against the Swift ones on the same data, every case above plus
    /// ConvNeXt-atto's 40 channels (two 16-lane groups and a half one). The forward pass and the
    /// input gradient give the same bits where the channels are a multiple of 8 (elsewhere the
    /// last channels are masked lanes, fused, in C and scalar sums in Swift); the weight gradient
    /// sums in another order, so it agrees to rounding.
    @Test(.enabled(if: kaleido_depthwise_avx512_available() != 0), arguments: cases + [
        Case(batch: 2, height: 16, width: 16, channels: 40, kernel: 7, stride: 1, padding: 3),
        Case(batch: 1, height: 8, width: 8, channels: 96, kernel: 7, stride: 1, padding: 3),
        Case(batch: 2, height: 7, width: 9, channels: 24, kernel: 4, stride: 2, padding: 1),
    ])
    func avx512LoopsAgreeWithTheSwiftLoops(_ c: Case) {
        let v = inputs(c)
        let wide = forward(c, v, avx512: true), narrow = forward(c, v, avx512: false)
        let dOut = randomValues(wide.count, seed: 10)
        let wideGradients = backward(c, v, dOut, avx512: true), narrowGradients = backward(c, v, dOut, avx512: false)
        func close(_ a: [Float], _ b: [Float]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }
        }
        if c.channels % 8 == 0 {
            #expect(wide == narrow)
            #expect(wideGradients["input"] == narrowGradients["input"])
        } else {
            #expect(close(wide, narrow))
            #expect(close(wideGradients["input"]!, narrowGradients["input"]!))
        }
        #expect(close(wideGradients["weight"]!, narrowGradients["weight"]!))
        #expect(wideGradients["bias"] == narrowGradients["bias"])
    }
}
