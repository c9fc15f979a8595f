import Foundation
import KaleidoTensor

/// One measured kernel: its throughput on this machine.
public struct KernelMeasurement: Codable, Sendable {
    public let kernel: String
    public let shape: String
    /// "forward", "backward" or "peak"; a convolution's backward is also shown in its parts,
    /// "dweight" and "dinput" (not counted again in the summary).
    public let pass: String
    public let threads: Int
    public let milliseconds: Double
    public let gflops: Double
}

/// Measures the kernels a training step spends its time in, at the shapes of the benchmark
/// models (ResNet-18 CIFAR, ConvNeXt-atto with a 2×2 stem, Swin windows), next to raw sgemm and
/// the machine's FMA peak measured in the same run, so the ratios are meaningful on a noisy host.
public struct KernelBench {
    public var threads: Int
    public var batch: Int
    /// Each case is repeated until this much time has passed; the fastest repetition counts.
    public var secondsPerCase: Double
    /// Kernel families to run (sgemm, conv3x3, depthwise7x7, attention, linear, gelu, layernorm, batchnorm); all when empty.
    /// The FMA peak is always measured.
    public var only: Set<String>

    public init(threads: Int, batch: Int = 64, secondsPerCase: Double = 0.4, only: Set<String> = []) {
        self.threads = threads
        self.batch = batch
        self.secondsPerCase = secondsPerCase
        self.only = only
    }

    public static let families: Set<String> = ["sgemm", "conv3x3", "depthwise7x7", "attention", "linear", "gelu", "layernorm",
                                                "batchnorm"]

    func wants(_ family: String) -> Bool { only.isEmpty || only.contains(family) }

    public func run(report: (KernelMeasurement) -> Void) -> [KernelMeasurement] {
        BLAS.threadCount = threads
        let pool = ComputePool(threads: threads)
        var results: [KernelMeasurement] = []
        func record(_ m: KernelMeasurement) { results.append(m); report(m) }

        record(fmaPeak(pool: pool))
        for size in [256, 1024] where wants("sgemm") { record(sgemm(m: size, n: size, k: size)) }
        // ResNet-18 CIFAR stages, then ResNet-50's at 224 px (batch 16): 3×3, stride 1, padding 1.
        // Each on the direct kernel, then as Winograd products where those run (their GFLOP/s
        // count the direct kernel's multiplies: the rate it would need to match them).
        let resnet18 = [(32, 64), (16, 128), (8, 256), (4, 512)].map { (batch, $0.0, $0.1) }
        let resnet50 = [(56, 64), (28, 128), (14, 256), (7, 512)].map { (16, $0.0, $0.1) }
        for (n, side, channels) in resnet18 + resnet50 where wants("conv3x3") {
            for winograd in [false, true] {
                let s = Conv2DShape(batch: n, height: side, width: side, inChannels: channels, outChannels: channels,
                                    kernel: 3, stride: 1, padding: 1, winograd: winograd)
                if winograd && !s.winograd { continue }
                conv3x3(s, pool: pool).forEach(record)
            }
        }
        // ConvNeXt-atto on 32 px with a 2×2 stem, and ConvNeXt-T's first stage at 224 px.
        for (n, side, channels) in [(batch, 16, 40), (batch, 8, 80), (batch, 4, 160), (batch, 2, 320), (8, 56, 96)]
        where wants("depthwise7x7") {
            let s = DepthwiseConv2DShape(batch: n, height: side, width: side, channels: channels, kernel: 7, stride: 1, padding: 3)
            depthwise(s, pool: pool).forEach(record)
        }
        // Swin windows: swin-tiny-32 (16 tokens of 16 dims, 3 heads, 16 windows per image),
        // Swin-T at 224 px (49 tokens of 32 dims, 64 windows per image) and Video Swin-T's first
        // stage on the paper suite's clips (8 frames of 112 px: 4×7×7 = 196 tokens, 16 windows
        // per clip, 8 clips).
        for s in [AttentionShape(batch: batch * 16, heads: 3, tokens: 16, headDim: 16),
                  AttentionShape(batch: 8 * 64, heads: 3, tokens: 49, headDim: 32),
                  AttentionShape(batch: 8 * 16, heads: 3, tokens: 196, headDim: 32)] where wants("attention") {
            attention(s, pool: pool).forEach(record)
        }
        // Linear layers over tokens and pixels: swin-tiny-32's qkv and MLP on its first stage
        // (64 images × 256 tokens, 48 channels), ConvNeXt-T's first-stage MLP at 224 px (8 images
        // × 56 × 56 pixels, 96 channels). Each as the layer runs it, and as OpenBLAS pieces.
        for (rows, inChannels, outChannels) in [(batch * 256, 48, 144), (batch * 256, 48, 192), (batch * 256, 192, 48),
                                                (8 * 56 * 56, 96, 384), (8 * 56 * 56, 384, 96)] where wants("linear") {
            linear(rows: rows, inChannels: inChannels, outChannels: outChannels, pool: pool).forEach(record)
        }
        // GELU over ConvNeXt-T's first-stage MLP activations at 224 px (8 images × 56 × 56 × 384).
        if wants("gelu") { gelu(shape: [8, 56, 56, 384], pool: pool).forEach(record) }
        // LayerNorm over swin-tiny-32's first-stage tokens (64 images × 256 tokens × 48) and
        // ConvNeXt-T's first-stage pixels at 224 px (8 × 56 × 56 × 96).
        for (rows, channels) in [(batch * 256, 48), (8 * 56 * 56, 96)] where wants("layernorm") {
            layerNorm(rows: rows, channels: channels, pool: pool).forEach(record)
        }
        // BatchNorm and the ReLU after it over ResNet-50's first-stage pixels at 224 px (8 images
        // × 56 × 56 × 64) and resnet18-cifar's first stage (64 images × 32 × 32 × 64).
        for (rows, channels) in [(8 * 56 * 56, 64), (batch * 32 * 32, 64)] where wants("batchnorm") {
            batchNormReLU(rows: rows, channels: channels, pool: pool).forEach(record)
        }
        return results
    }

