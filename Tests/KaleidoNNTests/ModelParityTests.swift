import Foundation
import KaleidoCheckpoint
import KaleidoSafeTensors
import KaleidoTensor
import Testing
@testable import KaleidoNN

/// Whole models against torchvision and timm on the same weights, from the fixtures written by
/// tools/fixtures/make_model_fixtures.py: `<model>.safetensors` is the PyTorch state dict and
/// `<model>_io.safetensors` the input, outputs, upstream gradient and gradients (see the script).
///
/// For each model: the state dict loads into a freshly built arena strictly (no missing or
/// unexpected key, every shape equal), the arena exports back to the same tensors byte for byte,
/// and the forward (eval and train), the running statistics after a train forward, and the
/// backward (input and every parameter gradient) agree with PyTorch to
/// max |got − ref| ≤ 1e-4 · (1 + max |ref|) per tensor — the issue's 1e-4 relative bar — and,
/// because gradients can be small (ConvNeXt's and Swin's input gradients are ~1e-3 here, where
/// that bar alone would allow a 10 % error), also ≤ 1e-3 · max |ref| + 1e-7. The references are
/// float64 results rounded to float32; the largest error seen, 2e-4 of the scale, is the stem
/// BatchNorm's bias gradient of the bottleneck ResNet, a sum of ~1000 float32 terms that cancel.
@Suite struct ModelParityTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let tolerance = 1e-4

    /// The Kaleido model of each fixture, configured as the script configures the reference.
    static func build(_ name: String, _ builder: ParameterBuilder) -> Layer {
        func resnet(_ block: ResNet.BlockKind, width: Int, cifarStem: Bool) -> Layer {
            var config = ResNet.Config(block: block, layers: [1, 1, 1, 1], cifarStem: cifarStem)
            config.width = width
            config.classes = 5
            return ResNet.make(config, builder)
        }
        func swin(window: [Int], patch: [Int], embed: Int = 8, heads: [Int] = [1, 2]) -> Layer {
            var config = SwinTransformer3D.Config(embedDimension: embed, depths: [2, 2], heads: heads, window: window, patch: patch)
            config.classes = 5
            return SwinTransformer3D.make(config, builder)
        }
        switch name {
        case "resnet_basic_cifar": return resnet(.basic, width: 6, cifarStem: true)
        case "resnet_bottleneck": return resnet(.bottleneck, width: 3, cifarStem: false)
        case "convnext_tiny_linear":
            return ConvNeXt.make(ConvNeXt.Config(depths: [1, 1, 2, 1], dims: [8, 16, 24, 32], stemPatch: 2, classes: 5), builder)
        case "convnext_tiny_convmlp":
            return ConvNeXt.make(ConvNeXt.Config(depths: [1, 1, 1, 1], dims: [6, 12, 18, 24], stemPatch: 2, convMLP: true,
                                                 classes: 5), builder)
        case "swin3d_tiny": return swin(window: [2, 2, 2], patch: [2, 2, 2])
        case "swin2d_tiny": return swin(window: [1, 3, 3], patch: [1, 2, 2])
        case "swin_cifar_heads16": return swin(window: [2, 4, 4], patch: [2, 2, 2], embed: 32, heads: [2, 4])
        default: preconditionFailure("no model for fixture \(name)")
        }
    }

    static let models = ["resnet_basic_cifar", "resnet_bottleneck", "convnext_tiny_linear", "convnext_tiny_convmlp",
                         "swin3d_tiny", "swin2d_tiny", "swin_cifar_heads16"]

    /// The model with the fixture's weights imported strictly, the state dict file, and the test case.
    func load(_ name: String) throws -> (network: Layer, arena: ParameterArena, state: SafeTensorsFile, io: SafeTensorsFile) {
        let builder = ParameterBuilder()
        let network = Self.build(name, builder)
        let arena = builder.makeArena(seed: 0)
        let state = try SafeTensorsFile(contentsOf: Self.directory.appendingPathComponent("\(name).safetensors"))
        let io = try SafeTensorsFile(contentsOf: Self.directory.appendingPathComponent("\(name)_io.safetensors"))
        let report = try ArenaSafeTensors.load(state, into: arena)
        #expect(report.isComplete && report.loaded.count == arena.entries.count)
        return (network, arena, state, io)
    }

    func tensor(_ file: SafeTensorsFile, _ key: String) throws -> Tensor {
        let (shape, values) = try file.floats(key)
        return Tensor(shape: shape, values: values)
    }

    /// Compares `got` with `key` of the fixture; returns the error over its allowance (≤ 1 passes).
    @discardableResult
    func expectClose(_ got: [Float], _ file: SafeTensorsFile, _ key: String, _ model: String,
                     sourceLocation: SourceLocation = #_sourceLocation) throws -> Double {
        let reference = try file.floats(key).values
        guard got.count == reference.count else {
            Issue.record("\(model).\(key): \(got.count) values, reference has \(reference.count)", sourceLocation: sourceLocation)
            return .infinity
        }
        var worst = 0.0, worstIndex = 0, scale = 0.0
        for (i, (g, r)) in zip(got, reference).enumerated() {
            scale = max(scale, abs(Double(r)))
            let error = abs(Double(g) - Double(r))
            if !(error <= worst) { worst = error.isNaN ? .infinity : error; worstIndex = i }
        }
        let allowed = min(Self.tolerance * (1 + scale), 1e-3 * scale + 1e-7)
        #expect(worst <= allowed, "\(model).\(key): max |error| \(worst) at [\(worstIndex)] (got \(got[worstIndex]), expected \(reference[worstIndex])), allowed \(allowed)",
                sourceLocation: sourceLocation)
        if ProcessInfo.processInfo.environment["KALEIDO_PARITY_VERBOSE"] != nil {
            print("parity \(model).\(key): max |error| \(worst), max |ref| \(scale), relative \(worst / (1 + scale))")
        }
        return worst / allowed
    }

    // MARK: - Import and export

    @Test(arguments: models)
    func stateDictLoadsStrictlyAndExportsBackUnchanged(_ name: String) throws {
        let (_, arena, state, _) = try load(name)
        // Names and PyTorch shapes of the arena are the state dict's: the strict-load condition.
        #expect(arena.entries.map(\.spec.name).sorted() == state.names)
        for entry in arena.entries {
            #expect(entry.spec.torchShape == (try state.entry(entry.spec.name).shape), "\(name): \(entry.spec.name)")
        }
        let exported = try SafeTensorsFile(bytes: Data(ArenaSafeTensors.writer(for: arena).serialized()), source: "export")
        #expect(exported.names == state.names)
        for key in state.names {
            let original = try state.entry(key), again = try exported.entry(key)
            #expect(again.dtype == original.dtype && again.shape == original.shape, "\(name): \(key)")
            #expect(try exported.rawBytes(key) == state.rawBytes(key), "\(name): \(key) differs after import and export")
        }
    }

    // MARK: - Forward and backward

    @Test(arguments: models)
    func forwardAndBackwardMatchPyTorch(_ name: String) throws {
        let (network, arena, _, io) = try load(name)
        let input = try tensor(io, "input")
        let pool = ComputePool(threads: 2)

        let evaluation = RunContext(arena: arena, pool: pool, training: false, recordsForBackward: false)
        try expectClose(network.forward(input, evaluation).array, io, "output_eval", name)

        // One training step's forward and backward (batch statistics; running statistics move).
        let training = RunContext(arena: arena, pool: pool, training: true)
        let output = network.forward(input, training)
        let hasBatchNorm = io.tensors["output_train"] != nil
        try expectClose(output.array, io, hasBatchNorm ? "output_train" : "output_eval", name)
        for key in io.names where key.hasPrefix("train_state.") {
            let parameter = String(key.dropFirst("train_state.".count))
            try expectClose(arena.tensor(named: parameter)!.array, io, key, name)
        }

        arena.zeroGradients()
        let dInput = network.backward(try tensor(io, "dout"), training)
        try expectClose(dInput.array, io, "grad_input", name)

        // Parameter gradients in PyTorch's layout: export an arena whose values are the gradients.
        let gradients = arena.copy()
        gradients.values.pointer.update(from: arena.gradients.pointer, count: arena.count)
        let exported = try SafeTensorsFile(bytes: Data(ArenaSafeTensors.writer(for: gradients).serialized()), source: "gradients")
        let trainable = arena.entries.filter { $0.spec.role.isTrainable }.map(\.spec.name)
        #expect(Set(io.names.filter { $0.hasPrefix("grad.") }.map { String($0.dropFirst(5)) }) == Set(trainable))
        for parameter in trainable {
            try expectClose(try exported.floats(parameter).values, io, "grad.\(parameter)", name)
        }
    }

    /// Exports for tools/fixtures/check_torch_load.py, when asked:
    /// `KALEIDO_EXPORT_DIR=/tmp/x swift test --filter ModelParity` writes `<model>.safetensors`
    /// from a Kaleido arena of each fixture model (its own initialisation, after one train-mode
    /// forward so BatchNorm statistics and counters have moved) and of full-size references:
    /// `resnet50` (torchvision, 1000 classes), `convnext_atto` (timm, 1000 classes) and
    /// `swin3d_t` (torchvision, 400 classes).
    @Test func exportForTorchWhenAsked() throws {
        guard let directory = ProcessInfo.processInfo.environment["KALEIDO_EXPORT_DIR"] else { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func export(_ arena: ParameterArena, _ name: String) throws {
            try ArenaSafeTensors.export(arena, to: URL(fileURLWithPath: directory).appendingPathComponent("\(name).safetensors"),
                                        metadata: ["producer": "kaleido", "model": name])
        }
        for name in Self.models {
            let builder = ParameterBuilder()
            let network = Self.build(name, builder)
            let arena = builder.makeArena(seed: 3)
            let context = RunContext(arena: arena, pool: .serial, training: true, recordsForBackward: false)
            let io = try SafeTensorsFile(contentsOf: Self.directory.appendingPathComponent("\(name)_io.safetensors"))
            _ = network.forward(try tensor(io, "input"), context)
            try export(arena, name)
        }
        var resnet50 = ResNet.Config.resnet50
        resnet50.classes = 1000
        var atto = ConvNeXt.Config.atto
        atto.classes = 1000
        var swin3d = SwinTransformer3D.Config.tiny
        swin3d.classes = 400
        let references: [(String, (ParameterBuilder) -> Void)] = [
            ("resnet50", { _ = ResNet.make(resnet50, $0) }),
            ("convnext_atto", { _ = ConvNeXt.make(atto, $0) }),
            ("swin3d_t", { _ = SwinTransformer3D.make(swin3d, $0) }),
        ]
        for (name, make) in references {
            let builder = ParameterBuilder()
            make(builder)
            try export(builder.makeArena(seed: 3), name)
        }
    }
}
