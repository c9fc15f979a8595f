import Foundation
import Testing
import KaleidoTensor
@testable import KaleidoNN

@Suite struct ConvNeXtTests {
    /// A two-stage ConvNeXt small enough for finite differences: 8×8 input, 2×2 stem, widths 8
    /// and 16, one block per stage.
    static func tiny(convMLP: Bool = false, dropPath: Float = 0, classes: Int = 3) -> ConvNeXt.Config {
        var config = ConvNeXt.Config(depths: [1, 1], dims: [8, 16], stemPatch: 2, convMLP: convMLP, layerScaleInit: 0.5,
                                     classes: classes)
        config.dropPath = dropPath
        return config
    }

    static func build(_ config: ConvNeXt.Config, seed: UInt64 = 1) -> (Sequential, ParameterArena, ParameterBuilder) {
        let builder = ParameterBuilder()
        let network = ConvNeXt.make(config, builder)
        return (network, builder.makeArena(seed: seed), builder)
    }

    static func trainable(_ config: ConvNeXt.Config) -> Int {
        let builder = ParameterBuilder()
        _ = ConvNeXt.make(config, builder)
        return builder.specs.filter { $0.role.isTrainable }.reduce(0) { $0 + $1.count }
    }

    /// Moves every trainable value away from its initial value (0.02-std weights, γ = 1e-6,
    /// unit LayerNorm scales, zero biases), so every term of the backward pass carries weight
    /// in the finite-difference check instead of hiding under its absolute tolerance.
    static func randomize(_ arena: ParameterArena, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for entry in arena.entries where entry.spec.role.isTrainable {
            let p = arena.values.pointer + entry.offset
            // Decayed entries are conv and linear weights; of the rest, `weight` and `gamma` scale.
            let isScale = entry.spec.name.hasSuffix("weight") || entry.spec.name.hasSuffix("gamma")
            for i in 0..<entry.count {
                switch entry.spec.role {
                case .weight: p[i] = rng.normal() * 0.3
                default: p[i] = isScale ? 1 + 0.2 * rng.normal() : 0.1 * rng.normal()
                }
            }
        }
    }

    /// Every `DropPathLayer` of a network, in forward order.
    static func dropPathProbabilities(_ layer: Layer) -> [Float] {
        switch layer {
        case let drop as DropPathLayer: return [drop.probability]
        case let sequential as Sequential: return sequential.layers.flatMap(dropPathProbabilities)
        case let residual as Residual: return dropPathProbabilities(residual.branch)
        default: return []
        }
    }

    // MARK: - Parameter counts and names

    /// timm 1.0 `convnext_*`: sum of `p.numel()` with num_classes=1000 and with num_classes=0
    /// (printed by tools/fixtures/make_name_lists.py). Isotropic: the official repository's models.
    static let timmCounts: [(ConvNeXt.Config, withHead: Int, features: Int)] = [
        (.atto, 3_695_520, 3_374_520), (.femto, 5_217_784, 4_832_784), (.pico, 9_045_672, 8_532_672),
        (.nano, 15_593_560, 14_952_560), (.tiny, 28_589_128, 27_820_128), (.small, 50_223_688, 49_454_688),
        (.base, 88_591_464, 87_566_464), (.large, 197_767_336, 196_230_336), (.xlarge, 350_196_968, 348_147_968),
        (.isotropicSmall, 22_308_712, 22_308_712 - 385_000), (.isotropicBase, 87_083_752, 87_083_752 - 769_000),
        (.isotropicLarge, 305_905_640, 305_905_640 - 1_025_000),
    ]

    @Test func parameterCountsMatchTheReferences() {
        for (preset, withHead, features) in Self.timmCounts {
            var config = preset
            config.classes = 1000
            #expect(Self.trainable(config) == withHead, "\(config.dims) × \(config.depths) with 1000 classes")
            config.classes = 0
            #expect(Self.trainable(config) == features, "\(config.dims) × \(config.depths) without a classifier")
        }
        // The figures the issue names.
        var tiny = ConvNeXt.Config.tiny, base = ConvNeXt.Config.base
        tiny.classes = 1000
        base.classes = 1000
        #expect(Self.trainable(tiny) == 28_589_128)
        #expect(Self.trainable(base) == 88_591_464)
        #expect(ConvNeXt.presets.count == 12)
    }

    /// timm's `convnext_atto` state dict, names in order with PyTorch shapes, from the fixture
    /// written by tools/fixtures/make_name_lists.py.
    static func timmAttoStateDict() throws -> [String] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/convnext_atto_state_dict.txt")
        return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    static func kaleidoStateDict(_ config: ConvNeXt.Config) -> [String] {
        let builder = ParameterBuilder()
        _ = ConvNeXt.make(config, builder)
        return builder.specs.map { "\($0.name) \($0.torchShape.map(String.init).joined(separator: ","))" }
    }

