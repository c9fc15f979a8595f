import Testing
@testable import KaleidoTensor

@Suite struct PatchEmbed3DTests {
    static let shapes = [
        PatchEmbed3DShape(batch: 2, frames: 4, height: 8, width: 4, inChannels: 3, outChannels: 5,
                          patchFrames: 2, patchHeight: 4, patchWidth: 4),
        PatchEmbed3DShape(batch: 1, frames: 1, height: 6, width: 9, inChannels: 1, outChannels: 3,
                          patchFrames: 1, patchHeight: 2, patchWidth: 3),
    ]

    func inputs(_ s: PatchEmbed3DShape) -> [String: [Float]] {
        ["input": randomValues(s.batch * s.frames * s.height * s.width * s.inChannels, seed: 31),
         "weight": randomValues(s.outChannels * s.patchSize, seed: 32),
         "bias": randomValues(s.outChannels, seed: 33)]
    }

    func forward(_ s: PatchEmbed3DShape, _ v: [String: [Float]]) -> [Float] {
        return withPointers([[Float](repeating: 0, count: s.tokens * s.outChannels)], scratch: [s.workspaceFloats]) { p, scratch in
            PatchEmbed3D.forward(output: p[0], input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!,
                                 shape: s, workspace: scratch[0], pool: .serial)
        }[0]
    }

    @Test(arguments: shapes)
    func forwardMatchesTheDefiningSum(_ s: PatchEmbed3DShape) {
        let v = inputs(s)
        let (input, weight, bias) = (v["input"]!, v["weight"]!, v["bias"]!)
        let got = forward(s, v)
        var token = 0
        for n in 0..<s.batch { for t in 0..<s.outFrames { for h in 0..<s.outHeight { for w in 0..<s.outWidth {
            for oc in 0..<s.outChannels {
                var sum = bias[oc]
                for kt in 0..<s.patchFrames { for kh in 0..<s.patchHeight { for kw in 0..<s.patchWidth { for ic in 0..<s.inChannels {
                    let x = input[(((n * s.frames + t * s.patchFrames + kt) * s.height + h * s.patchHeight + kh) * s.width
                                   + w * s.patchWidth + kw) * s.inChannels + ic]
                    sum += x * weight[(((oc * s.patchFrames + kt) * s.patchHeight + kh) * s.patchWidth + kw) * s.inChannels + ic]
                } } } }
                #expect(abs(got[token * s.outChannels + oc] - sum) < 1e-5)
            }
            token += 1
        } } } }
    }

    @Test(arguments: shapes)
    func backwardMatchesFiniteDifferences(_ s: PatchEmbed3DShape) {
        GradientCheck().run(inputs: inputs(s), forward: { forward(s, $0) }, backward: { v, dOut in
            let g = withPointers([v["input"]!.map { _ in 0 }, v["weight"]!.map { _ in 0 }, v["bias"]!.map { _ in 0 }],
                                 scratch: [s.workspaceFloats]) { p, scratch in
                PatchEmbed3D.backward(dInput: p[0], dWeight: p[1], dBias: p[2], dOutput: dOut, input: v["input"]!,
                                      weight: v["weight"]!, shape: s, workspace: scratch[0], pool: .serial)
            }
            return ["input": g[0], "weight": g[1], "bias": g[2]]
        })
    }
}
extension PatchEmbed3DShape: CustomTestStringConvertible {
    public var testDescription: String { "n\(batch) \(frames)×\(height)×\(width)×\(inChannels) patch \(patchFrames)×\(patchHeight)×\(patchWidth)" }
}
