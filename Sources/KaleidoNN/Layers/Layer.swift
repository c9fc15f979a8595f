import KaleidoTensor

/// Everything a forward or backward pass needs besides the layer itself: which arena's
/// parameters to use, where activations live, threads, mode and randomness. Passed explicitly;
/// layers hold no global state.
public final class RunContext {
    /// Parameters (and their gradients) the layers read by ref: the online arena, or the EMA
    /// target arena running through the same layer graph.
    public var arena: ParameterArena
    /// Activations of the current step; reset by the trainer after each step.
    public let activations: TensorArena
    /// Gradients of activations during backward passes, handed out as a stack: a `Sequential`
    /// frees each child's scratch as soon as the child returns (see `Sequential.backward`),
    /// so backward needs about one activation's worth of gradient memory per nesting level
    /// instead of a copy of every activation.
    public let gradientScratch: TensorArena
    /// True inside `backward` calls: `tensor(_:)` then allocates from `gradientScratch`.
    public var inBackward = false
    /// SyncBN: sums per-channel statistics over the ranks of a data-parallel job (nil: each
    /// rank normalises with its own batch). Every rank must run the same layers in the same order.
    public var sumAcrossRanks: BatchNorm.SumAcrossRanks?
    public let pool: ComputePool
    /// Training mode: batch statistics in BatchNorm, active drop path and dropout.
    public var training: Bool
    /// When false (target network, evaluation) layers keep nothing for a backward pass.
    public var recordsForBackward: Bool
    /// Drop path and dropout draw from here.
    public var rng: SplitMix64
    /// Whether drop path drops (training, except in an EMA target: its targets must not depend on
    /// which of its residual branches a coin skipped).
    public var dropsPaths: Bool
    /// Told during a backward pass that every gradient at arena offsets ≥ its argument is
    /// final, so the all-reduce of those buckets can start while backward continues. Set only
    /// for the last backward pass of a step (earlier passes still accumulate).
    public var gradientsFinal: ((Int) -> Void)?
    private var scratch: TensorStorage

    public init(arena: ParameterArena, activations: TensorArena = TensorArena(), gradientScratch: TensorArena = TensorArena(),
                pool: ComputePool, training: Bool = true, recordsForBackward: Bool = true, dropsPaths: Bool? = nil, seed: UInt64 = 0) {
        self.arena = arena
        self.activations = activations
        self.gradientScratch = gradientScratch
        self.pool = pool
        self.training = training
        self.recordsForBackward = recordsForBackward
        self.dropsPaths = dropsPaths ?? training
        self.rng = SplitMix64(seed: seed)
        self.scratch = TensorStorage(count: 0)
    }

    /// A scratch buffer of at least `count` floats, valid until the next call: kernels'
    /// workspaces (im2col columns, padded images). Reallocated only while it grows.
    public func workspace(_ count: Int) -> UnsafeMutablePointer<Float> {
        if scratch.count < count { scratch = TensorStorage(count: count) }
        return scratch.pointer
    }

    @inline(__always) public func value(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> { arena.value(ref) }
    @inline(__always) public func gradient(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> { arena.gradient(ref) }

    /// A new activation (forward) or activation-gradient (backward) tensor; zeroed when it will
    /// be accumulated into.
    public func tensor(_ shape: [Int], zeroed: Bool = false) -> Tensor {
        (inBackward ? gradientScratch : activations).tensor(shape, zeroingOn: zeroed ? pool : nil)
    }

    /// Runs a backward pass with gradient allocations on the scratch stack.
    public func backward<Result>(_ body: () throws -> Result) rethrows -> Result {
        let outer = inBackward
        inBackward = true
        defer { inBackward = outer }
        return try body()
    }

    /// Ends a step: every activation and gradient tensor is forgotten (memory kept for reuse).
    public func resetActivations() {
        activations.reset()
        gradientScratch.reset()
    }
}

/// A differentiable building block with explicit forward and backward passes.
///
/// `forward` keeps what its backward needs on an internal stack when the context records, so a
/// layer can run on several inputs (multi-crop views of different sizes) before their backward
/// passes, which then come in reverse order. `backward` adds parameter gradients into the
/// context's arena and returns the gradient of its input.
public protocol Layer: AnyObject {
    func forward(_ input: Tensor, _ context: RunContext) -> Tensor
    func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor
    /// `backward` for a caller that will not read `dOutput` again (a `Sequential` handing on a
    /// gradient it owns): a layer whose input gradient is element by element may write it over
    /// `dOutput`, so it stays where the gradient was instead of being moved down the scratch
    /// stack afterwards. The default is `backward`.
    func backward(consuming dOutput: Tensor, _ context: RunContext) -> Tensor
    /// `backward` for the first layer of a network, whose input (the images) needs no gradient:
    /// adds the parameter gradients and skips the input gradient, which for a stem convolution
    /// is as many multiply-adds as its weight gradient plus a scatter over the image. The
    /// default runs `backward` (or `backward(consuming:)` when `consuming`) and drops the result.
    func backwardWithoutInputGradient(_ dOutput: Tensor, consuming: Bool, _ context: RunContext)
    /// Multiply-adds ×2 of a forward pass on `inputShape` and the output shape, for summaries.
    func describe(_ inputShape: [Int]) -> LayerDescription
    /// Arena floats this layer's parameters occupy (contiguous, as registered), or nil.
    var parameterRange: Range<Int>? { get }
}

extension Layer {
    public var parameterRange: Range<Int>? { nil }
    public func backward(consuming dOutput: Tensor, _ context: RunContext) -> Tensor { backward(dOutput, context) }

    public func backwardWithoutInputGradient(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) {
        _ = consuming ? backward(consuming: dOutput, context) : backward(dOutput, context)
    }
}

/// A layer that can write its input gradient over the output gradient it is given: it implements
/// one backward, and both of `Layer`'s call it (`backward(consuming:)` with `consuming` true).
public protocol InPlaceBackwardLayer: Layer {
    func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor
}

extension InPlaceBackwardLayer {
    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        backward(dOutput, consuming: false, context)
    }

    public func backward(consuming dOutput: Tensor, _ context: RunContext) -> Tensor {
        backward(dOutput, consuming: true, context)
    }
}

extension ParameterRef {
    public var range: Range<Int> { offset..<(offset + count) }