    /// The same entries as timm; the order differs only in `gamma`, which PyTorch lists first in
    /// a block and Kaleido registers where it runs, last (see `registrationOrderIsExecutionOrder`).
    @Test func attoNamesAndShapesEqualTimmStateDict() throws {
        let expected = try Self.timmAttoStateDict()
        #expect(expected.count == 128)
        var config = ConvNeXt.Config.atto
        config.classes = 1000
        let entries = Self.kaleidoStateDict(config)
        #expect(entries.sorted() == expected.sorted())
        #expect(entries.filter { !$0.contains("gamma") } == expected.filter { !$0.contains("gamma") })
        // num_classes=0 in timm drops head.fc and keeps head.norm.
        config.classes = 0
        #expect(Self.kaleidoStateDict(config).sorted() == expected.filter { !$0.hasPrefix("head.fc.") }.sorted())
    }

    /// The bucketed all-reduce starts on gradients at offsets ≥ o when `gradientsFinal(o)` is
    /// called; that is only sound if parameters are registered in the order they run.
    @Test func gradientsAnnouncedFinalDoNotChangeAfterwards() {
        let config = ConvNeXt.Config(depths: [1, 2], dims: [8, 16], stemPatch: 2, layerScaleInit: 0.5, classes: 3)
        let (network, arena, _) = Self.build(config)
        let context = RunContext(arena: arena, pool: .serial, training: true)
        var rng = SplitMix64(seed: 14)
        let output = network.forward(Tensor(randomNormal: [2, 8, 8, 3], rng: &rng), context)
        var snapshots: [(offset: Int, values: [Float])] = []
        context.gradientsFinal = { offset in
            snapshots.append((offset, Array(UnsafeBufferPointer(start: arena.gradients.pointer + offset, count: arena.count - offset))))
        }
        arena.zeroGradients()
        _ = network.backward(Tensor(randomNormal: output.shape, rng: &rng), context)
        #expect(snapshots.count > 10)
        #expect(snapshots.last?.offset == 0, "the stem's weights are the arena's first entry")
        for (offset, values) in snapshots {
            let final = Array(UnsafeBufferPointer(start: arena.gradients.pointer + offset, count: arena.count - offset))
            let changed = zip(values, final).filter { $0 != $1 }.count
            #expect(changed == 0, "\(changed) gradients from offset \(offset) changed after being announced final")
        }
    }

    @Test func largeModelsUseLinearMLPWeights() {
        var config = ConvNeXt.Config.tiny
        config.classes = 1000
        let entries = Self.kaleidoStateDict(config)
        #expect(entries.contains("stages.0.blocks.0.mlp.fc1.weight 384,96"))
        #expect(entries.contains("stages.2.blocks.8.conv_dw.weight 384,1,7,7"))
        #expect(entries.contains("stages.3.downsample.1.weight 768,384,2,2"))
        #expect(entries.contains("head.fc.weight 1000,768"))
        #expect(!entries.contains { $0.hasPrefix("stages.0.downsample") }, "the first stage follows the stem directly")
    }

