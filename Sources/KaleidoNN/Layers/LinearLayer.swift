import KaleidoTensor

/// Fully connected layer over the last dimension: `weight` (OC, IC) and optional `bias` (OC).
public final class LinearLayer: Layer {
    public let inFeatures, outFeatures: Int
    let weight: ParameterRef
    let bias: ParameterRef?
    private var saved = SavedStack<Tensor>()

    public enum Init: Sendable {
        /// PyTorch's default: U(±1/√in) for weight and bias.
        case pytorchDefault
        /// timm transformers and ConvNeXt: truncated normal std 0.02, zero bias.
        case truncatedNormal(std: Float)
        /// Heads that should start silent.
        case zeros
    }

    public init(_ builder: ParameterBuilder, inFeatures: Int, outFeatures: Int, bias: Bool = true, initialization: Init) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let bound = 1 / Float(inFeatures).squareRoot()
        let (weightInit, biasInit): (Initializer, Initializer)
        switch initialization {
        case .pytorchDefault: (weightInit, biasInit) = (.uniform(bound: bound), .uniform(bound: bound))
        case .truncatedNormal(let std): (weightInit, biasInit) = (.truncatedNormal(std: std), .zeros)
        case .zeros: (weightInit, biasInit) = (.zeros, .zeros)
        }
        weight = builder.parameter("weight", shape: [outFeatures, inFeatures], role: .weight, initializer: weightInit)
        self.bias = bias ? builder.parameter("bias", shape: [outFeatures], role: .noDecay, initializer: biasInit) : nil
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        precondition(input.shape.last == inFeatures, "linear expects \(inFeatures) features, got \(input.shape)")
        let rows = input.count / inFeatures
        let output = context.tensor(Array(input.shape.dropLast()) + [outFeatures])
        Linear.forward(output: output.pointer, input: input.pointer, weight: context.value(weight),
                       bias: bias.map { UnsafePointer(context.value($0)) }, rows: rows,
                       inChannels: inFeatures, outChannels: outFeatures, pool: context.pool)
        saved.push(input, if: context.recordsForBackward)
        return output
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        let input = saved.pop("linear")
        let dInput = context.tensor(input.shape)  // written whole by the kernel
        Linear.backward(dInput: dInput.pointer, dWeight: context.gradient(weight), dBias: bias.map { context.gradient($0) },
                        dOutput: dOutput.pointer, input: input.pointer, weight: context.value(weight),
                        rows: input.count / inFeatures, inChannels: inFeatures, outChannels: outFeatures, pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? { ParameterRef.span([weight, bias]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        let rows = inputShape.dropLast().reduce(1, *)
        return LayerDescription(name: "linear \(inFeatures)→\(outFeatures)", outputShape: Array(inputShape.dropLast()) + [outFeatures],
                                flops: 2 * Double(rows * inFeatures * outFeatures), parameters: weight.count + (bias?.count ?? 0))
    }
}