    /// The smallest range covering `refs`.
    public static func span(_ refs: [ParameterRef?]) -> Range<Int>? {
        let ranges = refs.compactMap { $0?.range }
        guard let low = ranges.map(\.lowerBound).min(), let high = ranges.map(\.upperBound).max() else { return nil }
        return low..<high
    }
}

/// The smallest range covering the children's parameters.
func span(of layers: [Layer?]) -> Range<Int>? {
    let ranges = layers.compactMap { $0?.parameterRange }
    guard let low = ranges.map(\.lowerBound).min(), let high = ranges.map(\.upperBound).max() else { return nil }
    return low..<high
}

/// What `kaleido model summary` prints per layer.
public struct LayerDescription: Sendable {
    public var name: String
    public var outputShape: [Int]
    public var flops: Double
    /// Trainable floats of this layer and its children.
    public var parameters: Int
    public var children: [LayerDescription]

    /// - Parameters: flops and parameters are the layer's own; its children's are added.
    public init(name: String, outputShape: [Int], flops: Double = 0, parameters: Int = 0, children: [LayerDescription] = []) {
        self.name = name
        self.outputShape = outputShape
        self.flops = flops + children.reduce(0) { $0 + $1.flops }
        self.parameters = parameters + children.reduce(0) { $0 + $1.parameters }
        self.children = children
    }
}

/// Last-in first-out storage of what forward passes saved for their backward passes.
public struct SavedStack<Saved> {
    private var items: [Saved] = []
    public init() {}

    public mutating func push(_ item: Saved, if recording: Bool) {
        if recording { items.append(item) }
    }

    public mutating func pop(_ layer: String) -> Saved {
        guard let item = items.popLast() else { preconditionFailure("\(layer): backward without a recorded forward") }
        return item
    }

    public var isEmpty: Bool { items.isEmpty }
}

/// Layers applied one after the other.
public final class Sequential: InPlaceBackwardLayer {
    public let layers: [Layer]
    public let name: String

    public init(_ name: String = "sequential", _ layers: [Layer]) {
        self.name = name
        self.layers = layers
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        layers.reduce(input) { $1.forward($0, context) }
    }

    /// Children run in reverse; after each, its parameters and everything registered after
    /// them are final (children are registered in order), which the all-reduce may act on.
    /// Each child's input gradient is the only gradient still needed, so everything else the
    /// child allocated is released and the gradient moved down to this call's mark. Every child
    /// but the first gets that gradient to consume (`backward(consuming:)`): an element-wise
    /// child writes over it, already at the mark, and nothing moves. With `consuming`, so does
    /// the first.
    public func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor {
        backward(dOutput, consuming: consuming, inputGradient: true, context)!
    }

    /// The first child runs without its input gradient, and nothing is kept: every child's
    /// scratch is released to this call's mark.
    public func backwardWithoutInputGradient(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) {
        _ = backward(dOutput, consuming: consuming, inputGradient: false, context)
    }

    private func backward(_ dOutput: Tensor, consuming: Bool, inputGradient: Bool, _ context: RunContext) -> Tensor? {
        let mark = context.inBackward ? context.gradientScratch.mark() : nil
        var gradient = dOutput, owned = consuming
        for (index, layer) in layers.enumerated().reversed() {
            if index == 0 && !inputGradient {
                layer.backwardWithoutInputGradient(gradient, consuming: owned, context)
                if let mark { context.gradientScratch.release(to: mark) }
            } else {
                let given = gradient
                gradient = owned ? layer.backward(consuming: given, context) : layer.backward(given, context)
                if let mark { gradient = context.gradientScratch.release(to: mark, keeping: gradient, pool: context.pool) }
                // A child may hand back the gradient it was given (an identity): then it is owned
                // only if that was; at the mark, or new, it is this call's.
                owned = owned || mark != nil || !gradient.startsAtSameFloat(as: given)
            }
            if let range = layer.parameterRange { context.gradientsFinal?(range.lowerBound) }
        }
        return inputGradient ? gradient : nil
    }

    public var parameterRange: Range<Int>? { span(of: layers) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        var shape = inputShape
        var children: [LayerDescription] = []
        for layer in layers {
            let description = layer.describe(shape)
            children.append(description)
            shape = description.outputShape
        }
        return LayerDescription(name: name, outputShape: shape, children: children)
    }
}
