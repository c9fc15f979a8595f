import KaleidoTensor

/// Non-overlapping 3-D patch embedding (a Conv3d whose kernel equals its stride), channels-last:
/// (N, T, H, W, IC) → (N, T/PT, H/PH, W/PW, OC). Parameters `weight` (OC, PT, PH, PW, IC),
/// exported as PyTorch's (OC, IC, PT, PH, PW), and `bias` (OC). Sizes must be multiples of the
/// patch; `TubePadLayer` pads first.
public final class PatchEmbed3DLayer: Layer {
    public let inChannels, outChannels: Int
    /// (PT, PH, PW).
    public let patch: [Int]
    let weight, bias: ParameterRef
    private var saved = SavedStack<(input: Tensor, shape: PatchEmbed3DShape)>()

    /// Starts as PyTorch's Conv3d default, U(±1/√fan_in) for weight and bias; torchvision's Swin
    /// re-initialises only its Linear layers, so its patch projection keeps this.
    public init(_ builder: ParameterBuilder, inChannels: Int, outChannels: Int, patch: [Int]) {
        precondition(patch.count == 3, "patch \(patch) must be (T, H, W)")
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.patch = patch
        let bound = 1 / Float(inChannels * patch.reduce(1, *)).squareRoot()
        weight = builder.parameter("weight", shape: [outChannels] + patch + [inChannels], layout: .convolution3D,
                                   role: .weight, initializer: .uniform(bound: bound))
        bias = builder.parameter("bias", shape: [outChannels], role: .noDecay, initializer: .uniform(bound: bound))
    }

    func shape(_ s: [Int]) -> PatchEmbed3DShape {
        precondition(s.count == 5 && s[4] == inChannels, "patch embedding expects (N, T, H, W, \(inChannels)), got \(s)")
        return PatchEmbed3DShape(batch: s[0], frames: s[1], height: s[2], width: s[3], inChannels: inChannels,
                                 outChannels: outChannels, patchFrames: patch[0], patchHeight: patch[1], patchWidth: patch[2])
    }

    func outputShape(_ s: PatchEmbed3DShape) -> [Int] { [s.batch, s.outFrames, s.outHeight, s.outWidth, outChannels] }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let s = shape(input.shape)
        let output = context.tensor(outputShape(s))
        PatchEmbed3D.forward(output: output.pointer, input: input.pointer, weight: context.value(weight),
                             bias: context.value(bias), shape: s, workspace: context.workspace(s.workspaceFloats),
                             pool: context.pool)
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
        let (input, s) = saved.pop("patch embedding")
        let dInput = inputGradient ? context.tensor(input.shape, zeroed: true) : nil
        PatchEmbed3D.backward(dInput: dInput?.pointer, dWeight: context.gradient(weight), dBias: context.gradient(bias),
                              dOutput: dOutput.pointer, input: input.pointer, weight: context.value(weight), shape: s,
                              workspace: context.workspace(s.workspaceFloats), pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? { ParameterRef.span([weight, bias]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        let s = shape(inputShape)
        return LayerDescription(name: "patch embed \(patch.map(String.init).joined(separator: "×")) \(inChannels)→\(outChannels)",
                                outputShape: outputShape(s), flops: s.forwardFLOPs, parameters: weight.count + bias.count)
    }
}

/// Pads an (N, T, H, W, C) tube up to multiples of a patch: frames by repeating the last frame,
/// height and width with zeros at the end; the identity when the sizes already fit.
///
/// Repeating frames is how Omnivore turns an image into a video for its 2×4×4 patches (its
/// training transform `RepeatedPadIm2VideoSingleImage(2)`: one frame becomes two equal frames).
/// torchvision's `PatchEmbed3d` zero-pads instead; to compare with it, give T a multiple of the
/// temporal patch. Zero-padding H and W is what both do.
public final class TubePadLayer: Layer {
    /// (PT, PH, PW).
    public let multiple: [Int]
    private var saved = SavedStack<[Int]?>()

    public init(multiple: [Int]) {
        precondition(multiple.count == 3 && multiple.allSatisfy { $0 >= 1 }, "pad multiple \(multiple) must be (T, H, W) ≥ 1")
        self.multiple = multiple
    }

    func outputShape(_ s: [Int]) -> [Int] {
        precondition(s.count == 5, "tube padding expects (N, T, H, W, C), got \(s)")
        return [s[0]] + (0..<3).map { (s[$0 + 1] + multiple[$0] - 1) / multiple[$0] * multiple[$0] } + [s[4]]
    }

    /// Calls `body(outputRow, inputRow)` for every (n, t, h) row of W·C floats that has an input
    /// row: repeated frames read the last input frame, rows past H have none.
    private func forEachRow(_ s: [Int], _ o: [Int], _ body: (Int, Int) -> Void) {
        for n in 0..<o[0] {
            for t in 0..<o[1] {
                let source = min(t, s[1] - 1)
                for h in 0..<s[2] { body(((n * o[1] + t) * o[2] + h), ((n * s[1] + source) * s[2] + h)) }
            }
        }
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let s = input.shape, o = outputShape(s)
        guard o != s else {
            saved.push(nil, if: context.recordsForBackward)
            return input
        }
        let output = context.tensor(o, zeroed: true)
        let inRow = s[3] * s[4], outRow = o[3] * o[4]
        forEachRow(s, o) { target, source in
            (output.pointer + target * outRow).update(from: input.pointer + source * inRow, count: inRow)
        }
        saved.push(s, if: context.recordsForBackward)
        return output
    }

    /// No parameters: only forgets what the forward kept.
    public func backwardWithoutInputGradient(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) {
        _ = saved.pop("tube padding")
    }

    /// dinp[n, t′, h, w] += Σ dout[n, t, h, w] over the output frames t that copy frame t′.
    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        guard let s = saved.pop("tube padding") else { return dOutput }
        let o = dOutput.shape
        let dInput = context.tensor(s, zeroed: true)
        let inRow = s[3] * s[4], outRow = o[3] * o[4]
        forEachRow(s, o) { target, source in
            let d = dInput.pointer + source * inRow, g = dOutput.pointer + target * outRow
            for i in 0..<inRow { d[i] += g[i] }
        }
        return dInput
    }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        LayerDescription(name: "pad to \(multiple.map(String.init).joined(separator: "×"))", outputShape: outputShape(inputShape))
    }
}

