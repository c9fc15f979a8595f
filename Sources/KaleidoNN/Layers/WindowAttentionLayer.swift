import KaleidoTensor

/// (Shifted-)window multi-head self-attention with a learned relative position bias, over
/// (N, T, H, W, C) token grids: Swin's W-MSA / SW-MSA in 3-D (Video Swin), torchvision's
/// `ShiftedWindowAttention3d`. Parameters: `qkv` (3C, C) + bias, `proj` (C, C) + bias,
/// `relative_position_bias_table` ((2Wt−1)(2Wh−1)(2Ww−1), heads) and the buffer
/// `relative_position_index` (L, L), L = Wt·Wh·Ww. With Wt = 1 this is 2-D Swin exactly
/// (the table has (2Wh−1)(2Ww−1) rows).
///
/// A forward: partition (pad, cyclic shift, cut into windows) → qkv → attention with the
/// gathered bias (and the shift mask) → proj → reverse. The window and shift are clipped per
/// input (see `ShiftedWindowGeometry`); when a dimension is clipped the bias uses the index's
/// leading (L′, L′) block, as Video Swin, Omnivore and torchvision do — the exact offsets when
/// only T is clipped (images in a video model), their convention otherwise.
public final class WindowAttentionLayer: Layer {
    public let channels, heads: Int
    /// Configured window and shift (T, H, W); shift is 0 or window / 2.
    public let window, shift: [Int]
    let qkv, proj: LinearLayer
    let table, index: ParameterRef
    /// The index buffer's values, kept as integers for the gathers.
    private let relativeIndex: [Int]
    /// Shift masks by geometry (batch and channels zeroed): built once per grid size.
    private var masks: [ShiftedWindowGeometry: Tensor] = [:]
    private var saved = SavedStack<(geometry: ShiftedWindowGeometry, qkv: Tensor, probabilities: Tensor)>()

    public init(_ builder: ParameterBuilder, channels: Int, heads: Int, window: [Int], shift: [Int]) {
        precondition(channels % heads == 0, "\(channels) channels do not split into \(heads) heads")
        precondition(window.count == 3 && shift.count == 3, "window \(window) and shift \(shift) must be (T, H, W)")
        self.channels = channels
        self.heads = heads
        self.window = window
        self.shift = shift
        let rows = window.reduce(1) { $0 * (2 * $1 - 1) }, tokens = window.reduce(1, *)
        // Registered in torchvision's state-dict order: table, index, qkv, proj.
        table = builder.parameter("relative_position_bias_table", shape: [rows, heads], role: .noDecay,
                                  initializer: .truncatedNormal(std: 0.02))
        relativeIndex = ShiftedWindowGeometry.relativePositionIndex(window: window)
        index = builder.parameter("relative_position_index", shape: [tokens, tokens], role: .integerBuffer,
                                  initializer: .values(relativeIndex.map(Float.init)))
        qkv = LinearLayer(builder.child("qkv"), inFeatures: channels, outFeatures: 3 * channels, initialization: .truncatedNormal(std: 0.02))
        proj = LinearLayer(builder.child("proj"), inFeatures: channels, outFeatures: channels, initialization: .truncatedNormal(std: 0.02))
    }

    func geometry(_ shape: [Int]) -> ShiftedWindowGeometry {
        precondition(shape.count == 5 && shape[4] == channels, "window attention expects (N, T, H, W, \(channels)), got \(shape)")
        return ShiftedWindowGeometry(batch: shape[0], size: Array(shape[1...3]), channels: channels, window: window, shift: shift)
    }

    func attentionShape(_ g: ShiftedWindowGeometry) -> AttentionShape {
        AttentionShape(batch: g.windowCount, heads: heads, tokens: g.tokens, headDim: channels / heads,
                       maskWindows: g.isShifted ? g.windowsPerSample : 1)
    }

    var scale: Float { 1 / Float(channels / heads).squareRoot() }

    /// The shift mask of `g`, nil for unshifted windows.
    func mask(_ g: ShiftedWindowGeometry) -> Tensor? {
        guard g.isShifted else { return nil }
        let key = ShiftedWindowGeometry(batch: 0, size: g.size, channels: 0, window: window, shift: shift)
        if let mask = masks[key] { return mask }
        let mask = Tensor(shape: [g.windowsPerSample, g.tokens, g.tokens], values: g.attentionMask())
        masks[key] = mask
        return mask
    }

