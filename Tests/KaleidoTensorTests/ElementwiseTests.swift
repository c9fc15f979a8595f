import Testing
@testable import KaleidoTensor

@Suite struct ElementwiseTests {
    @Test(arguments: [1, 13])
    func addBackwardMatchesFiniteDifferences(count: Int) {
        let inputs = ["a": randomValues(count, seed: 1), "b": randomValues(count, seed: 2)]
        GradientCheck().run(inputs: inputs, forward: { v in
            withPointers([[Float](repeating: 0, count: count)]) { p in
                Add.forward(output: p[0], a: v["a"]!, b: v["b"]!, count: count, pool: .serial)
            }[0]
        }, backward: { v, dOut in
            let grads = withPointers([v["a"]!.map { _ in 0 }, v["b"]!.map { _ in 0 }]) { p in
                Add.backward(dA: p[0], dB: p[1], dOutput: dOut, count: count, pool: .serial)
            }
            return ["a": grads[0], "b": grads[1]]
        })
    }

    @Test func addBackwardAccumulatesAndSkipsMissingGradients() {
        let grads = withPointers([[10, 20]]) { p in
            Add.backward(dA: p[0], dB: nil, dOutput: [1, 2], count: 2, pool: .serial)
        }
        #expect(grads == [[11, 22]])
    }

    @Test(arguments: [(1, 3), (5, 7)])
    func scaleBackwardMatchesFiniteDifferences(rows: Int, channels: Int) {
        let inputs = ["input": randomValues(rows * channels, seed: 3), "scale": randomValues(channels, seed: 4)]
        GradientCheck().run(inputs: inputs, forward: { v in
            withPointers([[Float](repeating: 0, count: rows * channels)]) { p in
                Scale.forward(output: p[0], input: v["input"]!, scale: v["scale"]!, rows: rows, channels: channels,
                              pool: .serial)
            }[0]
        }, backward: { v, dOut in
            let grads = withPointers([v["input"]!.map { _ in 0 }, v["scale"]!.map { _ in 0 }]) { p in
                Scale.backward(dInput: p[0], dScale: p[1], dOutput: dOut, input: v["input"]!, scale: v["scale"]!,
                               rows: rows, channels: channels, pool: .serial)
            }
            return ["input": grads[0], "scale": grads[1]]
        })
    }

    @Test func scaleMultipliesEachChannelByItsFactor() {
        let output = withPointers([[0, 0, 0, 0]]) { p in
            Scale.forward(output: p[0], input: [1, 2, 3, 4], scale: [10, -1], rows: 2, channels: 2, pool: .serial)
        }[0]
        #expect(output == [10, -2, 30, -4])
    }

    @Test func scaleGradientIsIdenticalForOneAndTwoThreads() {
        let (rows, channels) = (301, 160)
        let input = randomValues(rows * channels, seed: 5), dOutput = randomValues(rows * channels, seed: 6)
        let scale = randomValues(channels, seed: 7)
        let runs = [ComputePool.serial, ComputePool(threads: 2)].map { pool in
            withPointers([input.map { _ in .nan }, scale.map { _ in 0 }]) { p in  // dinp is written, not added to
                Scale.backward(dInput: p[0], dScale: p[1], dOutput: dOutput, input: input, scale: scale,
                               rows: rows, channels: channels, pool: pool)
            }
        }
        #expect(runs[0] == runs[1])
    }
}
