import KaleidoTensor

/// LayerNorm over the last (channel) dimension, with `weight` and `bias`.
public final class LayerNormLayer: InPlaceBackwardLayer {
    public let channels: Int
    public let epsilon: Float
    let weight, bias: ParameterRef
    private var saved = SavedStack<(input: Tensor, mean: Tensor, rstd: Tensor)>()

    /// - Parameter zeroInitScale: start `weight` at 0, so the layer first outputs its bias (0): a
    ///   branch summed into another starts switched off and is learnt as a residual.
    public init(_ builder: ParameterBuilder, channels: Int, epsilon: Float = 1e-6, zeroInitScale: Bool = false) {
        self.channels = channels
        self.epsilon = epsilon
        weight = builder.parameter("weight", shape: [channels], role: .noDecay, initializer: zeroInitScale ? .zeros : .ones)
        bias = builder.parameter("bias", shape: [channels], role: .noDecay, initializer: .zeros)
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        precondition(input.shape.last == channels, "layer norm expects \(channels) channels, got \(input.shape)")
        let rows = input.count / channels
        let output = context.tensor(input.shape)
        let mean = context.tensor([rows]), rstd = context.tensor([rows])
        LayerNorm.forward(output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: input.pointer,
                          weight: context.value(weight), bias: context.value(bias), rows: rows, channels: channels,
                          epsilon: epsilon, pool: context.pool)
        saved.push((input, mean, rstd), if: context.recordsForBackward)
        return output
    }

    /// In place when `consuming`: the kernel sums dw and db before it writes dinp, and reads each
    /// row of dout whole before writing that row of dinp.
    public func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor {
        let (input, mean, rstd) = saved.pop("layer norm")
        let dInput = consuming ? dOutput : context.tensor(input.shape)  // written whole by the kernel
        LayerNorm.backward(dInput: dInput.pointer, dWeight: context.gradient(weight), dBias: context.gradient(bias),
                           dOutput: dOutput.pointer, input: input.pointer, weight: context.value(weight),
                           mean: mean.pointer, rstd: rstd.pointer, rows: input.count / channels, channels: channels,
                           pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? { ParameterRef.span([weight, bias]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: "layer norm \(channels)", outputShape: inputShape, flops: 5 * Double(inputShape.reduce(1, *)),
                         parameters: 2 * channels)
    }
}