    /// Entry (i, j) of the index restricted to the clipped window of `tokens` tokens.
    @inline(__always) func tableRow(_ i: Int, _ j: Int, fullTokens: Int) -> Int { relativeIndex[i * fullTokens + j] }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let g = geometry(input.shape), s = attentionShape(g)
        let l = g.tokens, fullTokens = window.reduce(1, *)
        let windows = context.tensor(g.windowsShape)
        WindowPartition.forward(windows: windows.pointer, input: input.pointer, geometry: g, pool: context.pool)
        let packed = qkv.forward(windows, context)

        // bias[h, i, j] = table[index[i, j], h]
        let bias = context.tensor([heads, l, l])
        let values = context.value(table)
        for i in 0..<l {
            for j in 0..<l {
                let row = values + tableRow(i, j, fullTokens: fullTokens) * heads
                for h in 0..<heads { bias.pointer[(h * l + i) * l + j] = row[h] }
            }
        }
        let probabilities = context.tensor([s.probabilityFloats])
        let attended = context.tensor(g.windowsShape)
        Attention.forward(output: attended.pointer, probabilities: probabilities.pointer, qkv: packed.pointer,
                          bias: bias.pointer, mask: mask(g).map { UnsafePointer($0.pointer) }, shape: s, scale: scale,
                          pool: context.pool)
        // The projection in window order is dead once reversed into the output, which is taken
        // from the arena first: releasing back to it frees the projection without moving the
        // output, one activation-sized tensor less per attention block and no copy.
        let beforeOutput = context.activations.mark()
        let output = context.tensor(input.shape)
        let projected = proj.forward(attended, context)
        WindowReverse.forward(output: output.pointer, windows: projected.pointer, geometry: g, pool: context.pool)
        saved.push((g, packed, probabilities), if: context.recordsForBackward)
        return context.activations.release(to: beforeOutput, keeping: output, pool: context.pool)
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        let (g, packed, probabilities) = saved.pop("window attention")
        let s = attentionShape(g), l = g.tokens, fullTokens = window.reduce(1, *)
        let dProjected = context.tensor(g.windowsShape)  // written whole
        WindowReverse.backward(dWindows: dProjected.pointer, dOutput: dOutput.pointer, geometry: g, pool: context.pool)
        let dAttended = proj.backward(dProjected, context)
        let dPacked = context.tensor(packed.shape, zeroed: true)
        let dBias = context.tensor([heads, l, l], zeroed: true)
        Attention.backward(dQKV: dPacked.pointer, dBias: dBias.pointer, dOutput: dAttended.pointer, qkv: packed.pointer,
                           probabilities: probabilities.pointer, shape: s, scale: scale,
                           workspace: context.workspace(s.workspaceFloats), pool: context.pool)
        // dtable[index[i, j], h] += dbias[h, i, j], serially: several (i, j) share a table row.
        let dTable = context.gradient(table)
        for i in 0..<l {
            for j in 0..<l {
                let row = dTable + tableRow(i, j, fullTokens: fullTokens) * heads
                for h in 0..<heads { row[h] += dBias.pointer[(h * l + i) * l + j] }
            }
        }
        let dWindows = qkv.backward(dPacked, context)
        let dInput = context.tensor(g.gridShape)  // written whole
        WindowPartition.backward(dInput: dInput.pointer, dWindows: dWindows.pointer, geometry: g, pool: context.pool)
        return dInput
    }

    public var parameterRange: Range<Int>? {
        [span(of: [qkv, proj]), ParameterRef.span([table, index])].compactMap { $0 }.reduce(nil) { total, range in
            total.map { min($0.lowerBound, range.lowerBound)..<max($0.upperBound, range.upperBound) } ?? range
        }
    }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        let g = geometry(inputShape)
        let windows = g.windowsShape
        let isShifted = shift.contains { $0 > 0 }
        return LayerDescription(name: "\(isShifted ? "shifted " : "")window attention \(window.map(String.init).joined(separator: "×")) \(heads) heads",
                                outputShape: inputShape, flops: attentionShape(g).forwardFLOPs,
                                parameters: table.count,
                                children: [qkv.describe(windows), proj.describe(windows)])
    }
}