    /// Fastest of repeated runs of `body`, in seconds.
    func time(_ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        let start = DispatchTime.now().uptimeNanoseconds
        repeat {
            let begin = DispatchTime.now().uptimeNanoseconds
            body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9)
        } while Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < secondsPerCase
        return best
    }

    func measurement(_ kernel: String, _ shape: String, _ pass: String, flops: Double, seconds: Double) -> KernelMeasurement {
        KernelMeasurement(kernel: kernel, shape: shape, pass: pass, threads: threads,
                          milliseconds: seconds * 1000, gflops: flops / seconds / 1e9)
    }

    func fmaPeak(pool: ComputePool) -> KernelMeasurement {
        let sink = Tensor(zeros: [threads])
        var flops = 0.0
        let seconds = time { flops = PeakThroughput.fmaChains(iterations: 2_000_000, pool: pool, sink: sink.pointer) }
        return measurement("fma_peak", "10 chains × 8 lanes", "peak", flops: flops, seconds: seconds)
    }

    func sgemm(m: Int, n: Int, k: Int) -> KernelMeasurement {
        var rng = SplitMix64(seed: 1)
        let a = Tensor(randomNormal: [m, k], rng: &rng), b = Tensor(randomNormal: [k, n], rng: &rng), c = Tensor(zeros: [m, n])
        let seconds = time {
            BLAS.sgemm(transposeA: false, transposeB: false, m: m, n: n, k: k, a: a.pointer, lda: k, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
        }
        return measurement("sgemm", "\(m)×\(n)×\(k)", "forward", flops: 2 * Double(m * n * k), seconds: seconds)
    }

    func conv3x3(_ s: Conv2DShape, pool: ComputePool) -> [KernelMeasurement] {
        var rng = SplitMix64(seed: 2)
        let input = Tensor(randomNormal: [s.batch, s.height, s.width, s.inChannels], rng: &rng)
        let weight = Tensor(randomNormal: [s.outChannels, 3, 3, s.inChannels], std: 0.05, rng: &rng)
        let output = Tensor(zeros: [s.outputPixels, s.outChannels])
        let dInput = Tensor(zeros: input.shape), dWeight = Tensor(zeros: weight.shape)
        // The lanes Conv2dLayer uses: one im2col slice per thread.
        let lanes = pool.threads
        let workspace = Tensor(zeros: [s.workspaceFloats(lanes: lanes)])
        let name = "n\(s.batch) \(s.height)×\(s.width)×\(s.inChannels)→\(s.outChannels)"
        let kernel = s.winograd ? "conv3x3_winograd" : "conv3x3"
        let forward = time {
            Conv2D.forward(output: output.pointer, input: input.pointer, weight: weight.pointer, bias: nil,
                           shape: s, workspace: workspace.pointer, workspaceLanes: lanes, pool: pool)
        }
        let weightGradient = time {
            Conv2D.backward(dInput: nil, dWeight: dWeight.pointer, dBias: nil, dOutput: output.pointer, input: input.pointer,
                            weight: weight.pointer, shape: s, workspace: workspace.pointer, workspaceLanes: lanes, pool: pool)
        }
        let inputGradient = time {
            Conv2D.backward(dInput: dInput.pointer, dWeight: nil, dBias: nil, dOutput: output.pointer, input: input.pointer,
                            weight: weight.pointer, shape: s, workspace: workspace.pointer, workspaceLanes: lanes, pool: pool)
        }
        return [measurement(kernel, name, "forward", flops: s.forwardFLOPs, seconds: forward),
                measurement(kernel, name, "backward", flops: 2 * s.forwardFLOPs, seconds: weightGradient + inputGradient),
                measurement(kernel, name, "dweight", flops: s.forwardFLOPs, seconds: weightGradient),
                measurement(kernel, name, "dinput", flops: s.forwardFLOPs, seconds: inputGradient)]
    }

    func depthwise(_ s: DepthwiseConv2DShape, pool: ComputePool) -> [KernelMeasurement] {
        var rng = SplitMix64(seed: 3)
        let input = Tensor(randomNormal: [s.batch, s.height, s.width, s.channels], rng: &rng)
        let weight = Tensor(randomNormal: [s.kernel, s.kernel, s.channels], std: 0.1, rng: &rng)
        let bias = Tensor(zeros: [s.channels])
        let output = Tensor(zeros: [s.batch, s.outHeight, s.outWidth, s.channels])
        let dInput = Tensor(zeros: input.shape), dWeight = Tensor(zeros: weight.shape)
        let workspace = Tensor(zeros: [s.workspaceFloats(threads: pool.threads)])
        let name = "n\(s.batch) \(s.height)×\(s.width)×\(s.channels)"
        let forward = time {
            DepthwiseConv2D.forward(output: output.pointer, input: input.pointer, weight: weight.pointer, bias: bias.pointer,
                                    shape: s, workspace: workspace.pointer, pool: pool)
        }
        let backward = time {
            DepthwiseConv2D.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: nil, dOutput: output.pointer,
                                     input: input.pointer, weight: weight.pointer, shape: s, workspace: workspace.pointer, pool: pool)
        }
        return [measurement("depthwise7x7", name, "forward", flops: s.forwardFLOPs, seconds: forward),
                measurement("depthwise7x7", name, "backward", flops: 2 * s.forwardFLOPs, seconds: backward)]
    }

    /// A linear layer's forward (out = inp · Wᵀ + b), input gradient (dinp = dout · W) and weight
    /// gradient (dW += doutᵀ · inp) as `Linear` computes them ("forward", "dinput", "dweight"),
    /// and as OpenBLAS pieces of C on the same pool ("… openblas"): the path `Linear` takes where
    /// `BLAS.prefersPackedProduct` says no, and for the weight gradient where
    /// `BLAS.accumulateOuterProducts` does not cut the rows.
    func linear(rows: Int, inChannels: Int, outChannels: Int, pool: ComputePool) -> [KernelMeasurement] {
        var rng = SplitMix64(seed: 5)
        let input = Tensor(randomNormal: [rows, inChannels], rng: &rng)
        let weight = Tensor(randomNormal: [outChannels, inChannels], std: 0.05, rng: &rng)
        let bias = Tensor(randomNormal: [outChannels], rng: &rng)
        let output = Tensor(zeros: [rows, outChannels]), dInput = Tensor(zeros: input.shape)
        let splitting = ComputePool(threads: pool.threads, splitsMatrixProducts: true)
        let oldThreads = BLAS.threadCount
        BLAS.threadCount = 1
        defer { BLAS.threadCount = oldThreads }
        let name = "M\(rows) \(inChannels)→\(outChannels)"
        let flops = 2 * Double(rows) * Double(inChannels) * Double(outChannels)
        let forward = time {
            Linear.forward(output: output.pointer, input: input.pointer, weight: weight.pointer, bias: bias.pointer,
                           rows: rows, inChannels: inChannels, outChannels: outChannels, pool: splitting)
        }
        let forwardBLAS = time {
            Linear.forwardThroughOpenBLAS(output: output.pointer, input: input.pointer, weight: weight.pointer, bias: bias.pointer,
                                          rows: rows, inChannels: inChannels, outChannels: outChannels, pool: splitting)
        }
        let backward = time {
            Linear.backward(dInput: dInput.pointer, dWeight: nil, dBias: nil, dOutput: output.pointer, input: input.pointer,
                            weight: weight.pointer, rows: rows, inChannels: inChannels, outChannels: outChannels, pool: splitting)
        }
        let backwardBLAS = time {
            Linear.inputGradientThroughOpenBLAS(dInput: dInput.pointer, dOutput: output.pointer, weight: weight.pointer, rows: rows,
                                                inChannels: inChannels, outChannels: outChannels, pool: splitting)
        }
        let dWeight = Tensor(zeros: weight.shape)
        let weightGradient = time {
            Linear.backward(dInput: nil, dWeight: dWeight.pointer, dBias: nil, dOutput: output.pointer, input: input.pointer,
                            weight: weight.pointer, rows: rows, inChannels: inChannels, outChannels: outChannels, pool: splitting)
        }
        let weightGradientBLAS = time {
            BLAS.sgemm(transposeA: true, transposeB: false, m: outChannels, n: inChannels, k: rows, a: output.pointer,
                       lda: outChannels, b: input.pointer, ldb: inChannels, beta: 1, c: dWeight.pointer, ldc: inChannels, pool: splitting)
        }
        return [measurement("linear", name, "forward", flops: flops, seconds: forward),
                measurement("linear", name, "forward openblas", flops: flops, seconds: forwardBLAS),
                measurement("linear", name, "dinput", flops: flops, seconds: backward),
                measurement("linear", name, "dinput openblas", flops: flops, seconds: backwardBLAS),
                measurement("linear", name, "dweight", flops: flops, seconds: weightGradient),
                measurement("linear", name, "dweight openblas", flops: flops, seconds: weightGradientBLAS)]
    }

    /// GELU forward and backward over a tensor of `shape`. Its "GFLOP/s" counts one operation
    /// per element: billions of elements a second.
    func gelu(shape: [Int], pool: ComputePool) -> [KernelMeasurement] {
        let count = shape.reduce(1, *)
        var rng = SplitMix64(seed: 6)
        let input = Tensor(randomNormal: [count], rng: &rng), dOutput = Tensor(randomNormal: [count], rng: &rng)
        let output = Tensor(zeros: [count]), dInput = Tensor(zeros: [count])
        let forward = time { GELU.forward(output: output.pointer, input: input.pointer, count: count, pool: pool) }
        let backward = time {
            GELU.backward(dInput: dInput.pointer, dOutput: dOutput.pointer, input: input.pointer, count: count, pool: pool)
        }
        let name = "n\(shape[0]) " + shape.dropFirst().map(String.init).joined(separator: "×")
        return [measurement("gelu", name, "forward", flops: Double(count), seconds: forward),
                measurement("gelu", name, "backward", flops: Double(count), seconds: backward)]
    }

    /// LayerNorm forward and backward (input, weight and bias gradients) over `rows` rows; like
    /// GELU's, its "GFLOP/s" counts one operation per element.
    func layerNorm(rows: Int, channels: Int, pool: ComputePool) -> [KernelMeasurement] {
        var rng = SplitMix64(seed: 7)
        let input = Tensor(randomNormal: [rows, channels], rng: &rng), dOutput = Tensor(randomNormal: [rows, channels], rng: &rng)
        let weight = Tensor(randomNormal: [channels], rng: &rng), bias = Tensor(randomNormal: [channels], rng: &rng)
        let output = Tensor(zeros: [rows, channels]), dInput = Tensor(zeros: [rows, channels])
        let mean = Tensor(zeros: [rows]), rstd = Tensor(zeros: [rows])
        let dWeight = Tensor(zeros: [channels]), dBias = Tensor(zeros: [channels])
        let forward = time {
            LayerNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: input.pointer,
                              weight: weight.pointer, bias: bias.pointer, rows: rows, channels: channels, pool: pool)
        }
        let backward = time {
            LayerNorm.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: dBias.pointer, dOutput: dOutput.pointer,
                               input: input.pointer, weight: weight.pointer, mean: mean.pointer, rstd: rstd.pointer,
                               rows: rows, channels: channels, pool: pool)
        }
        let name = "M\(rows) C\(channels)", elements = Double(rows * channels)
        return [measurement("layernorm", name, "forward", flops: elements, seconds: forward),
                measurement("layernorm", name, "backward", flops: elements, seconds: backward)]
    }

    /// Training-mode BatchNorm followed by ReLU, forward and backward (input, weight and bias
    /// gradients), run as two kernels ("… then relu": BatchNorm, then the ReLU in place; the ReLU's
    /// backward, then BatchNorm's) and fused ("… fused relu", as ResNet's layers run it). One
    /// operation per element, like LayerNorm's.
    func batchNormReLU(rows: Int, channels: Int, pool: ComputePool) -> [KernelMeasurement] {
        var rng = SplitMix64(seed: 8)
        let input = Tensor(randomNormal: [rows, channels], rng: &rng), dOutput = Tensor(randomNormal: [rows, channels], rng: &rng)
        let weight = Tensor(randomNormal: [channels], rng: &rng), bias = Tensor(randomNormal: [channels], rng: &rng)
        let runningMean = Tensor(zeros: [channels]), runningVariance = Tensor(zeros: [channels])
        let output = Tensor(zeros: [rows, channels]), dNormalized = Tensor(zeros: [rows, channels])
        let dInput = Tensor(zeros: [rows, channels])
        let mean = Tensor(zeros: [channels]), rstd = Tensor(zeros: [channels])
        let dWeight = Tensor(zeros: [channels]), dBias = Tensor(zeros: [channels])
        func forward(fused: Bool) {
            BatchNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: input.pointer,
                              weight: weight.pointer, bias: bias.pointer, runningMean: runningMean.pointer,
                              runningVariance: runningVariance.pointer, rows: rows, channels: channels, training: true,
                              pool: pool, reluAfter: fused)
            if !fused { ReLU.forward(output: output.pointer, input: output.pointer, count: output.count, pool: pool) }
        }
        func backward(fused: Bool) {
            if !fused {
                ReLU.backward(dInput: dNormalized.pointer, dOutput: dOutput.pointer, input: output.pointer,
                              count: output.count, pool: pool)
            }
            BatchNorm.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: dBias.pointer,
                               dOutput: fused ? dOutput.pointer : dNormalized.pointer, input: input.pointer,
                               weight: weight.pointer, bias: bias.pointer, mean: mean.pointer, rstd: rstd.pointer,
                               rows: rows, channels: channels, training: true, pool: pool, reluAfter: fused)
        }
        let name = "M\(rows) C\(channels)", elements = Double(rows * channels)
        var results: [KernelMeasurement] = []
        for fused in [false, true] {
            let pass = fused ? "fused relu" : "then relu"
            let forwardSeconds = time { forward(fused: fused) }
            let backwardSeconds = time { backward(fused: fused) }
            results.append(measurement("batchnorm", name, "forward, \(pass)", flops: elements, seconds: forwardSeconds))
            results.append(measurement("batchnorm", name, "backward, \(pass)", flops: elements, seconds: backwardSeconds))
        }
        return results
    }

    func attention(_ s: AttentionShape, pool: ComputePool) -> [KernelMeasurement] {
        var rng = SplitMix64(seed: 4)
        let qkv = Tensor(randomNormal: [s.batch, s.tokens, s.qkvWidth], rng: &rng)
        let bias = Tensor(randomNormal: [s.heads, s.tokens, s.tokens], std: 0.1, rng: &rng)
        let output = Tensor(zeros: [s.batch, s.tokens, s.outputWidth])
        let probabilities = Tensor(zeros: [s.probabilityFloats]), workspace = Tensor(zeros: [s.workspaceFloats])
        let dQKV = Tensor(zeros: qkv.shape), dBias = Tensor(zeros: bias.shape)
        let scale = 1 / Float(s.headDim).squareRoot()
        let name = "B\(s.batch) h\(s.heads) L\(s.tokens) D\(s.headDim)"
        let forward = time {
            Attention.forward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv.pointer, bias: bias.pointer,
                              mask: nil, shape: s, scale: scale, pool: pool)
        }
        let backward = time {
            Attention.backward(dQKV: dQKV.pointer, dBias: dBias.pointer, dOutput: output.pointer, qkv: qkv.pointer,
                               probabilities: probabilities.pointer, shape: s, scale: scale, workspace: workspace.pointer, pool: pool)
        }
        return [measurement("attention", name, "forward", flops: s.forwardFLOPs, seconds: forward),
                measurement("attention", name, "backward", flops: 2 * s.forwardFLOPs, seconds: backward)]
    }
}