/// Omnivore's tokeniser: RGB tubes go through `patch_embed` (projection + LayerNorm); RGB-D
/// tubes — the same tube with depth as a 4th channel, (N, T, H, W, 3 + 1) — also send the depth
/// channel through `depth_patch_embed` (its own projection from 1 channel and its own
/// LayerNorm), and the two token grids are summed (Omnivore's `summed_rgb_d_tokens`). The
/// modality is read from the channel count, as Omnivore does, so one batch is one modality.
/// Both parts pad their input with `TubePadLayer` first.
public final class MultiModalPatchEmbedLayer: Layer {
    public let colorChannels: Int
    let pad: TubePadLayer
    let color: Sequential
    let depth: Sequential?
    /// Per forward: the padded shape when the input carried depth, nil for RGB only.
    private var saved = SavedStack<[Int]?>()
    /// Per forward: the caller's input shape, (N, H, W, C) for images or (N, T, H, W, C).
    private var inputShapes = SavedStack<[Int]>()

    /// - Parameters: builder is the model's root: names are `patch_embed.{proj,norm}.*` and,
    ///   with `depthEmbedding`, `depth_patch_embed.{proj,norm}.*`. `zeroInitDepth` starts the depth
    ///   embedding's LayerNorm scale at 0: an RGB-D scene first gives exactly its RGB image's
    ///   tokens, and depth is learnt as a residual on them.
    public init(_ builder: ParameterBuilder, inChannels: Int, embedDimension: Int, patch: [Int], depthEmbedding: Bool,
                zeroInitDepth: Bool = false, normEpsilon: Float = 1e-5) {
        colorChannels = inChannels
        pad = TubePadLayer(multiple: patch)
        func embedding(_ name: String, channels: Int, zeroInit: Bool) -> Sequential {
            let b = builder.child(name)
            return Sequential(name, [PatchEmbed3DLayer(b.child("proj"), inChannels: channels, outChannels: embedDimension, patch: patch),
                                     LayerNormLayer(b.child("norm"), channels: embedDimension, epsilon: normEpsilon, zeroInitScale: zeroInit)])
        }
        color = embedding("patch_embed", channels: inChannels, zeroInit: false)
        depth = depthEmbedding ? embedding("depth_patch_embed", channels: 1, zeroInit: zeroInitDepth) : nil
    }

