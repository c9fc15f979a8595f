import Testing
import KaleidoTensor
@testable import KaleidoNN

@Suite struct ResNetTests {
    func tiny(_ block: ResNet.BlockKind, cifarStem: Bool) -> (Sequential, ParameterArena) {
        var config = ResNet.Config(block: block, layers: [1, 1], cifarStem: cifarStem)
        config.width = 4
        config.classes = 3
        let builder = ParameterBuilder()
        let network = ResNet.make(config, builder)
        return (network, builder.makeArena(seed: 1))
    }

    @Test(arguments: [(ResNet.BlockKind.basic, true), (.bottleneck, false)])
    func wholeModelBackwardMatchesFiniteDifferences(block: ResNet.BlockKind, cifarStem: Bool) {
        let (network, arena) = tiny(block, cifarStem: cifarStem)
        var rng = SplitMix64(seed: 5)
        let input = Tensor(randomNormal: [2, 8, 8, 3], rng: &rng)
        ModelGradientCheck().run(network: network, arena: arena, input: input)
    }

    @Test func namesFollowTorchvision() {
        var config = ResNet.Config.resnet18
        config.classes = 10
        let builder = ParameterBuilder()
        _ = ResNet.make(config, builder)
        let names = Set(builder.specs.map(\.name))
        for name in ["conv1.weight", "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                     "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.bn2.bias",
                     "fc.weight", "fc.bias"] {
            #expect(names.contains(name), "missing \(name)")
        }
        #expect(!names.contains("layer1.0.downsample.0.weight"), "the first stage keeps its width: no downsample")
        #expect(builder.specs.first { $0.name == "conv1.weight" }?.torchShape == [64, 3, 7, 7])
    }

    @Test func zeroInitResidualStartsBlocksAsIdentity() {
        var config = ResNet.Config.resnet18
        config.zeroInitResidual = true
        let arena = { let b = ParameterBuilder(); _ = ResNet.make(config, b); return b.makeArena(seed: 0) }()
        #expect(arena.tensor(named: "layer1.0.bn2.weight")!.array.allSatisfy { $0 == 0 })
        #expect(arena.tensor(named: "layer1.0.bn1.weight")!.array.allSatisfy { $0 == 1 })
    }

    @Test func featureShapesForBothStems() {
        for cifar in [true, false] {
            var config = ResNet.Config.resnet18
            config.cifarStem = cifar
            config.width = 8
            let builder = ParameterBuilder()
            let network = ResNet.make(config, builder)
            let context = RunContext(arena: builder.makeArena(seed: 0), pool: .serial, training: false, recordsForBackward: false)
            let out = network.forward(Tensor(zeros: [2, 32, 32, 3]), context)
            #expect(out.shape == [2, config.featureDimension])
            #expect(network.describe([2, 32, 32, 3]).outputShape == [2, 64])
        }
    }

    @Test func trainingForwardUpdatesRunningStatisticsAndCountsBatches() {
        let (network, arena) = tiny(.basic, cifarStem: true)
        var rng = SplitMix64(seed: 2)
        let context = RunContext(arena: arena, pool: .serial, training: true, recordsForBackward: false)
        _ = network.forward(Tensor(randomNormal: [4, 8, 8, 3], rng: &rng), context)
        #expect(arena.tensor(named: "bn1.num_batches_tracked")!.array == [1])
        #expect(arena.tensor(named: "bn1.running_mean")!.array.contains { $0 != 0 })
    }

    /// Backward on the gradient scratch stack (memory released child by child) computes exactly
    /// what backward computes with every gradient kept.
    @Test func backwardOnTheScratchStackGivesTheSameGradients() {
        let (network, arena) = tiny(.bottleneck, cifarStem: false)
        var rng = SplitMix64(seed: 8)
        let input = Tensor(randomNormal: [3, 16, 16, 3], rng: &rng)
        func gradients(stack: Bool) -> (input: [Float], parameters: [Float], scratchFloats: Int) {
            let context = RunContext(arena: arena, pool: .serial, training: true)
            let out = network.forward(input, context)
            var weights = SplitMix64(seed: 9)
            let dOut = Tensor(randomNormal: out.shape, rng: &weights)
            arena.zeroGradients()
            let dInput = stack ? context.backward { network.backward(dOut, context) } : network.backward(dOut, context)
            return (dInput.array, Array(UnsafeBufferPointer(start: arena.gradients.pointer, count: arena.count)),
                    context.gradientScratch.capacity)
        }
        let kept = gradients(stack: false), stacked = gradients(stack: true)
        #expect(kept.input == stacked.input)
        #expect(kept.parameters == stacked.parameters)
    }
}
