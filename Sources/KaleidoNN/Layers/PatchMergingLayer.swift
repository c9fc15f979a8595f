import KaleidoTensor

/// Swin's downsampling between stages: each 2×2 block of spatial neighbours becomes one token
/// of 4C channels, then LayerNorm over the 4C and a linear map to 2C without bias.
/// (N, T, H, W, C) → (N, T, ⌈H/2⌉, ⌈W/2⌉, 2C); time is not merged (Video Swin), and odd H or W
/// are zero-padded first. Parameters `norm.{weight,bias}` (4C) and `reduction.weight` (2C, 4C),
/// torchvision / timm v1 naming.
public final class PatchMergingLayer: Layer {
    public let channels: Int
    let norm: LayerNormLayer
    let reduction: LinearLayer
    private var saved = SavedStack<[Int]>()

    public init(_ builder: ParameterBuilder, channels: Int, normEpsilon: Float = 1e-5) {
        self.channels = channels
        // torchvision registers `reduction` before `norm`.
        reduction = LinearLayer(builder.child("reduction"), inFeatures: 4 * channels, outFeatures: 2 * channels, bias: false,
                                initialization: .truncatedNormal(std: 0.02))
        norm = LayerNormLayer(builder.child("norm"), channels: 4 * channels, epsilon: normEpsilon)
    }

    func mergedShape(_ s: [Int]) -> [Int] {
        precondition(s.count == 5 && s[4] == channels, "patch merging expects (N, T, H, W, \(channels)), got \(s)")
        return [s[0], s[1], (s[2] + 1) / 2, (s[3] + 1) / 2, 4 * channels]
    }

    /// Calls `body(target, source)` for every merged C-run: `target` is the float offset in the
    /// merged tensor, `source` the offset in the input or nil for padding. The 4C channels of a
    /// merged token are the neighbours (dh, dw) = (0,0), (1,0), (0,1), (1,1) in that order (torch's
    /// `cat([x0, x1, x2, x3])`).
    private func forEachRun(_ s: [Int], _ body: (Int, Int?) -> Void) {
        let c = channels, m = mergedShape(s)
        let offsets = [(0, 0), (1, 0), (0, 1), (1, 1)]
        var target = 0
        for nt in 0..<(s[0] * s[1]) {
            for h in 0..<m[2] {
                for w in 0..<m[3] {
                    for (dh, dw) in offsets {
                        let y = 2 * h + dh, x = 2 * w + dw
                        body(target, y < s[2] && x < s[3] ? ((nt * s[2] + y) * s[3] + x) * c : nil)
                        target += c
                    }
                }
            }
        }
    }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let s = input.shape, c = channels
        let merged = context.tensor(mergedShape(s))
        forEachRun(s) { target, source in
            if let source {
                (merged.pointer + target).update(from: input.pointer + source, count: c)
            } else {
                (merged.pointer + target).update(repeating: 0, count: c)
            }
        }
        saved.push(s, if: context.recordsForBackward)
        return reduction.forward(norm.forward(merged, context), context)
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        let s = saved.pop("patch merging"), c = channels
        let dMerged = norm.backward(reduction.backward(dOutput, context), context)
        // The 2×2 neighbourhoods tile the grid, so every input token is one merged slot: its
        // gradient is copied, not summed, and the buffer needs no zeroing.
        let dInput = context.tensor(s)
        forEachRun(s) { target, source in
            guard let source else { return }
            (dInput.pointer + source).update(from: dMerged.pointer + target, count: c)
        }
        return dInput
    }

    public var parameterRange: Range<Int>? { span(of: [norm, reduction]) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        let merged = mergedShape(inputShape)
        let normalized = norm.describe(merged)
        return LayerDescription(name: "patch merging \(channels)→\(2 * channels)", outputShape: Array(merged.dropLast()) + [2 * channels],
                                children: [normalized, reduction.describe(merged)])
    }
}