    @Test func isotropicFollowsTheOfficialNames() {
        var config = ConvNeXt.Config(kind: .isotropic, depths: [2], dims: [8], layerScaleInit: 1e-6, classes: 5)
        config.dropPath = 0.1
        let entries = Self.kaleidoStateDict(config)
        // As printed for the official module by tools/fixtures/make_name_lists.py (depth 1).
        // Kaleido registers gamma last in a block; PyTorch lists it first.
        #expect(entries.prefix(13) == ["stem.weight 8,3,16,16", "stem.bias 8",
                                       "blocks.0.dwconv.weight 8,1,7,7", "blocks.0.dwconv.bias 8",
                                       "blocks.0.norm.weight 8", "blocks.0.norm.bias 8",
                                       "blocks.0.pwconv1.weight 32,8", "blocks.0.pwconv1.bias 32",
                                       "blocks.0.pwconv2.weight 8,32", "blocks.0.pwconv2.bias 8", "blocks.0.gamma 8",
                                       "blocks.1.dwconv.weight 8,1,7,7", "blocks.1.dwconv.bias 8"])
        #expect(entries.suffix(4) == ["norm.weight 8", "norm.bias 8", "head.weight 5,8", "head.bias 5"])
        #expect(!Self.kaleidoStateDict(.isotropicSmall).contains { $0.contains("gamma") }, "official presets have no layer scale")
    }

    // MARK: - Initialisation

    @Test func initialisationFollowsTimm() {
        var config = ConvNeXt.Config.atto
        config.classes = 10
        let (_, arena, builder) = Self.build(config)
        #expect(arena.tensor(named: "stages.1.blocks.0.gamma")!.array.allSatisfy { $0 == 1e-6 })
        for spec in builder.specs {
            let values = arena.tensor(named: spec.name)!.array
            switch spec.role {
            case .weight:
                #expect(values.allSatisfy { abs($0) <= 0.04 }, "\(spec.name): truncated at 2 std")
                let std = (values.reduce(0) { $0 + Double($1 * $1) } / Double(values.count)).squareRoot()
                if values.count >= 1000 { #expect(abs(std - 0.0176) < 0.002, "\(spec.name): std \(std)") }
            case .noDecay where spec.name.hasSuffix("bias"):
                #expect(values.allSatisfy { $0 == 0 }, "\(spec.name) starts at zero")
            default: break
            }
        }
        #expect(builder.specs.first { $0.name == "stages.0.blocks.0.gamma" }?.role == .noDecay)
        #expect(builder.specs.first { $0.name == "stages.0.blocks.0.conv_dw.weight" }?.layout == .depthwise)

        config.headInitScale = 0
        let (_, silent, _) = Self.build(config)
        #expect(silent.tensor(named: "head.fc.weight")!.array.allSatisfy { $0 == 0 })
    }

    // MARK: - Gradients

    /// ConvNeXt is smooth (GELU, LayerNorm, no ReLU or max-pool kinks), so no coordinate may
    /// miss; many parameter samples so that each of the tiny models' ~20 arrays is hit often.
    static let gradientCheck = ModelGradientCheck(inputSamples: 16, parameterSamples: 160, allowedOutliers: 0)

    @Test(arguments: [false, true])
    func wholeModelBackwardMatchesFiniteDifferences(convMLP: Bool) {
        let (network, arena, _) = Self.build(Self.tiny(convMLP: convMLP))
        Self.randomize(arena, seed: 3)
        var rng = SplitMix64(seed: 5)
        let input = Tensor(randomNormal: [2, 8, 8, 3], rng: &rng)
        Self.gradientCheck.run(network: network, arena: arena, input: input)
    }

    @Test func isotropicBackwardMatchesFiniteDifferences() {
        let config = ConvNeXt.Config(kind: .isotropic, depths: [2], dims: [8], stemPatch: 2, layerScaleInit: 0.5, classes: 3)
        let (network, arena, _) = Self.build(config)
        Self.randomize(arena, seed: 4)
        var rng = SplitMix64(seed: 6)
        let input = Tensor(randomNormal: [2, 8, 8, 3], rng: &rng)
        Self.gradientCheck.run(network: network, arena: arena, input: input)
    }

    // MARK: - Shapes

    @Test func attoWithATwoPixelStemOnThirtyTwoPixelInputs() {
        var config = ConvNeXt.Config.atto
        config.stemPatch = 2
        let (network, arena, builder) = Self.build(config)
        #expect(builder.specs.first { $0.name == "stem.0.weight" }?.torchShape == [40, 3, 2, 2])
        let description = network.describe([2, 32, 32, 3])
        #expect(description.children.map(\.outputShape) == [[2, 16, 16, 40], [2, 16, 16, 40], [2, 8, 8, 80],
                                                              [2, 4, 4, 160], [2, 2, 2, 320], [2, 320]])
        #expect(config.totalStride == 16)
        let context = RunContext(arena: arena, pool: .serial, training: false, recordsForBackward: false)
        var rng = SplitMix64(seed: 7)
        let output = network.forward(Tensor(randomNormal: [2, 32, 32, 3], rng: &rng), context)
        #expect(output.shape == [2, config.featureDimension])
        #expect(output.array.allSatisfy { $0.isFinite })
    }

    /// `model.base_width` narrows every stage, and the zoo reports the narrowed feature width
    /// (it once reported the preset's, and the projector after it expected 320 features).
    @Test func zooReportsTheFeatureWidthOfANarrowedConvNeXt() throws {
        for name in ["convnext-atto", "convnext-atto-32"] {
            let builder = ParameterBuilder()
            let built = try ModelZoo.make(name, options: ModelOptions(baseWidth: 16), builder: builder)
            #expect(built.featureDimension == 128, "\(name)")
            let arena = builder.makeArena(seed: 1)
            let context = RunContext(arena: arena, pool: .serial, training: false, recordsForBackward: false)
            #expect(built.network.forward(Tensor(zeros: [1, 32, 32, 3]), context).shape == [1, built.featureDimension], "\(name)")
        }
    }

    @Test func classifierAndIsotropicShapes() {
        var config = Self.tiny(classes: 10)
        let context = { (arena: ParameterArena) in RunContext(arena: arena, pool: .serial, training: false, recordsForBackward: false) }
        var (network, arena, _) = Self.build(config)
        #expect(network.forward(Tensor(zeros: [3, 16, 16, 3]), context(arena)).shape == [3, 10])
        config.classes = 0
        (network, arena, _) = Self.build(config)
        #expect(network.forward(Tensor(zeros: [3, 16, 16, 3]), context(arena)).shape == [3, 16])

        let isotropic = ConvNeXt.Config(kind: .isotropic, depths: [2], dims: [8], stemPatch: 4)
        (network, arena, _) = Self.build(isotropic)
        #expect(network.describe([1, 16, 16, 3]).children[0].outputShape == [1, 4, 4, 8])
        #expect(network.forward(Tensor(zeros: [1, 16, 16, 3]), context(arena)).shape == [1, 8])
        #expect(ConvNeXt.Config.isotropicBase.featureDimension == 768 && ConvNeXt.Config.isotropicBase.stemPatch == 16)
    }

    @Test func threadedForwardEqualsSerial() {
        let (network, arena, _) = Self.build(Self.tiny())
        Self.randomize(arena, seed: 8)
        var rng = SplitMix64(seed: 9)
        let input = Tensor(randomNormal: [4, 16, 16, 3], rng: &rng)
        let serial = network.forward(input, RunContext(arena: arena, pool: .serial, training: false, recordsForBackward: false)).array
        let threaded = network.forward(input, RunContext(arena: arena, pool: ComputePool(threads: 2), training: false,
                                                         recordsForBackward: false)).array
        #expect(zip(serial, threaded).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) })
    }

    // MARK: - Stochastic depth

    @Test func dropPathRatesRiseLinearlyOverAllBlocks() {
        func close(_ a: [Float], _ b: [Float]) -> Bool { a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) < 1e-6 } }
        #expect(close(ConvNeXt.dropPathRates(0.4, blocks: 5), [0, 0.1, 0.2, 0.3, 0.4]))
        #expect(ConvNeXt.dropPathRates(0.4, blocks: 1) == [0])
        var config = ConvNeXt.Config(depths: [2, 1, 2], dims: [8, 8, 8], stemPatch: 2)
        config.dropPath = 0.2
        // Block 0 has rate 0 and gets no layer, as timm's nn.Identity.
        let probabilities = Self.dropPathProbabilities(ConvNeXt.make(config, ParameterBuilder()))
        #expect(close(probabilities, [0.05, 0.1, 0.15, 0.2]))
    }

    @Test func dropPathChangesTrainingOutputAndIsIdentityInEvaluation() {
        let (plain, arena, _) = Self.build(Self.tiny())
        let (dropping, _, _) = Self.build(Self.tiny(dropPath: 0.5))
        Self.randomize(arena, seed: 10)
        var rng = SplitMix64(seed: 11)
        let input = Tensor(randomNormal: [8, 8, 8, 3], rng: &rng)
        func run(_ network: Layer, training: Bool, seed: UInt64) -> [Float] {
            network.forward(input, RunContext(arena: arena, pool: .serial, training: training, recordsForBackward: false, seed: seed)).array
        }
        let reference = run(plain, training: true, seed: 0)
        #expect(run(dropping, training: false, seed: 0) == run(plain, training: false, seed: 0))
        #expect(run(dropping, training: true, seed: 1) != reference)
        #expect(run(dropping, training: true, seed: 1) == run(dropping, training: true, seed: 1), "same seed, same masks")
    }

    @Test func trainingBackwardThroughDropPathMatchesFiniteDifferences() {
        // A fixed seed gives every forward of the check the same masks, so the loss is smooth.
        final class Reseeded: Layer {
            let inner: Layer
            init(_ inner: Layer) { self.inner = inner }
            func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
                context.rng = SplitMix64(seed: 21)
                return inner.forward(input, context)
            }
            func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor { inner.backward(dOutput, context) }
            func describe(_ inputShape: [Int]) -> LayerDescription { inner.describe(inputShape) }
        }
        let (network, arena, _) = Self.build(Self.tiny(dropPath: 0.5))
        Self.randomize(arena, seed: 12)
        var rng = SplitMix64(seed: 13)
        let input = Tensor(randomNormal: [4, 8, 8, 3], rng: &rng)
        Self.gradientCheck.run(network: Reseeded(network), arena: arena, input: input)
    }
}
