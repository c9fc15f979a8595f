import KaleidoTensor

/// out = branch(x) + shortcut(x), or max(that, 0) with `reluAfter`; the shortcut is the identity
/// when nil. The one residual pattern every backbone uses: ResNet blocks (ReLU after, shortcut =
/// 1×1 conv + BN when the shape changes), ConvNeXt blocks and both halves of a Swin block (no
/// ReLU, identity).
///
/// With `norm`, the branch's last BatchNorm runs here instead of inside the branch, and the sum
/// and the ReLU run in its normalising pass: out = relu(norm(branch(x)) + shortcut(x)). A ResNet
/// block then reads and writes one activation twice fewer in its forward pass, and its backward
/// has no separate ReLU pass (the BatchNorm recomputes the mask and hands back the sum's
/// gradient). The same bits as the norm at the end of the branch.
public final class Residual: InPlaceBackwardLayer {
    public let name: String
    public let branch: Layer
    public let norm: BatchNormLayer?
    public let shortcut: Layer?
    /// The ReLU runs in the sum's pass and overwrites it; without `norm` the output is kept for
    /// the backward, as an in-place ReLU layer would keep it (with it, the norm recomputes the mask).
    public let reluAfter: Bool
    private var savedOutputs = SavedStack<Tensor>()
    /// Per forward with `norm`: whether the branch made its own output (not the block's input),
    /// which then only the norm reads, so the norm's backward may write over it.
    private var branchOutputIsOwn = SavedStack<Bool>()
    /// Write the sum over the branch's output instead of a new tensor, as torchvision's
    /// `out += identity` does: one activation-sized tensor less per block (798 MiB of ResNet-50's
    /// step at 2×224 + 2×96, batch 16). Only for a branch whose output no layer keeps for its
    /// backward pass — one ending in BatchNorm, Linear or LayerScale (they keep their inputs),
    /// optionally followed by DropPath — never one ending in an in-place activation.
    public let addsInPlace: Bool

    /// - Parameter norm: the branch's last BatchNorm, run after the branch; its `reluAfter` must be
    ///   this block's, and its parameters registered after the branch's and before the shortcut's
    ///   (where they would be inside the branch): the branch's backward, which runs last, reports
    ///   everything registered after its layers as final.
    public init(_ name: String, branch: Layer, norm: BatchNormLayer? = nil, shortcut: Layer? = nil, reluAfter: Bool = false,
                addsInPlace: Bool = false) {
        precondition(norm.map { $0.reluAfter == reluAfter } ?? true, "\(name): the fused BatchNorm's ReLU must be the block's")
        self.name = name
        self.branch = branch
        self.norm = norm
        self.shortcut = shortcut
        self.reluAfter = reluAfter
        self.addsInPlace = addsInPlace
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let residual = branch.forward(input, context)
        let skip = shortcut?.forward(input, context) ?? input
        precondition(residual.shape == skip.shape, "\(name): branch \(residual.shape) and shortcut \(skip.shape) differ")
        if let norm {
            branchOutputIsOwn.push(!residual.startsAtSameFloat(as: input), if: context.recordsForBackward)
            return norm.forward(residual, adding: skip, context)
        }
        // In place only when the branch made a tensor of its own: a branch that returns its input
        // (DropPath at rate 0 on an empty branch) would have the block's input overwritten.
        let inPlace = addsInPlace && !residual.startsAtSameFloat(as: input)
        let sum = inPlace ? residual : context.tensor(residual.shape)
        Add.forward(output: sum.pointer, a: residual.pointer, b: skip.pointer, count: sum.count, pool: context.pool,
                    reluAfter: reluAfter)
        if reluAfter { savedOutputs.push(sum, if: context.recordsForBackward) }
        return sum
    }

    /// In place when `consuming`: the ReLU's gradient and the final sum are element by element,
    /// and both go over dout.
    public func backward(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) -> Tensor {
        var dSum = dOutput
        // The branch's gradient: dSum, or the fused norm's input gradient.
        var dResidual: Tensor?
        if let norm {
            let overwriting = branchOutputIsOwn.pop("\(name) norm")
            (dResidual, dSum) = norm.backward(ofSum: dOutput, consuming: consuming, overwritingInput: overwriting, context)
        } else if reluAfter {
            let output = savedOutputs.pop("\(name) relu")
            if !consuming { dSum = context.tensor(dOutput.shape) }
            ReLU.backward(dInput: dSum.pointer, dOutput: dOutput.pointer, input: output.pointer, count: dSum.count,
                          pool: context.pool)
        }
        // Backward passes pop their saved state in reverse order of the forward calls. Both
        // children read dSum, so neither may consume it.
        let dSkip = shortcut?.backward(dSum, context) ?? dSum
        let dBranch = branch.backward(dResidual ?? dSum, context)
        // The sum goes over a gradient this call owns: dSum when it is (given to consume, or
        // the ReLU's) and has the input's shape (not in a block that downsamples), which in an
        // enclosing Sequential already sits at its mark; else the branch's, a scratch tensor of
        // its own, unless the branch handed back the gradient it was given (an empty branch).
        let ownsSum = (consuming || reluAfter) && dSum.shape == dBranch.shape
        let inPlace = !dBranch.startsAtSameFloat(as: dSum) && !dBranch.startsAtSameFloat(as: dSkip)
        let dInput = ownsSum ? dSum : inPlace ? dBranch : context.tensor(dBranch.shape)
        Add.forward(output: dInput.pointer, a: dBranch.pointer, b: dSkip.pointer, count: dInput.count, pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? { span(of: [branch, norm, shortcut]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        var children = [branch.describe(inputShape)]
        if let norm { children.append(norm.describe(children[0].outputShape)) }
        if let shortcut { children.append(shortcut.describe(inputShape)) }
        let outputShape = children[0].outputShape
        if reluAfter && norm == nil { children.append(LayerDescription(name: "relu", outputShape: outputShape)) }
        return LayerDescription(name: name, outputShape: outputShape, flops: Double(outputShape.reduce(1, *)), children: children)
    }
}
