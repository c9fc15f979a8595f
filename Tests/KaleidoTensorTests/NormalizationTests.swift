import Foundation
import Testing
@testable import KaleidoTensor

/// Outputs and gradients of one forward + backward, for comparing runs bit for bit.
struct NormalizationRun: Equatable {
    var output: [Float], mean: [Float], rstd: [Float]
    var dInput: [Float], dWeight: [Float], dBias: [Float]
}

/// Optional parameter arrays as the optional pointers the kernels take.
private func tensor(_ values: [Float]?) -> Tensor? {
    values.map { Tensor(shape: [$0.count], values: $0) }
}

/// LayerNorm and BatchNorm, grouped so `--filter NormalizationTests` selects both.
@Suite struct NormalizationTests {}

extension NormalizationTests {
    @Suite struct LayerNormTests {
        func run(input: [Float], weight: [Float]?, bias: [Float]?, dOutput: [Float],
                 rows: Int, channels: Int, pool: ComputePool = .serial) -> NormalizationRun {
            let x = Tensor(shape: [rows, channels], values: input), w = tensor(weight), b = tensor(bias)
            let output = Tensor(zeros: [rows, channels]), mean = Tensor(zeros: [rows]), rstd = Tensor(zeros: [rows])
            LayerNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: x.pointer,
                              weight: w?.pointer, bias: b?.pointer, rows: rows, channels: channels, pool: pool)
            let dInput = Tensor(shape: [rows, channels], values: [Float](repeating: .nan, count: rows * channels))  // written, not added to
            let dWeight = Tensor(zeros: [channels]), dBias = Tensor(zeros: [channels])
            LayerNorm.backward(dInput: dInput.pointer, dWeight: w == nil ? nil : dWeight.pointer,
                               dBias: b == nil ? nil : dBias.pointer, dOutput: dOutput, input: x.pointer,
                               weight: w?.pointer, mean: mean.pointer, rstd: rstd.pointer,
                               rows: rows, channels: channels, pool: pool)
            // The kernels saw only pointers into x, w and b: keep those tensors alive until here.
            return withExtendedLifetime((x, w, b)) {
                NormalizationRun(output: output.array, mean: mean.array, rstd: rstd.array,
                                 dInput: dInput.array, dWeight: dWeight.array, dBias: dBias.array)
            }
        }

        @Test(arguments: [(1, 5), (3, 7), (4, 1 + 16), (2, 48), (2, 16 * 3 + 9)])
        func backwardMatchesFiniteDifferences(rows: Int, channels: Int) {
            let inputs = [
                "input": randomValues(rows * channels, seed: 1, scale: 2),
                "weight": randomValues(channels, seed: 2),
                "bias": randomValues(channels, seed: 3),
            ]
            let zeros = [Float](repeating: 0, count: rows * channels)
            GradientCheck().run(inputs: inputs, forward: { v in
                run(input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!, dOutput: zeros,
                    rows: rows, channels: channels).output
            }, backward: { v, dOut in
                let result = run(input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!, dOutput: dOut,
                                 rows: rows, channels: channels)
                return ["input": result.dInput, "weight": result.dWeight, "bias": result.dBias]
            })
        }

        @Test func backwardWithoutAffineParametersMatchesFiniteDifferences() {
            let (rows, channels) = (3, 6)
            let zeros = [Float](repeating: 0, count: rows * channels)
            GradientCheck().run(inputs: ["input": randomValues(rows * channels, seed: 4)], forward: { v in
                run(input: v["input"]!, weight: nil, bias: nil, dOutput: zeros, rows: rows, channels: channels).output
            }, backward: { v, dOut in
                ["input": run(input: v["input"]!, weight: nil, bias: nil, dOutput: dOut, rows: rows, channels: channels).dInput]
            })
        }

