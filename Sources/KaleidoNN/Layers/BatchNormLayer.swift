import KaleidoTensor

/// BatchNorm over the channels of (…, C) activations, torchvision naming: `weight`, `bias`,
/// `running_mean`, `running_var`, `num_batches_tracked`.
///
/// With `reluAfter`, the ReLU that follows it runs inside its passes: one read and one write of
/// the activation fewer each way, and the same bits as BatchNorm then `ReLULayer(inPlace: true)`.
/// Its backward recomputes the ReLU's mask from the input, so the output is not kept.
public final class BatchNormLayer: InPlaceBackwardLayer {
    public let channels: Int
    public let momentum: Float
    public let epsilon: Float
    public let reluAfter: Bool
    let weight, bias, runningMean, runningVariance, batchesTracked: ParameterRef
    private var saved = SavedStack<(input: Tensor, addend: Tensor?, mean: Tensor, rstd: Tensor, training: Bool, statisticsRows: Int)>()

    /// - Parameter zeroInitScale: start with γ = 0 (the last BN of a residual block, so each
    ///   block starts as the identity: "zero-init residual").
    public init(_ builder: ParameterBuilder, channels: Int, zeroInitScale: Bool = false, reluAfter: Bool = false,
                momentum: Float = 0.1, epsilon: Float = 1e-5) {
        self.channels = channels
        self.reluAfter = reluAfter
        self.momentum = momentum
        self.epsilon = epsilon
        weight = builder.parameter("weight", shape: [channels], role: .noDecay, initializer: zeroInitScale ? .zeros : .ones)
        bias = builder.parameter("bias", shape: [channels], role: .noDecay, initializer: .zeros)
        runningMean = builder.parameter("running_mean", shape: [channels], role: .buffer, initializer: .zeros)
        runningVariance = builder.parameter("running_var", shape: [channels], role: .buffer, initializer: .ones)
        batchesTracked = builder.parameter("num_batches_tracked", shape: [], role: .integerBuffer, initializer: .zeros)
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        forward(input, adding: nil, context)
    }

    /// BN(x) + addend, then the ReLU when `reluAfter`, in one pass: a residual block's last
    /// BatchNorm with the block's sum (`Residual`'s `norm`). Its backward is
    /// `backward(ofSum:consuming:overwritingInput:_:)`.
    public func forward(_ input: Tensor, adding addend: Tensor?, _ context: RunContext) -> Tensor {
        precondition(input.shape.last == channels, "batch norm expects \(channels) channels, got \(input.shape)")
        precondition(addend.map { $0.shape == input.shape } ?? true,
                     "batch norm: the addend \(addend?.shape ?? []) must have the input's shape \(input.shape)")
        let rows = input.count / channels
        let output = context.tensor(input.shape)
        let mean = context.tensor([channels]), rstd = context.tensor([channels])
        let statisticsRows = BatchNorm.forward(
            output: output.pointer, mean: mean.pointer, rstd: rstd.pointer, input: input.pointer,
            addend: addend.map { UnsafePointer($0.pointer) }, weight: context.value(weight), bias: context.value(bias),
            runningMean: context.value(runningMean), runningVariance: context.value(runningVariance),
            rows: rows, channels: channels, training: context.training, momentum: momentum,
            epsilon: epsilon, pool: context.pool, sumAcrossRanks: context.sumAcrossRanks, reluAfter: reluAfter)
        if context.training { context.value(batchesTracked).pointee += 1 }
        saved.push((input, addend, mean, rstd, context.training, statisticsRows), if: context.recordsForBackward)
        return output
    }

    /// In place when `consuming`: the kernel reads each element of dout before it writes that
    /// element of dinp.
    public func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor {
        let (input, addend, mean, rstd, training, statisticsRows) = saved.pop("batch norm")
        precondition(addend == nil, "batch norm: a forward with an addend needs backward(ofSum:consuming:overwritingInput:_:)")
        let dInput = consuming ? dOutput : context.tensor(input.shape)  // written whole by the kernel
        backward(dInput: dInput, dSum: nil, dOutput: dOutput, input: input, addend: nil, mean: mean, rstd: rstd,
                 training: training, statisticsRows: statisticsRows, context)
        return dInput
    }

    /// Backward of `forward(_:adding:_:)`: the input gradient and the sum's gradient (dout through
    /// the ReLU; the addend's gradient), the latter over dOutput when `consuming`. With
    /// `overwritingInput`, the input gradient is written over the forward's input (each element
    /// read before it is written), for a caller that knows nothing else reads that input again:
    /// no activation-sized scratch while the shortcut's backward runs.
    public func backward(ofSum dOutput: Tensor, consuming: Bool, overwritingInput: Bool, _ context: RunContext)
        -> (dInput: Tensor, dSum: Tensor) {
        let (input, addend, mean, rstd, training, statisticsRows) = saved.pop("batch norm")
        precondition(reluAfter, "batch norm: the sum's gradient is that of the fused ReLU")
        let dSum = consuming ? dOutput : context.tensor(input.shape)
        let dInput = overwritingInput ? input : context.tensor(input.shape)  // written whole by the kernel
        backward(dInput: dInput, dSum: dSum, dOutput: dOutput, input: input, addend: addend, mean: mean, rstd: rstd,
                 training: training, statisticsRows: statisticsRows, context)
        return (dInput, dSum)
    }

    private func backward(dInput: Tensor, dSum: Tensor?, dOutput: Tensor, input: Tensor, addend: Tensor?, mean: Tensor,
                          rstd: Tensor, training: Bool, statisticsRows: Int, _ context: RunContext) {
        BatchNorm.backward(dInput: dInput.pointer, dWeight: context.gradient(weight), dBias: context.gradient(bias),
                           dOutput: dOutput.pointer, input: input.pointer, weight: context.value(weight),
                           bias: context.value(bias), mean: mean.pointer, rstd: rstd.pointer,
                           rows: input.count / channels, channels: channels, training: training, pool: context.pool,
                           sumAcrossRanks: context.sumAcrossRanks, statisticsRows: statisticsRows, reluAfter: reluAfter,
                           addend: addend.map { UnsafePointer($0.pointer) }, dAddend: dSum?.pointer)
    }

    public var parameterRange: Range<Int>? { ParameterRef.span([weight, bias, runningMean, runningVariance, batchesTracked]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: "batch norm \(channels)\(reluAfter ? " + relu" : "")", outputShape: inputShape,
                         flops: 2 * Double(inputShape.reduce(1, *)), parameters: 2 * channels)
    }
}