    func hasDepth(_ shape: [Int]) -> Bool {
        let channels = shape.last ?? 0
        precondition(channels == colorChannels || (depth != nil && channels == colorChannels + 1),
                     "patch embedding expects \(colorChannels) channels\(depth != nil ? " or \(colorChannels + 1) (RGB-D)" : ""), got \(shape)")
        return channels == colorChannels + 1
    }

    /// Images (N, H, W, C) are one-frame tubes (N, 1, H, W, C): a view, no copy.
    static func tube(_ input: Tensor) -> Tensor {
        input.rank == 4 ? input.reshaped([input.shape[0], 1] + Array(input.shape.dropFirst())) : input
    }

    public func forward(_ image: Tensor, _ context: RunContext) -> Tensor {
        let input = Self.tube(image)
        inputShapes.push(image.shape, if: context.recordsForBackward)
        let withDepth = hasDepth(input.shape)
        let padded = pad.forward(input, context)
        guard withDepth, let depth else {
            saved.push(nil, if: context.recordsForBackward)
            return color.forward(padded, context)
        }
        // Split the interleaved channels: colour (…, C) and depth (…, 1).
        let c = colorChannels, pixels = padded.count / (c + 1)
        let rgb = context.tensor(Array(padded.shape.dropLast()) + [c])
        let d = context.tensor(Array(padded.shape.dropLast()) + [1])
        for p in 0..<pixels {
            (rgb.pointer + p * c).update(from: padded.pointer + p * (c + 1), count: c)
            d.pointer[p] = padded.pointer[p * (c + 1) + c]
        }
        let colorTokens = color.forward(rgb, context)
        let depthTokens = depth.forward(d, context)
        let sum = context.tensor(colorTokens.shape)
        Add.forward(output: sum.pointer, a: colorTokens.pointer, b: depthTokens.pointer, count: sum.count, pool: context.pool)
        saved.push(padded.shape, if: context.recordsForBackward)
        return sum
    }

    /// Both embeddings' parameter gradients; no split of the input gradient, no padding's backward.
    public func backwardWithoutInputGradient(_ dOutput: Tensor, consuming: Bool, _ context: RunContext) {
        _ = inputShapes.pop("multi-modal patch embedding")
        if saved.pop("multi-modal patch embedding") != nil, let depth {
            depth.backwardWithoutInputGradient(dOutput, consuming: false, context)
        }
        color.backwardWithoutInputGradient(dOutput, consuming: consuming, context)
        pad.backwardWithoutInputGradient(dOutput, consuming: false, context)
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        let inputShape = inputShapes.pop("multi-modal patch embedding")
        guard let paddedShape = saved.pop("multi-modal patch embedding"), let depth else {
            return pad.backward(color.backward(dOutput, context), context).reshaped(inputShape)
        }
        let dDepth = depth.backward(dOutput, context)
        let dColor = color.backward(dOutput, context)
        let c = colorChannels, pixels = dDepth.count
        let dPadded = context.tensor(paddedShape)
        for p in 0..<pixels {
            (dPadded.pointer + p * (c + 1)).update(from: dColor.pointer + p * c, count: c)
            dPadded.pointer[p * (c + 1) + c] = dDepth.pointer[p]
        }
        return pad.backward(dPadded, context).reshaped(inputShape)
    }

    public var parameterRange: Range<Int>? { span(of: [color, depth]) }

    public func describe(_ imageShape: [Int]) -> LayerDescription {
        let inputShape = imageShape.count == 4 ? [imageShape[0], 1] + Array(imageShape.dropFirst()) : imageShape
        let padded = pad.describe(inputShape)
        let colorShape = Array(padded.outputShape.dropLast()) + [colorChannels]
        var children = [padded, color.describe(colorShape)]
        if hasDepth(inputShape), let depth { children.append(depth.describe(Array(padded.outputShape.dropLast()) + [1])) }
        return LayerDescription(name: "patch embedding", outputShape: children[1].outputShape, children: children)
    }
}