        @Test func forwardNormalisesEachRowAndAppliesTheAffineParameters() {
            // Row mean 2.5, biased variance 1.25.
            let result = run(input: [1, 2, 3, 4, 10, 10, 10, 10], weight: [1, 1, 2, 2], bias: [0, 1, 0, 1],
                             dOutput: Array(repeating: 0, count: 8), rows: 2, channels: 4)
            let s = 1 / (1.25 + 1e-5 as Float).squareRoot()
            #expect(result.mean == [2.5, 10])
            #expect(abs(result.rstd[0] - s) < 1e-6)
            let expected: [Float] = [-1.5 * s, -0.5 * s + 1, 2 * 0.5 * s, 2 * 1.5 * s + 1, 0, 1, 0, 1]
            for (value, reference) in zip(result.output, expected) { #expect(abs(value - reference) < 1e-5) }
        }

        /// Rows of Swin's and ConvNeXt's widths (whole 16-float vectors, and a tail) against the
        /// definition in Float64.
        @Test(arguments: [48, 96, 100])
        func forwardMatchesFloat64(channels: Int) {
            let rows = 3
            let input = randomValues(rows * channels, seed: 11, scale: 4).map { $0 + 3 }
            let weight = randomValues(channels, seed: 12), bias = randomValues(channels, seed: 13)
            let result = run(input: input, weight: weight, bias: bias, dOutput: Array(repeating: 0, count: rows * channels),
                             rows: rows, channels: channels)
            for m in 0..<rows {
                let row = input[(m * channels)..<((m + 1) * channels)].map(Double.init)
                let mu = row.reduce(0, +) / Double(channels)
                let variance = row.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(channels)
                let s = 1 / (variance + 1e-5).squareRoot()
                #expect(abs(Double(result.mean[m]) - mu) <= 1e-6 * max(1, abs(mu)))
                #expect(abs(Double(result.rstd[m]) - s) <= 1e-5 * s)
                for c in 0..<channels {
                    let expected = (row[c] - mu) * s * Double(weight[c]) + Double(bias[c])
                    #expect(abs(Double(result.output[m * channels + c]) - expected) <= 1e-5 * max(1, abs(expected)), "[\(m), \(c)]")
                }
            }
        }

        @Test func resultsAreBitIdenticalForOneAndTwoThreads() {
            // Large enough that both the row loops and the channel reductions split over two threads.
            let (rows, channels) = (301, 160)
            let arguments = (input: randomValues(rows * channels, seed: 5, scale: 3), weight: randomValues(channels, seed: 6),
                             bias: randomValues(channels, seed: 7), dOutput: randomValues(rows * channels, seed: 8))
            let runs = [ComputePool.serial, ComputePool(threads: 2)].map { pool in
                run(input: arguments.input, weight: arguments.weight, bias: arguments.bias, dOutput: arguments.dOutput,
                    rows: rows, channels: channels, pool: pool)
            }
            #expect(runs[0] == runs[1])
        }
    }

    @Suite struct BatchNormTests {
        struct State {
            var runningMean: [Float], runningVariance: [Float]
        }

        func run(input: [Float], weight: [Float]?, bias: [Float]?, dOutput: [Float], state: inout State,
                 rows: Int, channels: Int, training: Bool, pool: ComputePool = .serial) -> NormalizationRun {
            let x = Tensor(shape: [rows, channels], values: input), w = tensor(weight), b = tensor(bias)
            let runningMean = Tensor(shape: [channels], values: state.runningMean)
            let runningVariance = Tensor(shape: [channels], values: state.runningVariance)
            let output = Tensor(zeros: [rows, channels]), mean = Tensor(zeros: [channels]), rstd = Tensor(zeros: [channels])
            BatchNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: x.pointer,
                              weight: w?.pointer, bias: b?.pointer,
                              runningMean: runningMean.pointer, runningVariance: runningVariance.pointer,
                              rows: rows, channels: channels, training: training, pool: pool)
            state = State(runningMean: runningMean.array, runningVariance: runningVariance.array)
            let dInput = Tensor(zeros: [rows, channels])
            let dWeight = Tensor(zeros: [channels]), dBias = Tensor(zeros: [channels])
            BatchNorm.backward(dInput: dInput.pointer, dWeight: w == nil ? nil : dWeight.pointer,
                               dBias: b == nil ? nil : dBias.pointer, dOutput: dOutput, input: x.pointer,
                               weight: w?.pointer, bias: b?.pointer, mean: mean.pointer, rstd: rstd.pointer,
                               rows: rows, channels: channels, training: training, pool: pool)
            // The kernels saw only pointers into x, w and b: keep those tensors alive until here.
            return withExtendedLifetime((x, w, b)) {
                NormalizationRun(output: output.array, mean: mean.array, rstd: rstd.array,
                                 dInput: dInput.array, dWeight: dWeight.array, dBias: dBias.array)
            }
        }

