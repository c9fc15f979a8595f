import Foundation
import KaleidoTensor

/// How a convolution's weights start.
public enum ConvolutionInit: Sendable {
    /// torchvision ResNet: kaiming normal, fan-out mode, ReLU gain: std = √(2 / (OC·K·K)).
    case kaimingFanOut
    /// timm ConvNeXt / Swin: truncated normal, std 0.02.
    case truncatedNormal(std: Float)
    /// PyTorch's default for Conv2d: U(±1/√fan_in) for weight and bias (kaiming uniform, a=√5).
    case pytorchDefault
}

/// 2-D convolution over (N, H, W, C) activations. Parameters `weight` (OC, K, K, IC) and
/// optional `bias` (OC).
public final class Conv2dLayer: Layer {
    public let inChannels, outChannels, kernel, stride, padding: Int
    let weight: ParameterRef
    let bias: ParameterRef?
    private var saved = SavedStack<(input: Tensor, shape: Conv2DShape)>()

    public init(_ builder: ParameterBuilder, inChannels: Int, outChannels: Int, kernel: Int, stride: Int = 1,
                padding: Int = 0, bias: Bool = false, initialization: ConvolutionInit) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        let fanIn = Float(inChannels * kernel * kernel)
        let weightInit: Initializer
        switch initialization {
        case .kaimingFanOut: weightInit = .normal(std: (2 / Float(outChannels * kernel * kernel)).squareRoot())
        case .truncatedNormal(let std): weightInit = .truncatedNormal(std: std)
        case .pytorchDefault: weightInit = .uniform(bound: 1 / fanIn.squareRoot())
        }
        weight = builder.parameter("weight", shape: [outChannels, kernel, kernel, inChannels], layout: .convolution,
                                   role: .weight, initializer: weightInit)
        self.bias = bias
            ? builder.parameter("bias", shape: [outChannels], role: .noDecay,
                                initializer: { if case .truncatedNormal = initialization { return .zeros } else { return .uniform(bound: 1 / fanIn.squareRoot()) } }())
            : nil
    }

    func shape(_ input: [Int]) -> Conv2DShape {
        precondition(input.count == 4 && input[3] == inChannels, "conv expects (N, H, W, \(inChannels)), got \(input)")
        return Conv2DShape(batch: input[0], height: input[1], width: input[2], inChannels: inChannels,
                           outChannels: outChannels, kernel: kernel, stride: stride, padding: padding)
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let s = shape(input.shape)
        let output = context.tensor([s.batch, s.outHeight, s.outWidth, outChannels])
        Conv2D.forward(output: output.pointer, input: input.pointer, weight: context.value(weight),
                       bias: bias.map { UnsafePointer(context.value($0)) }, shape: s,
                       workspace: context.workspace(s.workspaceFloats(lanes: context.pool.threads)),
                       workspaceLanes: context.pool.threads, pool: context.pool)
        saved.push((input, s), if: context.recordsForBackward)
        return output
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        backward(dOutput, inputGradient: true, context)!
    }

    public func backwardWithoutInputGradient(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) {
        _ = backward(dOutput, inputGradient: false, context)
    }

    private func backward(_ dOutput: Tensor, inputGradient: Bool, _ context: RunContext) -> Tensor? {
        let (input, s) = saved.pop("conv")
        let dInput = inputGradient ? context.tensor(input.shape) : nil  // written whole by the kernel
        Conv2D.backward(dInput: dInput?.pointer, dWeight: context.gradient(weight), dBias: bias.map { context.gradient($0) },
                        dOutput: dOutput.pointer, input: input.pointer, weight: context.value(weight), shape: s,
                        workspace: context.workspace(s.workspaceFloats(lanes: context.pool.threads)),
                        workspaceLanes: context.pool.threads, pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? { ParameterRef.span([weight, bias]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        let s = shape(inputShape)
        return LayerDescription(name: "conv \(kernel)×\(kernel)/\(stride) \(inChannels)→\(outChannels)",
                                outputShape: [s.batch, s.outHeight, s.outWidth, outChannels], flops: s.forwardFLOPs,
                                parameters: weight.count + (bias?.count ?? 0))
    }
}
