import Testing
@testable import KaleidoTensor

@Suite struct LinearTests {
    @Test(arguments: [(1, 3, 2), (5, 7, 4)])
    func backwardMatchesFiniteDifferences(rows: Int, inChannels: Int, outChannels: Int) {
        let inputs = [
            "input": randomValues(rows * inChannels, seed: 1),
            "weight": randomValues(outChannels * inChannels, seed: 2),
            "bias": randomValues(outChannels, seed: 3),
        ]
        GradientCheck().run(inputs: inputs, forward: { v in
            withPointers([[Float](repeating: 0, count: rows * outChannels)]) { p in
                Linear.forward(output: p[0], input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!,
                               rows: rows, inChannels: inChannels, outChannels: outChannels, pool: .serial)
            }[0]
        }, backward: { v, dOut in
            let grads = withPointers([v["input"]!.map { _ in 0 }, v["weight"]!.map { _ in 0 }, v["bias"]!.map { _ in 0 }]) { p in
                Linear.backward(dInput: p[0], dWeight: p[1], dBias: p[2], dOutput: dOut, input: v["input"]!,
                                weight: v["weight"]!, rows: rows, inChannels: inChannels, outChannels: outChannels, pool: .serial)
            }
            return ["input": grads[0], "weight": grads[1], "bias": grads[2]]
        })
    }

    /// The parameter gradients add onto what the arena holds; the input gradient is written.
    @Test func backwardAccumulatesParameterGradientsAndWritesTheInputGradient() {
        let input: [Float] = [1, 2], weight: [Float] = [3, 4], dOut: [Float] = [1]
        let grads = withPointers([[10, 10], [10, 10], [10]]) { p in
            Linear.backward(dInput: p[0], dWeight: p[1], dBias: p[2], dOutput: dOut, input: input, weight: weight,
                            rows: 1, inChannels: 2, outChannels: 1, pool: .serial)
        }
        #expect(grads == [[3, 4], [11, 12], [11]])
    }
}