        func initialState(channels: Int) -> State {
            State(runningMean: randomValues(channels, seed: 11),
                  runningVariance: randomValues(channels, seed: 12).map { 1 + $0 / 2 })
        }

        @Test(arguments: [(3, 2, true), (9, 5, true), (1, 3, false), (6, 4, false)])
        func backwardMatchesFiniteDifferences(rows: Int, channels: Int, training: Bool) {
            let inputs = [
                "input": randomValues(rows * channels, seed: 1, scale: 2),
                "weight": randomValues(channels, seed: 2),
                "bias": randomValues(channels, seed: 3),
            ]
            let zeros = [Float](repeating: 0, count: rows * channels)
            func pass(_ v: [String: [Float]], _ dOutput: [Float]) -> NormalizationRun {
                var state = initialState(channels: channels)
                return run(input: v["input"]!, weight: v["weight"]!, bias: v["bias"]!, dOutput: dOutput, state: &state,
                           rows: rows, channels: channels, training: training)
            }
            GradientCheck().run(inputs: inputs, forward: { v in pass(v, zeros).output }, backward: { v, dOut in
                let result = pass(v, dOut)
                return ["input": result.dInput, "weight": result.dWeight, "bias": result.dBias]
            })
        }

        @Test func trainingUpdatesRunningStatisticsWithTheUnbiasedVariance() {
            // One channel: batch mean 2.5, biased variance 1.25, unbiased 5/3.
            var state = State(runningMean: [0], runningVariance: [1])
            let result = run(input: [1, 2, 3, 4], weight: nil, bias: nil, dOutput: [0, 0, 0, 0], state: &state,
                             rows: 4, channels: 1, training: true)
            #expect(abs(state.runningMean[0] - 0.25) < 1e-6)
            #expect(abs(state.runningVariance[0] - (0.9 + 0.1 * 5 / 3)) < 1e-6)
            // Normalised with the biased variance.
            #expect(abs(result.output[3] - 1.5 / (1.25 + 1e-5 as Float).squareRoot()) < 1e-6)
        }

