import Testing
import KaleidoTensor
@testable import KaleidoNN

/// `backward(consuming:)` lets an element-wise layer write its input gradient over the gradient
/// it was given (a `Sequential` hands each child but the first a gradient it owns); `backward(_:)`
/// must leave that gradient as it was. Both must give the same bits, for the input gradient and
/// for every parameter gradient.
@Suite struct ConsumingBackwardTests {
    static let cases = ["batch norm", "batch norm + relu", "gelu", "relu", "layer norm", "layer scale", "drop path",
                        "residual", "residual + relu", "residual downsampling + relu", "residual with its norm + relu",
                        "residual with its norm downsampling + relu", "sequential"]

    func make(_ name: String, _ b: ParameterBuilder) -> (layer: Layer, inputShape: [Int]) {
        let shape = [4, 6, 6, 8]
        func conv(_ name: String, _ inChannels: Int, _ outChannels: Int, kernel: Int = 3, stride: Int = 1) -> Layer {
            Conv2dLayer(b.child(name), inChannels: inChannels, outChannels: outChannels, kernel: kernel, stride: stride,
                        padding: kernel / 2, initialization: .kaimingFanOut)
        }
        switch name {
        case "batch norm": return (BatchNormLayer(b, channels: 8), shape)
        case "batch norm + relu": return (BatchNormLayer(b, channels: 8, reluAfter: true), shape)
        case "gelu": return (GELULayer(), shape)
        case "relu": return (ReLULayer(), shape)
        case "layer norm": return (LayerNormLayer(b, channels: 8), shape)
        case "layer scale": return (LayerScaleLayer(b, channels: 8, initialValue: 0.5), shape)
        case "drop path": return (DropPathLayer(probability: 0.5), shape)
        case "residual":
            let branch = Sequential("branch", [conv("conv", 8, 8), LayerScaleLayer(b.child("scale"), channels: 8, initialValue: 0.5)])
            return (Residual("block", branch: branch), shape)
        case "residual + relu":
            let branch = Sequential("branch", [conv("conv1", 8, 8), BatchNormLayer(b.child("bn1"), channels: 8, reluAfter: true),
                                     conv("conv2", 8, 8), BatchNormLayer(b.child("bn2"), channels: 8)])
            return (Residual("block", branch: branch, reluAfter: true), shape)
        case "residual downsampling + relu":
            let branch = Sequential("branch", [conv("conv1", 8, 16, stride: 2), BatchNormLayer(b.child("bn1"), channels: 16)])
            let shortcut = Sequential("downsample", [conv("down", 8, 16, kernel: 1, stride: 2), BatchNormLayer(b.child("bn2"), channels: 16)])
            return (Residual("block", branch: branch, shortcut: shortcut, reluAfter: true), shape)
        case "residual with its norm + relu":
            let branch = Sequential("branch", [conv("conv1", 8, 8), BatchNormLayer(b.child("bn1"), channels: 8, reluAfter: true),
                                               conv("conv2", 8, 8)])
            let norm = BatchNormLayer(b.child("bn2"), channels: 8, reluAfter: true)
            return (Residual("block", branch: branch, norm: norm, reluAfter: true), shape)
        case "residual with its norm downsampling + relu":
            let branch = Sequential("branch", [conv("conv1", 8, 16, stride: 2)])
            let norm = BatchNormLayer(b.child("bn1"), channels: 16, reluAfter: true)
            let shortcut = Sequential("downsample", [conv("down", 8, 16, kernel: 1, stride: 2), BatchNormLayer(b.child("bn2"), channels: 16)])
            return (Residual("block", branch: branch, norm: norm, shortcut: shortcut, reluAfter: true), shape)
        default:
            return (Sequential("mlp", [LayerNormLayer(b.child("norm"), channels: 8),
                                LinearLayer(b.child("fc1"), inFeatures: 8, outFeatures: 16, initialization: .pytorchDefault),
                                GELULayer(),
                                LinearLayer(b.child("fc2"), inFeatures: 16, outFeatures: 8, initialization: .pytorchDefault),
                                LayerScaleLayer(b.child("scale"), channels: 8, initialValue: 0.5),
                                DropPathLayer(probability: 0.5)]), shape)
        }
    }

    struct Run {
        var dInput: [UInt32], gradients: [UInt32], givenAfterwards: [Float], inPlace: Bool
    }

    func run(_ name: String, consuming: Bool, dOutputValues: inout [Float]) -> Run {
        let builder = ParameterBuilder()
        let (layer, shape) = make(name, builder)
        let arena = builder.makeArena(seed: 3)
        let context = RunContext(arena: arena, pool: ComputePool(threads: 2), seed: 7)
        var rng = SplitMix64(seed: 11)
        let output = layer.forward(Tensor(randomNormal: shape, rng: &rng), context)
        if dOutputValues.isEmpty { dOutputValues = Tensor(randomNormal: output.shape, rng: &rng).array }
        let given = Tensor(shape: output.shape, values: dOutputValues)
        let dInput = context.backward { consuming ? layer.backward(consuming: given, context) : layer.backward(given, context) }
        #expect(dInput.shape == shape)
        let gradients = UnsafeBufferPointer(start: arena.gradients.pointer, count: arena.gradients.count)
        return Run(dInput: dInput.array.map(\.bitPattern), gradients: gradients.map(\.bitPattern), givenAfterwards: given.array,
                   inPlace: dInput.startsAtSameFloat(as: given))
    }

    @Test(arguments: cases)
    func consumingGivesTheBitsOfBackwardWhichLeavesItsGradientAlone(name: String) {
        var dOutput: [Float] = []
        let kept = run(name, consuming: false, dOutputValues: &dOutput)
        let consumed = run(name, consuming: true, dOutputValues: &dOutput)
        #expect(kept.givenAfterwards == dOutput, "backward(_:) changed the gradient it was given")
        #expect(!kept.inPlace)
        // Every case but the two whose input gradient has another shape or comes from a linear
        // layer writes over the gradient it consumes.
        #expect(consumed.inPlace == !["residual downsampling + relu", "residual with its norm downsampling + relu",
                                      "sequential"].contains(name))
        #expect(consumed.dInput == kept.dInput)
        #expect(consumed.gradients == kept.gradients)
        #expect(kept.dInput.contains { $0 != 0 } && (kept.gradients.isEmpty || kept.gradients.contains { $0 != 0 }))
    }
}
