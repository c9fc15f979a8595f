import KaleidoTensor

/// An element-wise activation: out = f(x), din = f′(x) · dout, caching its input.
public class PointwiseActivationLayer: InPlaceBackwardLayer {
    typealias Forward = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int, ComputePool) -> Void
    typealias Backward = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int, ComputePool) -> Void
    let name: String
    let flopsPerElement: Double
    let apply: Forward
    let differentiate: Backward
    /// Overwrite the input with the output and keep only that: for an activation whose
    /// derivative can be read from its output (ReLU) and whose input nobody else needs.
    let inPlace: Bool
    private var saved = SavedStack<Tensor>()

    init(name: String, flopsPerElement: Double, inPlace: Bool = false, forward: @escaping Forward, backward: @escaping Backward) {
        self.name = name
        self.flopsPerElement = flopsPerElement
        self.inPlace = inPlace
        apply = forward
        differentiate = backward
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let output = inPlace ? input : context.tensor(input.shape)
        apply(output.pointer, input.pointer, input.count, context.pool)
        saved.push(inPlace ? output : input, if: context.recordsForBackward)
        return output
    }

    /// In place when `consuming`: each dinp[i] is written after its dout[i] is read.
    public func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor {
        let input = saved.pop(name)
        let dInput = consuming ? dOutput : context.tensor(input.shape)  // written whole by the kernel
        differentiate(dInput.pointer, dOutput.pointer, input.pointer, input.count, context.pool)
        return dInput
    }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: name, outputShape: inputShape, flops: flopsPerElement * Double(inputShape.reduce(1, *)))
    }
}

/// max(x, 0). In place, it overwrites its input and keeps the output, which tells the backward
/// the same thing (x > 0 ⇔ max(x, 0) > 0) and saves one activation per ReLU, as PyTorch's
/// `inplace=True` does; use it when the input feeds nothing else (after BatchNorm, after a
/// residual sum).
public final class ReLULayer: PointwiseActivationLayer {
    public init(inPlace: Bool = false) {
        super.init(name: "relu", flopsPerElement: 0, inPlace: inPlace,
                   forward: { ReLU.forward(output: $0, input: $1, count: $2, pool: $3) },
                   backward: { ReLU.backward(dInput: $0, dOutput: $1, input: $2, count: $3, pool: $4) })
    }
}

/// x·Φ(x), the exact (erf) form.
public final class GELULayer: PointwiseActivationLayer {
    public init() {
        super.init(name: "gelu", flopsPerElement: 8,
                   forward: { GELU.forward(output: $0, input: $1, count: $2, pool: $3) },
                   backward: { GELU.backward(dInput: $0, dOutput: $1, input: $2, count: $3, pool: $4) })
    }
}

/// Per-sample stochastic depth on a residual branch: whole samples are dropped with
/// probability p and the survivors scaled by 1/(1−p) while training; identity otherwise.
public final class DropPathLayer: InPlaceBackwardLayer {
    public let probability: Float
    private var saved = SavedStack<Tensor?>()

    public init(probability: Float) { self.probability = probability }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        guard context.dropsPaths, probability > 0 else {
            saved.push(nil, if: context.recordsForBackward)
            return input
        }
        let batch = input.shape[0]
        let output = context.tensor(input.shape), mask = context.tensor([batch])
        DropPath.forward(output: output.pointer, mask: mask.pointer, input: input.pointer, batch: batch,
                         sampleSize: input.count / batch, probability: probability, training: true,
                         rng: &context.rng, pool: context.pool)
        saved.push(mask, if: context.recordsForBackward)
        return output
    }

    /// In place when `consuming`: each dinp[i] is written after its dout[i] is read.
    public func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor {
        guard let mask = saved.pop("drop path") else { return dOutput }
        let batch = dOutput.shape[0]
        let dInput = consuming ? dOutput : context.tensor(dOutput.shape)  // written whole by the kernel
        DropPath.backward(dInput: dInput.pointer, dOutput: dOutput.pointer, mask: mask.pointer, batch: batch,
                          sampleSize: dOutput.count / batch, pool: context.pool)
        return dInput
    }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: "drop path \(probability)", outputShape: inputShape)
    }
}

/// (N, …, C) → (N, C): the mean over every position.
public final class GlobalAvgPoolLayer: Layer {
    private var saved = SavedStack<[Int]>()
    public init() {}

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let batch = input.shape[0], channels = input.shape.last!
        let output = context.tensor([batch, channels])
        GlobalAvgPool.forward(output: output.pointer, input: input.pointer, batch: batch,
                              positions: input.count / (batch * channels), channels: channels, pool: context.pool)
        saved.push(input.shape, if: context.recordsForBackward)
        return output
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        let shape = saved.pop("global average pool")
        let batch = shape[0], channels = shape.last!
        let dInput = context.tensor(shape, zeroed: true)
        GlobalAvgPool.backward(dInput: dInput.pointer, dOutput: dOutput.pointer, batch: batch,
                               positions: shape.reduce(1, *) / (batch * channels), channels: channels, pool: context.pool)
        return dInput
    }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: "global average pool", outputShape: [inputShape[0], inputShape.last!])
    }
}

/// Max pooling over (N, H, W, C).
public final class MaxPoolLayer: Layer {
    public let kernel, stride, padding: Int
    private var saved = SavedStack<(shape: [Int], argmax: UnsafeMutablePointer<Int32>, storage: Tensor)>()

    public init(kernel: Int, stride: Int, padding: Int) {
        self.kernel = kernel; self.stride = stride; self.padding = padding
    }

    func outputShape(_ s: [Int]) -> [Int] {
        [s[0], MaxPool2D.outputSize(inputSize: s[1], kernel: kernel, stride: stride, padding: padding),
         MaxPool2D.outputSize(inputSize: s[2], kernel: kernel, stride: stride, padding: padding), s[3]]
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let s = input.shape, out = outputShape(s)
        let output = context.tensor(out)
        // Indices are Int32 and the arena holds Float32: same size, so one tensor backs both.
        let indexStorage = context.tensor(out)
        let argmax = UnsafeMutableRawPointer(indexStorage.pointer).bindMemory(to: Int32.self, capacity: indexStorage.count)
        MaxPool2D.forward(output: output.pointer, argmax: argmax, input: input.pointer, batch: s[0], height: s[1], width: s[2],
                          channels: s[3], kernel: kernel, stride: stride, padding: padding, pool: context.pool)
        saved.push((s, argmax, indexStorage), if: context.recordsForBackward)
        return output
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        let (s, argmax, _) = saved.pop("max pool")
        let dInput = context.tensor(s, zeroed: true)
        MaxPool2D.backward(dInput: dInput.pointer, dOutput: dOutput.pointer, argmax: argmax, batch: s[0], height: s[1],
                           width: s[2], channels: s[3], kernel: kernel, stride: stride, padding: padding, pool: context.pool)
        return dInput
    }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: "max pool \(kernel)×\(kernel)/\(stride)", outputShape: outputShape(inputShape))
    }
}