        @Test func evaluationUsesAndKeepsRunningStatistics() {
            var state = State(runningMean: [1, -2], runningVariance: [4, 0.25])
            let result = run(input: [3, 0, 5, -2], weight: [2, 1], bias: [0.5, 0], dOutput: [1, 1, 1, 1], state: &state,
                             rows: 2, channels: 2, training: false)
            #expect(state.runningMean == [1, -2] && state.runningVariance == [4, 0.25])
            let expected: [Float] = [(3 - 1) / 2 * 2 + 0.5, (0 + 2) / 0.5, (5 - 1) / 2 * 2 + 0.5, 0]
            for (value, reference) in zip(result.output, expected) { #expect(abs(value - reference) < 1e-4) }
            // With fixed statistics the input gradient is just w · rstd.
            for (value, reference) in zip(result.dInput, [1, 2, 1, 2] as [Float]) { #expect(abs(value - reference) < 1e-4) }
        }

        /// (301, 160): one block of rows, channels split 16 at a time; (9000, 22): four blocks of
        /// rows taken by whichever thread is free, and channels beyond the last 16 and last 4.
        @Test(arguments: [true, false], [(301, 160), (9000, 22)])
        func resultsAreBitIdenticalForOneTwoAndThreeThreads(training: Bool, shape: (rows: Int, channels: Int)) {
            let (rows, channels) = shape
            let input = randomValues(rows * channels, seed: 5, scale: 3), dOutput = randomValues(rows * channels, seed: 8)
            let weight = randomValues(channels, seed: 6), bias = randomValues(channels, seed: 7)
            var states = Array(repeating: initialState(channels: channels), count: 3)
            let runs = [ComputePool.serial, ComputePool(threads: 2), ComputePool(threads: 3)].enumerated().map { index, pool in
                run(input: input, weight: weight, bias: bias, dOutput: dOutput, state: &states[index],
                    rows: rows, channels: channels, training: training, pool: pool)
            }
            #expect(runs[0] == runs[1] && runs[0] == runs[2])
            for state in states.dropFirst() {
                #expect(state.runningMean == states[0].runningMean && state.runningVariance == states[0].runningVariance)
            }
        }

        /// BatchNorm with `reluAfter` against BatchNorm followed by the ReLU kernels, the way the
        /// unfused layers ran: the same bits forward and backward, training and evaluation, on 16-,
        /// 4- and 1-channel paths (22 channels) and with the rows split over two threads.
        @Test(arguments: [true, false], [1, 2])
        func fusedReLUHasTheBitsOfBatchNormThenReLU(training: Bool, threads: Int) {
            let (rows, channels) = (2500, 22)
            let pool = threads == 1 ? ComputePool.serial : ComputePool(threads: threads)
            let x = Tensor(shape: [rows, channels], values: randomValues(rows * channels, seed: 21, scale: 3))
            let dOut = Tensor(shape: [rows, channels], values: randomValues(rows * channels, seed: 22))
            let w = Tensor(shape: [channels], values: randomValues(channels, seed: 23))
            let b = Tensor(shape: [channels], values: randomValues(channels, seed: 24))
            func pass(fused: Bool) -> NormalizationRun {
                let state = initialState(channels: channels)
                let runningMean = Tensor(shape: [channels], values: state.runningMean)
                let runningVariance = Tensor(shape: [channels], values: state.runningVariance)
                let output = Tensor(zeros: [rows, channels]), mean = Tensor(zeros: [channels]), rstd = Tensor(zeros: [channels])
                BatchNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: x.pointer,
                                  weight: w.pointer, bias: b.pointer, runningMean: runningMean.pointer,
                                  runningVariance: runningVariance.pointer, rows: rows, channels: channels,
                                  training: training, pool: pool, reluAfter: fused)
                var dNormalized = dOut
                if !fused {
                    ReLU.forward(output: output.pointer, input: output.pointer, count: output.count, pool: pool)
                    dNormalized = Tensor(zeros: [rows, channels])
                    ReLU.backward(dInput: dNormalized.pointer, dOutput: dOut.pointer, input: output.pointer,
                                  count: output.count, pool: pool)
                }
                let dInput = Tensor(zeros: [rows, channels]), dWeight = Tensor(zeros: [channels]), dBias = Tensor(zeros: [channels])
                BatchNorm.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: dBias.pointer,
                                   dOutput: dNormalized.pointer, input: x.pointer, weight: w.pointer, bias: b.pointer,
                                   mean: mean.pointer, rstd: rstd.pointer, rows: rows, channels: channels,
                                   training: training, pool: pool, reluAfter: fused)
                return NormalizationRun(output: output.array, mean: mean.array, rstd: rstd.array,
                                        dInput: dInput.array, dWeight: dWeight.array, dBias: dBias.array)
            }
            let fused = pass(fused: true), separate = pass(fused: false)
            #expect(fused.output.contains(0) && fused.output.contains { $0 > 0 }, "the ReLU must cut somewhere")
            #expect(fused.output.map(\.bitPattern) == separate.output.map(\.bitPattern))
            #expect(fused.dInput.map(\.bitPattern) == separate.dInput.map(\.bitPattern))
            #expect(fused.dWeight.map(\.bitPattern) == separate.dWeight.map(\.bitPattern))
            #expect(fused.dBias.map(\.bitPattern) == separate.dBias.map(\.bitPattern))
        }

