import KaleidoTensor

/// Layer scale (Touvron et al. 2021, CaiT; used by ConvNeXt): out[…, c] = x[…, c] · γ[c], with
/// a learned per-channel `gamma` that starts small (1e-6 in ConvNeXt) so a residual branch
/// begins close to zero. `gamma` is excluded from weight decay, as timm does for 1-D parameters.
public final class LayerScaleLayer: InPlaceBackwardLayer {
    public let channels: Int
    let gamma: ParameterRef
    private var saved = SavedStack<Tensor>()

    public init(_ builder: ParameterBuilder, channels: Int, initialValue: Float) {
        self.channels = channels
        gamma = builder.parameter("gamma", shape: [channels], role: .noDecay, initializer: .constant(initialValue))
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        precondition(input.shape.last == channels, "layer scale expects \(channels) channels, got \(input.shape)")
        let output = context.tensor(input.shape)
        Scale.forward(output: output.pointer, input: input.pointer, scale: context.value(gamma),
                      rows: input.count / channels, channels: channels, pool: context.pool)
        saved.push(input, if: context.recordsForBackward)
        return output
    }

    /// In place when `consuming`: the kernel sums dγ before it writes dinp, element by element.
    public func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor {
        let input = saved.pop("layer scale")
        let dInput = consuming ? dOutput : context.tensor(input.shape)  // written whole by the kernel
        Scale.backward(dInput: dInput.pointer, dScale: context.gradient(gamma), dOutput: dOutput.pointer,
                       input: input.pointer, scale: context.value(gamma), rows: input.count / channels,
                       channels: channels, pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? { gamma.range }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: "layer scale \(channels)", outputShape: inputShape, flops: Double(inputShape.reduce(1, *)),
                         parameters: channels)
    }
}
