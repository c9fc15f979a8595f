import Testing
@testable import KaleidoTensor

/// An image batch shape and a pooling window.
struct PoolingCase: Sendable, CustomTestStringConvertible {
    var batch: Int, height: Int, width: Int, channels: Int
    var kernel: Int, stride: Int, padding: Int

    var inputCount: Int { batch * height * width * channels }
    var outputHeight: Int { MaxPool2D.outputSize(inputSize: height, kernel: kernel, stride: stride, padding: padding) }
    var outputWidth: Int { MaxPool2D.outputSize(inputSize: width, kernel: kernel, stride: stride, padding: padding) }
    var outputCount: Int { batch * outputHeight * outputWidth * channels }
    var testDescription: String { "N\(batch) \(height)×\(width)×\(channels) k\(kernel) s\(stride) p\(padding)" }

    static let all = [
        PoolingCase(batch: 1, height: 5, width: 5, channels: 2, kernel: 3, stride: 2, padding: 1),
        PoolingCase(batch: 2, height: 7, width: 5, channels: 3, kernel: 3, stride: 2, padding: 1),
        PoolingCase(batch: 2, height: 4, width: 3, channels: 1, kernel: 2, stride: 2, padding: 0),
        PoolingCase(batch: 1, height: 3, width: 4, channels: 2, kernel: 3, stride: 1, padding: 1),
    ]
}

/// Distinct values 0.05 apart in shuffled order: a finite-difference step of 0.01 can never
/// change which element of a window is the maximum.
private func valuesWithoutTies(_ count: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { Float($0) * 0.05 - Float(count) * 0.025 }.shuffled(using: &rng)
}

@Suite struct PoolingTests {
    func maxPool(_ s: PoolingCase, _ input: [Float]) -> (output: [Float], argmax: [Int32]) {
        var argmax = [Int32](repeating: -1, count: s.outputCount)
        let output = withPointers([[Float](repeating: 0, count: s.outputCount)]) { p in
            MaxPool2D.forward(output: p[0], argmax: &argmax, input: input, batch: s.batch, height: s.height,
                              width: s.width, channels: s.channels, kernel: s.kernel, stride: s.stride,
                              padding: s.padding, pool: .serial)
        }[0]
        return (output, argmax)
    }

    func avgPool(_ s: PoolingCase, _ input: [Float]) -> [Float] {
        withPointers([[Float](repeating: 0, count: s.outputCount)]) { p in
            AvgPool2D.forward(output: p[0], input: input, batch: s.batch, height: s.height, width: s.width,
                              channels: s.channels, kernel: s.kernel, stride: s.stride, padding: s.padding, pool: .serial)
        }[0]
    }

    @Test(arguments: PoolingCase.all)
    func maxPoolBackwardMatchesFiniteDifferences(_ s: PoolingCase) {
        GradientCheck().run(inputs: ["input": valuesWithoutTies(s.inputCount, seed: 1)], forward: { v in
            maxPool(s, v["input"]!).output
        }, backward: { v, dOut in
            let argmax = maxPool(s, v["input"]!).argmax
            let dInput = withPointers([v["input"]!.map { _ in 0 }]) { p in
                MaxPool2D.backward(dInput: p[0], dOutput: dOut, argmax: argmax, batch: s.batch, height: s.height,
                                   width: s.width, channels: s.channels, kernel: s.kernel, stride: s.stride,
                                   padding: s.padding, pool: .serial)
            }[0]
            return ["input": dInput]
        })
    }

    @Test(arguments: PoolingCase.all)
    func avgPoolBackwardMatchesFiniteDifferences(_ s: PoolingCase) {
        GradientCheck().run(inputs: ["input": randomValues(s.inputCount, seed: 2)], forward: { v in
            avgPool(s, v["input"]!)
        }, backward: { v, dOut in
            let dInput = withPointers([v["input"]!.map { _ in 0 }]) { p in
                AvgPool2D.backward(dInput: p[0], dOutput: dOut, batch: s.batch, height: s.height, width: s.width,
                                   channels: s.channels, kernel: s.kernel, stride: s.stride, padding: s.padding,
                                   pool: .serial)
            }[0]
            return ["input": dInput]
        })
    }

    @Test func maxPoolPicksWindowMaximaAndRecordsTheirPositions() {
        // One 4×4 channel, 2×2 windows, stride 2.
        let input: [Float] = [
            1, 5, 2, 0,
            3, 4, 8, 7,
            -1, -2, 6, 6,
            -3, -4, 6, 9,
        ]
        let s = PoolingCase(batch: 1, height: 4, width: 4, channels: 1, kernel: 2, stride: 2, padding: 0)
        let (output, argmax) = maxPool(s, input)
        #expect(output == [5, 8, -1, 9])
        #expect(argmax == [1, 6, 8, 15])
    }

    @Test func maxPoolIgnoresPaddingEvenForNegativeInputs() {
        let s = PoolingCase(batch: 1, height: 3, width: 3, channels: 1, kernel: 3, stride: 2, padding: 1)
        let input: [Float] = (1...9).map { -Float($0) }
        let (output, argmax) = maxPool(s, input)
        // Windows cover rows/columns {0, 1} and {1, 2} of the image.
        #expect(output == [-1, -2, -4, -5])
        #expect(argmax == [0, 1, 3, 4])
    }

    @Test func avgPoolCountsPaddingAsZeros() {
        // Ones on a 3×3 image, 3×3 windows at stride 2 with padding 1: every window covers four
        // real positions out of nine.
        let s = PoolingCase(batch: 1, height: 3, width: 3, channels: 2, kernel: 3, stride: 2, padding: 1)
        let output = avgPool(s, [Float](repeating: 1, count: 18))
        #expect(output.count == 8)
        for value in output { #expect(abs(value - 4 / 9) < 1e-6) }
    }

    @Test(arguments: [(1, 1, 3), (2, 5, 3), (3, 12, 1)])
    func globalAvgPoolBackwardMatchesFiniteDifferences(batch: Int, positions: Int, channels: Int) {
        GradientCheck().run(inputs: ["input": randomValues(batch * positions * channels, seed: 3)], forward: { v in
            withPointers([[Float](repeating: 0, count: batch * channels)]) { p in
                GlobalAvgPool.forward(output: p[0], input: v["input"]!, batch: batch, positions: positions,
                                      channels: channels, pool: .serial)
            }[0]
        }, backward: { v, dOut in
            let dInput = withPointers([v["input"]!.map { _ in 0 }]) { p in
                GlobalAvgPool.backward(dInput: p[0], dOutput: dOut, batch: batch, positions: positions,
                                       channels: channels, pool: .serial)
            }[0]
            return ["input": dInput]
        })
    }

    @Test func globalAvgPoolAveragesEachChannelOfEachSample() {
        // (N=2, S=3, C=2)
        let input: [Float] = [1, 10, 2, 20, 3, 30, -1, 0, -2, 0, -6, 3]
        let output = withPointers([[0, 0, 0, 0]]) { p in
            GlobalAvgPool.forward(output: p[0], input: input, batch: 2, positions: 3, channels: 2, pool: .serial)
        }[0]
        #expect(output == [2, 20, -3, 1])
    }
}