        /// The blocked, vectorised sums against the plain definition, over more rows than one
        /// block holds and a channel count that leaves a tail: no row or channel is missed.
        @Test func statisticsAndParameterGradientsAreSumsOverEveryRow() {
            let (rows, channels) = (9000, 22)
            let input = randomValues(rows * channels, seed: 15, scale: 3), dOutput = randomValues(rows * channels, seed: 18)
            var state = State(runningMean: Array(repeating: 0, count: channels), runningVariance: Array(repeating: 1, count: channels))
            let result = run(input: input, weight: Array(repeating: 1, count: channels), bias: Array(repeating: 0, count: channels),
                             dOutput: dOutput, state: &state, rows: rows, channels: channels, training: true,
                             pool: ComputePool(threads: 2))
            for c in 0..<channels {
                let column = (0..<rows).map { Double(input[$0 * channels + c]) }
                let mean = column.reduce(0, +) / Double(rows)
                let variance = column.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rows)
                let rstd = 1 / (variance + 1e-5).squareRoot()
                #expect(abs(Double(result.mean[c]) - mean) < 1e-6)
                #expect(abs(Double(result.rstd[c]) - rstd) < 1e-5 * rstd)
                let dBias = (0..<rows).map { Double(dOutput[$0 * channels + c]) }.reduce(0, +)
                let dWeight = (0..<rows).map { Double(dOutput[$0 * channels + c]) * (column[$0] - mean) * rstd }.reduce(0, +)
                #expect(abs(Double(result.dBias[c]) - dBias) < 1e-3)
                #expect(abs(Double(result.dWeight[c]) - dWeight) < 1e-3)
            }
        }

        /// Channels far from zero relative to their spread (mean 10⁴ and 10⁶, σ ≈ 0.6), each one's
        /// first value an outlier 8 above the rest: the variance from the one-pass sums around that
        /// first value keeps Float precision (at 10⁶, E[x²] − μ² even in Float64 would keep about
        /// 3 of its digits). A constant channel gets variance 0, not a negative rounding error.
        @Test(arguments: [10_000 as Float, 1_000_000], [1, 2])
        func varianceOfAnOffsetChannelKeepsItsPrecision(offset: Float, threads: Int) {
            let rows = 20_000, channels = 17
            var input = randomValues(rows * channels, seed: 31).map { offset + $0 }
            for c in 0..<channels { input[c] = offset + 8 }
            for m in 0..<rows { input[m * channels + 16] = offset }
            var state = State(runningMean: Array(repeating: 0, count: channels), runningVariance: Array(repeating: 1, count: channels))
            let result = run(input: input, weight: nil, bias: nil, dOutput: Array(repeating: 0, count: rows * channels),
                             state: &state, rows: rows, channels: channels, training: true,
                             pool: threads == 1 ? .serial : ComputePool(threads: threads))
            for c in 0..<channels {
                let column = (0..<rows).map { Double(input[$0 * channels + c]) }
                let mean = column.reduce(0, +) / Double(rows)
                let variance = column.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rows)
                let unbiased = variance * Double(rows) / Double(rows - 1)
                #expect(abs(Double(result.mean[c]) - mean) <= 1e-7 * Double(offset))
                #expect(abs(Double(state.runningVariance[c]) - (0.9 + 0.1 * unbiased)) < 1e-6, "channel \(c)")
                if c == 16 { #expect(result.rstd[c] == Float(1 / Double(Float(1e-5)).squareRoot()), "a constant channel") }
            }
        }
    }
}
