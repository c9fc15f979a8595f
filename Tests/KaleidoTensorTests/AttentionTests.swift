import CKernels
import Foundation
import Testing
@testable import KaleidoTensor

@Suite struct AttentionTests {
    static let shapes = [
        AttentionShape(batch: 4, heads: 2, tokens: 5, headDim: 3, maskWindows: 2),
        AttentionShape(batch: 1, heads: 1, tokens: 7, headDim: 4, maskWindows: 1),
    ]

    /// A Swin-style mask: 0 within a region, −100 across regions.
    func mask(_ s: AttentionShape) -> [Float] {
        var values = [Float](repeating: 0, count: s.maskWindows * s.tokens * s.tokens)
        for w in 0..<s.maskWindows { for i in 0..<s.tokens { for j in 0..<s.tokens {
            let region = { (t: Int) in (t + w) % 2 }
            if w > 0 && region(i) != region(j) { values[(w * s.tokens + i) * s.tokens + j] = -100 }
        } } }
        return values
    }

    func inputs(_ s: AttentionShape) -> [String: [Float]] {
        ["qkv": randomValues(s.batch * s.tokens * s.qkvWidth, seed: 41, scale: 2),
         "bias": randomValues(s.heads * s.tokens * s.tokens, seed: 42)]
    }

    func forward(_ s: AttentionShape, _ v: [String: [Float]], pool: ComputePool = .serial) -> [Float] {
        let m = mask(s)
        return withPointers([[Float](repeating: 0, count: s.batch * s.tokens * s.outputWidth)], scratch: [s.probabilityFloats]) { p, scratch in
            Attention.forward(output: p[0], probabilities: scratch[0], qkv: v["qkv"]!, bias: v["bias"]!, mask: m,
                              shape: s, scale: 1 / Float(s.headDim).squareRoot(), pool: pool)
        }[0]
    }

    @Test(arguments: shapes)
    func forwardMatchesTheDefinition(_ s: AttentionShape) {
        let v = inputs(s), m = mask(s)
        let (qkv, bias) = (v["qkv"]!, v["bias"]!)
        let got = forward(s, v)
        let scale = 1 / Double(s.headDim).squareRoot()
        func at(_ b: Int, _ t: Int, _ part: Int, _ h: Int, _ e: Int) -> Double {
            Double(qkv[(b * s.tokens + t) * s.qkvWidth + (part * s.heads + h) * s.headDim + e])
        }
        for b in 0..<s.batch { for h in 0..<s.heads { for i in 0..<s.tokens {
            var scores = (0..<s.tokens).map { j in
                (0..<s.headDim).reduce(0.0) { $0 + at(b, i, 0, h, $1) * at(b, j, 1, h, $1) } * scale
                    + Double(bias[(h * s.tokens + i) * s.tokens + j]) + Double(m[((b % s.maskWindows) * s.tokens + i) * s.tokens + j])
            }
            let top = scores.max()!
            scores = scores.map { Foundation.exp($0 - top) }
            let total = scores.reduce(0, +)
            for e in 0..<s.headDim {
                let expected = (0..<s.tokens).reduce(0.0) { $0 + scores[$1] / total * at(b, $1, 2, h, e) }
                #expect(abs(Double(got[(b * s.tokens + i) * s.outputWidth + h * s.headDim + e]) - expected) < 1e-5)
            }
        } } }
    }

    func backward(_ s: AttentionShape, _ v: [String: [Float]], _ dOut: [Float], pool: ComputePool = .serial) -> [String: [Float]] {
        let scale = 1 / Float(s.headDim).squareRoot()
        let g = withPointers([v["qkv"]!.map { _ in 0 }, v["bias"]!.map { _ in 0 }],
                             scratch: [dOut.count, s.probabilityFloats, s.workspaceFloats]) { p, scratch in
            Attention.forward(output: scratch[0], probabilities: scratch[1], qkv: v["qkv"]!,
                              bias: v["bias"]!, mask: mask(s), shape: s, scale: scale, pool: pool)
            Attention.backward(dQKV: p[0], dBias: p[1], dOutput: dOut, qkv: v["qkv"]!, probabilities: scratch[1],
                               shape: s, scale: scale, workspace: scratch[2], pool: pool)
        }
        return ["qkv": g[0], "bias": g[1]]
    }

    @Test(arguments: shapes)
    func backwardMatchesFiniteDifferences(_ s: AttentionShape) {
        GradientCheck().run(inputs: inputs(s), forward: { forward(s, $0) }, backward: { backward(s, $0, $1) })
    }

    @Test func resultsDoNotDependOnTheThreadCount() {
        let s = AttentionShape(batch: 6, heads: 3, tokens: 16, headDim: 8, maskWindows: 3)
        let v = inputs(s)
        let out = forward(s, v)
        #expect(out == forward(s, v, pool: ComputePool(threads: 2)))
        let dOut = randomValues(out.count, seed: 3)
        #expect(backward(s, v, dOut) == backward(s, v, dOut, pool: ComputePool(threads: 2)))
    }

    /// The Swift loops the C softmax replaced: bias and mask added, then each row's softmax
    /// with `Softmax.exponentiate`'s exponentials and sums.
    static func swiftSoftmax(_ scores: inout [Float], rows: Int, bias: [Float]?, mask: [Float]?) {
        for i in 0..<scores.count {
            switch (bias, mask) {
            case let (bias?, mask?): scores[i] += bias[i] + mask[i]
            case let (bias?, nil): scores[i] += bias[i]
            case let (nil, mask?): scores[i] += mask[i]
            case (nil, nil): break
            }
        }
        scores.withUnsafeMutableBufferPointer { buffer in
            for r in 0..<rows {
                let row = buffer.baseAddress! + r * rows
                var maximum = -Float.infinity
                for j in 0..<rows { maximum = max(maximum, row[j]) }
                guard maximum > -Float.infinity else { row.update(repeating: 0, count: rows); continue }
                let inverse = 1 / Softmax.exponentiate(output: row, input: row, columns: rows, subtracting: maximum)
                for j in 0..<rows { row[j] *= inverse }
            }
        }
    }

    /// `kaleido_attention_softmax` (C, the widest clone this CPU runs) gives the bits of the Swift
    /// loops, for row lengths with and without remainders of 8 and 16 (Swin's 16 and 49 tokens,
    /// Video Swin's 196), with bias, mask, both or neither, and a fully masked row.
    @Test(arguments: [7, 16, 49, 196] as [Int])
    func cSoftmaxGivesTheBitsOfTheSwiftLoops(rows: Int) {
        let scores = randomValues(rows * rows, seed: 51, scale: 8)
        let bias = randomValues(rows * rows, seed: 52)
        var mask = randomValues(rows * rows, seed: 53).map { $0 > 0.5 ? Float(-100) : 0 }
        for j in 0..<rows { mask[j] = -.infinity }  // row 0 fully masked
        for (b, m) in [(bias, mask), (bias, nil), (nil, mask), (nil, nil)] as [([Float]?, [Float]?)] {
            var expected = scores
            Self.swiftSoftmax(&expected, rows: rows, bias: b, mask: m)
            var got = scores
            got.withUnsafeMutableBufferPointer { g in
                kaleido_attention_softmax(g.baseAddress!, Int32(rows), b, m)
            }
            #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "bias \(b != nil), mask \(m != nil)")
        }
    }
}

extension AttentionShape: CustomTestStringConvertible {
    public var testDescription: String { "B\(batch) h\(heads) L\(tokens) D\(headDim) nW\(maskWindows)" }
}
