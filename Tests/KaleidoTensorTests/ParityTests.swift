import Foundation
import KaleidoSafeTensors
import Testing
@testable import KaleidoTensor

/// Every kernel's forward and backward against PyTorch, on the fixtures written by
/// tools/fixtures/make_kernel_fixtures.py (channels-last layouts, references computed in float64).
///
/// Tolerance: max |got − ref| ≤ 1e-4 · (1 + max |ref|) per tensor (`Parity.tolerance`); no kernel
/// needs a looser bound. Gradient buffers that a backward adds to start at zero, so it produces the
/// gradient itself; those it writes (the input gradients of linear layers, convolutions,
/// depthwise convolutions, BatchNorm, LayerNorm, layer scale, ReLU and GELU) start as NaN, which
/// any read of them would carry into the result. The upstream gradient is the fixture's random
/// `dout`.
@Suite struct ParityTests {
    let pool = ComputePool(threads: 2)

    /// A mutable copy of fixture tensor `key`.
    func tensor(_ fixture: Fixture, _ key: String) throws -> Tensor {
        Tensor(shape: try fixture.shape(key), values: try fixture.values(key))
    }

    // MARK: - Linear

    @Test func linear() throws {
        let f = try Fixture("linear")
        let rows = try f.int("rows"), ic = try f.int("in_channels"), oc = try f.int("out_channels")
        let input = try f.values("input"), weight = try f.values("weight"), bias = try f.values("bias")
        let output = try f.zeros(like: "output")
        Linear.forward(output: output.pointer, input: input, weight: weight, bias: bias,
                       rows: rows, inChannels: ic, outChannels: oc, pool: pool)
        try f.expectClose(output, "output")

        let dInput = try f.unwritten(like: "input"), dWeight = try f.zeros(like: "weight"), dBias = try f.zeros(like: "bias")
        Linear.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: dBias.pointer,
                        dOutput: try f.values("dout"), input: input, weight: weight,
                        rows: rows, inChannels: ic, outChannels: oc, pool: pool)
        try f.expectClose(dInput, "grad_input")
        try f.expectClose(dWeight, "grad_weight")
        try f.expectClose(dBias, "grad_bias")
    }

    // MARK: - Convolutions

    @Test(arguments: ["conv2d_3x3_s1_p1", "conv2d_3x3_s2_p1_odd", "conv2d_1x1_s2", "conv2d_7x7_s2_p3",
                      "conv2d_5x5_p2_batch1"])
    func conv2d(_ name: String) throws {
        let f = try Fixture(name)
        let shape = Conv2DShape(batch: try f.int("batch"), height: try f.int("height"), width: try f.int("width"),
                                inChannels: try f.int("in_channels"), outChannels: try f.int("out_channels"),
                                kernel: try f.int("kernel"), stride: try f.int("stride"), padding: try f.int("padding"))
        #expect([shape.batch, shape.outHeight, shape.outWidth, shape.outChannels] == (try f.shape("output")))
        let hasBias = f.has("bias")
        let input = try f.values("input"), weight = try f.values("weight")
        let bias = hasBias ? try f.values("bias") : nil
        let workspace = Tensor(zeros: [max(1, shape.workspaceFloats)])
        let output = try f.zeros(like: "output")
        Conv2D.forward(output: output.pointer, input: input, weight: weight, bias: bias,
                       shape: shape, workspace: workspace.pointer, pool: pool)
        try f.expectClose(output, "output")

        let dInput = try f.unwritten(like: "input"), dWeight = try f.zeros(like: "weight")
        let dBias = Tensor(zeros: [shape.outChannels])
        Conv2D.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: hasBias ? dBias.pointer : nil,
                        dOutput: try f.values("dout"), input: input, weight: weight,
                        shape: shape, workspace: workspace.pointer, pool: pool)
        try f.expectClose(dInput, "grad_input")
        try f.expectClose(dWeight, "grad_weight")
        if hasBias { try f.expectClose(dBias, "grad_bias") }
    }

    @Test(arguments: ["depthwise_7x7_s1_p3", "depthwise_3x3_s2_p1"])
    func depthwiseConv2d(_ name: String) throws {
        let f = try Fixture(name)
        let shape = DepthwiseConv2DShape(batch: try f.int("batch"), height: try f.int("height"), width: try f.int("width"),
                                         channels: try f.int("channels"), kernel: try f.int("kernel"),
                                         stride: try f.int("stride"), padding: try f.int("padding"))
        #expect([shape.batch, shape.outHeight, shape.outWidth, shape.channels] == (try f.shape("output")))
        let hasBias = f.has("bias")
        let input = try f.values("input"), weight = try f.values("weight")
        let bias = hasBias ? try f.values("bias") : nil
        let workspace = Tensor(zeros: [max(1, shape.workspaceFloats(threads: pool.threads))])
        let output = try f.zeros(like: "output")
        DepthwiseConv2D.forward(output: output.pointer, input: input, weight: weight, bias: bias, shape: shape,
                                workspace: workspace.pointer, pool: pool)
        try f.expectClose(output, "output")

        let dInput = try f.unwritten(like: "input"), dWeight = try f.zeros(like: "weight")
        let dBias = Tensor(zeros: [shape.channels])
        DepthwiseConv2D.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: hasBias ? dBias.pointer : nil,
                                 dOutput: try f.values("dout"), input: input, weight: weight,
                                 shape: shape, workspace: workspace.pointer, pool: pool)
        try f.expectClose(dInput, "grad_input")
        try f.expectClose(dWeight, "grad_weight")
        if hasBias { try f.expectClose(dBias, "grad_bias") }
    }

    @Test(arguments: ["patch_embed3d_bias", "patch_embed3d_nobias"])
    func patchEmbed3d(_ name: String) throws {
        let f = try Fixture(name)
        let patch = try #require(f.file.metadata["patch"]).split(separator: ",").compactMap { Int($0) }
        let shape = PatchEmbed3DShape(batch: try f.int("batch"), frames: try f.int("frames"), height: try f.int("height"),
                                      width: try f.int("width"), inChannels: try f.int("in_channels"),
                                      outChannels: try f.int("out_channels"),
                                      patchFrames: patch[0], patchHeight: patch[1], patchWidth: patch[2])
        #expect([shape.batch, shape.outFrames, shape.outHeight, shape.outWidth, shape.outChannels] == (try f.shape("output")))
        let hasBias = f.has("bias")
        let input = try f.values("input"), weight = try f.values("weight")
        let bias = hasBias ? try f.values("bias") : nil
        let workspace = Tensor(zeros: [max(1, shape.workspaceFloats)])
        let output = try f.zeros(like: "output")
        PatchEmbed3D.forward(output: output.pointer, input: input, weight: weight, bias: bias,
                             shape: shape, workspace: workspace.pointer, pool: pool)
        try f.expectClose(output, "output")

        let dInput = try f.zeros(like: "input"), dWeight = try f.zeros(like: "weight")
        let dBias = Tensor(zeros: [shape.outChannels])
        PatchEmbed3D.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: hasBias ? dBias.pointer : nil,
                              dOutput: try f.values("dout"), input: input, weight: weight,
                              shape: shape, workspace: workspace.pointer, pool: pool)
        try f.expectClose(dInput, "grad_input")
        try f.expectClose(dWeight, "grad_weight")
        if hasBias { try f.expectClose(dBias, "grad_bias") }
    }

    // MARK: - Normalisation

    @Test func layerNorm() throws {
        let f = try Fixture("layernorm")
        let rows = try f.int("rows"), channels = try f.int("channels")
        let input = try f.values("input"), weight = try f.values("weight"), bias = try f.values("bias")
        let output = try f.zeros(like: "output"), mean = Tensor(zeros: [rows]), rstd = Tensor(zeros: [rows])
        LayerNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: input,
                          weight: weight, bias: bias, rows: rows, channels: channels,
                          epsilon: try f.float("eps"), pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(mean, "mean")
        try f.expectClose(rstd, "rstd")

        let dInput = try f.unwritten(like: "input"), dWeight = try f.zeros(like: "weight"), dBias = try f.zeros(like: "bias")
        LayerNorm.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: dBias.pointer,
                           dOutput: try f.values("dout"), input: input, weight: weight, mean: mean.pointer, rstd: rstd.pointer,
                           rows: rows, channels: channels, pool: pool)
        try f.expectClose(dInput, "grad_input")
        try f.expectClose(dWeight, "grad_weight")
        try f.expectClose(dBias, "grad_bias")
    }

    @Test(arguments: ["batchnorm_train", "batchnorm_eval"])
    func batchNorm(_ name: String) throws {
        let f = try Fixture(name)
        let training = try f.int("training") == 1
        let channels = try f.int("channels")
        let rows = try f.int("batch") * f.int("height") * f.int("width")
        let input = try f.values("input"), weight = try f.values("weight"), bias = try f.values("bias")
        let runningMean = try tensor(f, "running_mean"), runningVariance = try tensor(f, "running_var")
        let output = try f.zeros(like: "output"), mean = Tensor(zeros: [channels]), rstd = Tensor(zeros: [channels])
        BatchNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: input,
                          weight: weight, bias: bias, runningMean: runningMean.pointer,
                          runningVariance: runningVariance.pointer, rows: rows, channels: channels, training: training,
                          momentum: try f.float("momentum"), epsilon: try f.float("eps"), pool: pool)
        try f.expectClose(output, "output")
        if training {
            try f.expectClose(mean, "mean")
            try f.expectClose(rstd, "rstd")
            try f.expectClose(runningMean, "running_mean_out")
            try f.expectClose(runningVariance, "running_var_out")
        } else {
            // Evaluation leaves the running statistics alone.
            try f.expectClose(runningMean, "running_mean", tolerance: 0)
            try f.expectClose(runningVariance, "running_var", tolerance: 0)
        }

        let dInput = try f.unwritten(like: "input"), dWeight = try f.zeros(like: "weight"), dBias = try f.zeros(like: "bias")
        BatchNorm.backward(dInput: dInput.pointer, dWeight: dWeight.pointer, dBias: dBias.pointer,
                           dOutput: try f.values("dout"), input: input, weight: weight, bias: bias,
                           mean: mean.pointer, rstd: rstd.pointer, rows: rows, channels: channels, training: training,
                           pool: pool)
        try f.expectClose(dInput, "grad_input")
        try f.expectClose(dWeight, "grad_weight")
        try f.expectClose(dBias, "grad_bias")
    }

    // MARK: - Activations and softmax

    @Test func gelu() throws {
        let f = try Fixture("gelu")
        let input = try f.values("input")
        let output = try f.zeros(like: "output"), dInput = try f.unwritten(like: "input")
        GELU.forward(output: output.pointer, input: input, count: input.count, pool: pool)
        GELU.backward(dInput: dInput.pointer, dOutput: try f.values("dout"), input: input, count: input.count, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    @Test func relu() throws {
        let f = try Fixture("relu")
        let input = try f.values("input")
        let output = try f.zeros(like: "output"), dInput = try f.unwritten(like: "input")
        ReLU.forward(output: output.pointer, input: input, count: input.count, pool: pool)
        ReLU.backward(dInput: dInput.pointer, dOutput: try f.values("dout"), input: input, count: input.count, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    @Test func softmax() throws {
        let f = try Fixture("softmax")
        let rows = try f.int("rows"), columns = try f.int("columns")
        let output = try f.zeros(like: "output"), dInput = try f.zeros(like: "input")
        Softmax.forward(output: output.pointer, input: try f.values("input"), rows: rows, columns: columns, pool: pool)
        Softmax.backward(dInput: dInput.pointer, dOutput: try f.values("dout"), output: output.pointer,
                         rows: rows, columns: columns, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    @Test func logSoftmax() throws {
        let f = try Fixture("log_softmax")
        let rows = try f.int("rows"), columns = try f.int("columns")
        let output = try f.zeros(like: "output"), dInput = try f.zeros(like: "input")
        LogSoftmax.forward(output: output.pointer, input: try f.values("input"), rows: rows, columns: columns, pool: pool)
        LogSoftmax.backward(dInput: dInput.pointer, dOutput: try f.values("dout"), output: output.pointer,
                            rows: rows, columns: columns, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    // MARK: - Attention

    @Test(arguments: ["attention_bias", "attention_shifted_mask"])
    func attention(_ name: String) throws {
        let f = try Fixture(name)
        let masked = f.has("mask")
        let shape = AttentionShape(batch: try f.int("batch"), heads: try f.int("heads"), tokens: try f.int("tokens"),
                                   headDim: try f.int("head_dim"), maskWindows: masked ? try f.int("windows") : 1)
        // Swin's scale, D^-½.
        let scale = 1 / Float(shape.headDim).squareRoot()
        #expect(abs(scale - (try f.float("scale"))) < 1e-7)
        let qkv = try f.values("qkv"), bias = try f.values("bias")
        let mask = masked ? try f.values("mask") : nil
        let output = try f.zeros(like: "output"), probabilities = Tensor(zeros: [shape.probabilityFloats])
        Attention.forward(output: output.pointer, probabilities: probabilities.pointer, qkv: qkv, bias: bias, mask: mask,
                          shape: shape, scale: scale, pool: pool)
        try f.expectClose(output, "output")

        let dQKV = try f.zeros(like: "qkv"), dBias = try f.zeros(like: "bias")
        let workspace = Tensor(zeros: [shape.workspaceFloats])
        Attention.backward(dQKV: dQKV.pointer, dBias: dBias.pointer, dOutput: try f.values("dout"), qkv: qkv,
                           probabilities: probabilities.pointer, shape: shape, scale: scale,
                           workspace: workspace.pointer, pool: pool)
        try f.expectClose(dQKV, "grad_qkv")
        try f.expectClose(dBias, "grad_bias")
    }

    // MARK: - Pooling

    @Test func maxPool() throws {
        let f = try Fixture("maxpool_3x3_s2_p1")
        let (n, h, w, c) = (try f.int("batch"), try f.int("height"), try f.int("width"), try f.int("channels"))
        let (k, s, p) = (try f.int("kernel"), try f.int("stride"), try f.int("padding"))
        #expect([n, MaxPool2D.outputSize(inputSize: h, kernel: k, stride: s, padding: p),
                 MaxPool2D.outputSize(inputSize: w, kernel: k, stride: s, padding: p), c] == (try f.shape("output")))
        let output = try f.zeros(like: "output"), dInput = try f.zeros(like: "input")
        var argmax = [Int32](repeating: -1, count: output.count)
        MaxPool2D.forward(output: output.pointer, argmax: &argmax, input: try f.values("input"),
                          batch: n, height: h, width: w, channels: c, kernel: k, stride: s, padding: p, pool: pool)
        MaxPool2D.backward(dInput: dInput.pointer, dOutput: try f.values("dout"), argmax: argmax,
                           batch: n, height: h, width: w, channels: c, kernel: k, stride: s, padding: p, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    @Test func avgPool() throws {
        let f = try Fixture("avgpool_2x2_s2")
        let (n, h, w, c) = (try f.int("batch"), try f.int("height"), try f.int("width"), try f.int("channels"))
        let (k, s, p) = (try f.int("kernel"), try f.int("stride"), try f.int("padding"))
        #expect([n, AvgPool2D.outputSize(inputSize: h, kernel: k, stride: s, padding: p),
                 AvgPool2D.outputSize(inputSize: w, kernel: k, stride: s, padding: p), c] == (try f.shape("output")))
        let output = try f.zeros(like: "output"), dInput = try f.zeros(like: "input")
        AvgPool2D.forward(output: output.pointer, input: try f.values("input"),
                          batch: n, height: h, width: w, channels: c, kernel: k, stride: s, padding: p, pool: pool)
        AvgPool2D.backward(dInput: dInput.pointer, dOutput: try f.values("dout"),
                           batch: n, height: h, width: w, channels: c, kernel: k, stride: s, padding: p, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    @Test func globalAvgPool() throws {
        let f = try Fixture("global_avgpool")
        let n = try f.int("batch"), positions = try f.int("height") * f.int("width"), c = try f.int("channels")
        let output = try f.zeros(like: "output"), dInput = try f.zeros(like: "input")
        GlobalAvgPool.forward(output: output.pointer, input: try f.values("input"),
                              batch: n, positions: positions, channels: c, pool: pool)
        GlobalAvgPool.backward(dInput: dInput.pointer, dOutput: try f.values("dout"),
                               batch: n, positions: positions, channels: c, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    // MARK: - Elementwise

    @Test func add() throws {
        let f = try Fixture("add")
        let a = try f.values("a"), b = try f.values("b")
        let output = try f.zeros(like: "output"), dA = try f.zeros(like: "a"), dB = try f.zeros(like: "b")
        Add.forward(output: output.pointer, a: a, b: b, count: a.count, pool: pool)
        Add.backward(dA: dA.pointer, dB: dB.pointer, dOutput: try f.values("dout"), count: a.count, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dA, "grad_a")
        try f.expectClose(dB, "grad_b")
    }

    @Test func layerScale() throws {
        let f = try Fixture("layer_scale")
        let rows = try f.int("rows"), channels = try f.int("channels")
        let input = try f.values("input"), gamma = try f.values("gamma")
        let output = try f.zeros(like: "output"), dInput = try f.unwritten(like: "input"), dGamma = try f.zeros(like: "gamma")
        Scale.forward(output: output.pointer, input: input, scale: gamma, rows: rows, channels: channels, pool: pool)
        Scale.backward(dInput: dInput.pointer, dScale: dGamma.pointer, dOutput: try f.values("dout"), input: input,
                       scale: gamma, rows: rows, channels: channels, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
        try f.expectClose(dGamma, "grad_gamma")
    }

    // MARK: - Loss

    @Test(arguments: ["cross_entropy_hard", "cross_entropy_soft"])
    func crossEntropy(_ name: String) throws {
        let f = try Fixture(name)
        let rows = try f.int("batch"), classes = try f.int("classes"), smoothing = try f.float("label_smoothing")
        let logits = try f.values("logits")
        let probabilities = try f.zeros(like: "logits"), dLogits = try f.zeros(like: "logits")
        let dLoss = try f.values("dout")[0]
        let loss: Float
        if try f.file.entry("target").dtype == .i64 {
            let labels = try f.labels("target")
            loss = labels.withUnsafeBufferPointer { targets in
                CrossEntropy.forward(probabilities: probabilities.pointer, logits: logits,
                                     targets: .classIndices(targets.baseAddress!),
                                     rows: rows, classes: classes, labelSmoothing: smoothing, pool: pool)
            }
            labels.withUnsafeBufferPointer { targets in
                CrossEntropy.backward(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                      targets: .classIndices(targets.baseAddress!), rows: rows, classes: classes,
                                      labelSmoothing: smoothing, scale: dLoss, pool: pool)
            }
        } else {
            let distributions = try f.values("target")
            loss = distributions.withUnsafeBufferPointer { targets in
                CrossEntropy.forward(probabilities: probabilities.pointer, logits: logits,
                                     targets: .distributions(targets.baseAddress!),
                                     rows: rows, classes: classes, labelSmoothing: smoothing, pool: pool)
            }
            distributions.withUnsafeBufferPointer { targets in
                CrossEntropy.backward(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                      targets: .distributions(targets.baseAddress!), rows: rows, classes: classes,
                                      labelSmoothing: smoothing, scale: dLoss, pool: pool)
            }
        }
        try f.expectClose([loss], "output")
        try f.expectClose(dLogits, "grad_logits")
    }

    // MARK: - Similarity

    @Test func l2Normalize() throws {
        let f = try Fixture("l2_normalize")
        let rows = try f.int("rows"), columns = try f.int("columns"), eps = try f.float("eps")
        let output = try f.zeros(like: "output"), norms = Tensor(zeros: [rows]), dInput = try f.zeros(like: "input")
        L2Normalize.forward(output: output.pointer, norms: norms.pointer, input: try f.values("input"),
                            rows: rows, columns: columns, epsilon: eps, pool: pool)
        L2Normalize.backward(dInput: dInput.pointer, dOutput: try f.values("dout"), output: output.pointer,
                             norms: norms.pointer, rows: rows, columns: columns, epsilon: eps, pool: pool)
        try f.expectClose(output, "output")
        try f.expectClose(dInput, "grad_input")
    }

    @Test func cosineSimilarityMatrix() throws {
        let f = try Fixture("cosine_similarity_matrix")
        let m = try f.int("rows_a"), n = try f.int("rows_b"), d = try f.int("dim")
        let similarity = try f.zeros(like: "output")
        let normalizedA = Tensor(zeros: [m, d]), normsA = Tensor(zeros: [m])
        let normalizedB = Tensor(zeros: [n, d]), normsB = Tensor(zeros: [n])
        CosineSimilarityMatrix.forward(similarity: similarity.pointer, normalizedA: normalizedA.pointer, normsA: normsA.pointer,
                                       normalizedB: normalizedB.pointer, normsB: normsB.pointer,
                                       a: try f.values("a"), b: try f.values("b"), rowsA: m, rowsB: n, dimension: d, pool: pool)
        try f.expectClose(similarity, "output")

        let dA = try f.zeros(like: "a"), dB = try f.zeros(like: "b")
        CosineSimilarityMatrix.backward(dA: dA.pointer, dB: dB.pointer, dSimilarity: try f.values("dout"),
                                        normalizedA: normalizedA.pointer, normsA: normsA.pointer,
                                        normalizedB: normalizedB.pointer, normsB: normsB.pointer,
                                        rowsA: m, rowsB: n, dimension: d, pool: pool)
        try f.expectClose(dA, "grad_a")
        try f.expectClose(dB, "grad_b")
    }
}