/// The bars, computed from one run's measurements.
public struct KernelBenchSummary: Codable, Sendable {
    /// Conv 3×3 forward+backward over the ResNet-18 CIFAR shapes (total FLOPs / total time)
    /// as a fraction of the best sgemm GFLOP/s; nil when either was not measured.
    public let conv3x3OfSgemm: Double?
    /// Depthwise 7×7 forward+backward as a fraction of the FMA peak; nil when not measured.
    public let depthwiseOfPeak: Double?

    public init(_ results: [KernelMeasurement]) {
        func aggregate(_ kernel: String) -> Double? {
            let cases = results.filter { $0.kernel == kernel && ($0.pass == "forward" || $0.pass == "backward") }
            let flops = cases.reduce(0) { $0 + $1.gflops * $1.milliseconds }
            let time = cases.reduce(0) { $0 + $1.milliseconds }
            return time > 0 ? flops / time : nil
        }
        let sgemm = results.filter { $0.kernel == "sgemm" }.map(\.gflops).max()
        let peak = results.first { $0.kernel == "fma_peak" }?.gflops
        conv3x3OfSgemm = aggregate("conv3x3").flatMap { conv in sgemm.map { conv / $0 } }
        depthwiseOfPeak = aggregate("depthwise7x7").flatMap { depthwise in peak.map { depthwise / $0 } }
    }
}
