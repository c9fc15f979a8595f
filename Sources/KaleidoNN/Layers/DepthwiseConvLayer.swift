import KaleidoTensor

/// Depthwise 2-D convolution over (N, H, W, C) activations: every channel has its own K×K
/// filter (PyTorch `Conv2d(C, C, K, groups=C)`). Parameters `weight` (K, K, C), exported as
/// PyTorch's (C, 1, K, K), and optional `bias` (C).
public final class DepthwiseConvLayer: Layer {
    public let channels, kernel, stride, padding: Int
    let weight: ParameterRef
    let bias: ParameterRef?
    private var saved = SavedStack<(input: Tensor, shape: DepthwiseConv2DShape)>()

    /// - Parameter initialization: as for `Conv2dLayer`, with fan-in = fan-out = K·K (one input
    ///   and one output channel per group, as PyTorch counts them for grouped convolutions).
    public init(_ builder: ParameterBuilder, channels: Int, kernel: Int, stride: Int = 1, padding: Int,
                bias: Bool = true, initialization: ConvolutionInit) {
        self.channels = channels; self.kernel = kernel; self.stride = stride; self.padding = padding
        let fan = Float(kernel * kernel)
        let (weightInit, biasInit): (Initializer, Initializer)
        switch initialization {
        case .kaimingFanOut: (weightInit, biasInit) = (.normal(std: (2 / fan).squareRoot()), .zeros)
        case .truncatedNormal(let std): (weightInit, biasInit) = (.truncatedNormal(std: std), .zeros)
        case .pytorchDefault: (weightInit, biasInit) = (.uniform(bound: 1 / fan.squareRoot()), .uniform(bound: 1 / fan.squareRoot()))
        }
        weight = builder.parameter("weight", shape: [kernel, kernel, channels], layout: .depthwise, role: .weight,
                                   initializer: weightInit)
        self.bias = bias ? builder.parameter("bias", shape: [channels], role: .noDecay, initializer: biasInit) : nil
    }

    func shape(_ input: [Int]) -> DepthwiseConv2DShape {
        precondition(input.count == 4 && input[3] == channels, "depthwise conv expects (N, H, W, \(channels)), got \(input)")
        return DepthwiseConv2DShape(batch: input[0], height: input[1], width: input[2], channels: channels,
                                    kernel: kernel, stride: stride, padding: padding)
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let s = shape(input.shape)
        let output = context.tensor([s.batch, s.outHeight, s.outWidth, channels])
        DepthwiseConv2D.forward(output: output.pointer, input: input.pointer, weight: context.value(weight),
                                bias: bias.map { UnsafePointer(context.value($0)) }, shape: s,
                                workspace: context.workspace(s.workspaceFloats(threads: context.pool.threads)),
                                pool: context.pool)
        saved.push((input, s), if: context.recordsForBackward)
        return output
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        let (input, s) = saved.pop("depthwise conv")
        let dInput = context.tensor(input.shape)  // written whole by the kernel
        DepthwiseConv2D.backward(dInput: dInput.pointer, dWeight: context.gradient(weight), dBias: bias.map { context.gradient($0) },
                                 dOutput: dOutput.pointer, input: input.pointer, weight: context.value(weight), shape: s,
                                 workspace: context.workspace(s.workspaceFloats(threads: context.pool.threads)),
                                 pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? { ParameterRef.span([weight, bias]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        let s = shape(inputShape)
        return LayerDescription(name: "depthwise conv \(kernel)×\(kernel)/\(stride) \(channels)",
                                outputShape: [s.batch, s.outHeight, s.outWidth, channels], flops: s.forwardFLOPs,
                                parameters: weight.count + (bias?.count ?? 0))
    }
}
