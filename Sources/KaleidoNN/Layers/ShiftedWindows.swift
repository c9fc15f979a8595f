import KaleidoTensor

// Swin's window bookkeeping, for (N, T, H, W, C) token grids (an image is T = 1).
//
// One attention call of a Swin block (Video Swin, torchvision `shifted_window_attention_3d`):
//   1. pad the grid with zeros at the end of T, H and W up to multiples of the window;
//   2. roll it by −shift along T, H, W (cyclic shift; shift = 0 in unshifted blocks);
//   3. cut it into windows of Wt·Wh·Ww tokens, window-major, in (nT, nH, nW) order per sample;
//   4. attend inside each window; 5. put the windows back, roll by +shift, drop the padding.
// Steps 1–3 are one gather and step 5 is its inverse scatter: padded position p holds input
// position q = (p + shift) mod P, which is padding when q is outside the input. Every input
// position appears in exactly one window, so the scatter needs no accumulation and the
// round trip is exact.

/// The window layout of one shifted-window attention call.
public struct ShiftedWindowGeometry: Hashable, Sendable {
    public let batch: Int
    /// Token grid (T, H, W) of each sample.
    public let size: [Int]
    public let channels: Int
    /// Window and shift actually used. As in Video Swin, a dimension whose size is at most the
    /// configured window gets a window of the whole dimension and no shift (an image's T = 1, the
    /// 7×7 last stage of Swin-T at 224 px).
    public let window: [Int]
    public let shift: [Int]
    /// The grid padded to multiples of the window.
    public let padded: [Int]

    public init(batch: Int, size: [Int], channels: Int, window: [Int], shift: [Int]) {
        precondition(size.count == 3 && window.count == 3 && shift.count == 3,
                     "window geometry needs (T, H, W) sizes, got size \(size) window \(window) shift \(shift)")
        var window = window, shift = shift
        for i in 0..<3 where size[i] <= window[i] {
            window[i] = size[i]
            shift[i] = 0
        }
        precondition((0..<3).allSatisfy { window[$0] >= 1 && shift[$0] >= 0 && shift[$0] < window[$0] },
                     "shift \(shift) must lie in [0, window \(window))")
        self.batch = batch
        self.size = size
        self.channels = channels
        self.window = window
        self.shift = shift
        padded = (0..<3).map { (size[$0] + window[$0] - 1) / window[$0] * window[$0] }
    }

    /// Windows per sample (nW) and tokens per window (L).
    public var windowsPerSample: Int { (0..<3).reduce(1) { $0 * padded[$1] / window[$1] } }
    public var tokens: Int { window.reduce(1, *) }
    /// Windows of the whole batch (the attention batch B).
    public var windowCount: Int { batch * windowsPerSample }
    public var isShifted: Bool { shift.contains { $0 > 0 } }
    public var gridShape: [Int] { [batch] + size + [channels] }
    public var windowsShape: [Int] { [windowCount, tokens, channels] }

    /// Calls `body(row, source)` for every token of windows `range`: `row` is the token's row in
    /// the (B·L, C) window matrix, `source` the row of the (N·T·H·W, C) grid it holds, or nil
    /// for padding.
    @inline(__always) func forEachToken(windows range: Range<Int>, _ body: (Int, Int?) -> Void) {
        let perSample = windowsPerSample, l = tokens
        let (wt, wh, ww) = (window[0], window[1], window[2])
        let (st, sh, sw) = (shift[0], shift[1], shift[2])
        let (pt, ph, pw) = (padded[0], padded[1], padded[2])
        let (t0, h0, w0) = (size[0], size[1], size[2])
        let countH = ph / wh, countW = pw / ww
        for b in range {
            let n = b / perSample, w = b % perSample
            let (bt, bh, bw) = (w / (countH * countW) * wt, w / countW % countH * wh, w % countW * ww)
            var row = b * l
            for lt in 0..<wt {
                let t = (bt + lt + st) % pt
                for lh in 0..<wh {
                    let h = (bh + lh + sh) % ph
                    for lw in 0..<ww {
                        let x = (bw + lw + sw) % pw
                        body(row, t < t0 && h < h0 && x < w0 ? ((n * t0 + t) * h0 + h) * w0 + x : nil)
                        row += 1
                    }
                }
            }
        }
    }

    /// Region label of padded position `p` along dimension `d`, as torchvision labels the slices
    /// [0, P−W), [P−W, P−s), [P−s, P) of the shifted grid; with s = 0 every position is alike.
    func region(_ p: Int, _ d: Int) -> Int {
        guard shift[d] > 0 else { return 0 }
        return p < padded[d] - window[d] ? 0 : (p < padded[d] - shift[d] ? 1 : 2)
    }

    /// The additive attention mask (nW, L, L) of a shifted block: 0 between tokens of the same
    /// region, −100 (torchvision's value; softmax weight e⁻¹⁰⁰ ≈ 0) between tokens that only share
    /// a window because the cyclic shift wrapped them around.
    public func attentionMask() -> [Float] {
        let l = tokens, perSample = windowsPerSample
        let countH = padded[1] / window[1], countW = padded[2] / window[2]
        var mask = [Float](repeating: 0, count: perSample * l * l)
        var labels = [Int](repeating: 0, count: l)
        for w in 0..<perSample {
            let base = [w / (countH * countW) * window[0], w / countW % countH * window[1], w % countW * window[2]]
            var i = 0
            for lt in 0..<window[0] {
                for lh in 0..<window[1] {
                    for lw in 0..<window[2] {
                        labels[i] = (region(base[0] + lt, 0) * 3 + region(base[1] + lh, 1)) * 3 + region(base[2] + lw, 2)
                        i += 1
                    }
                }
            }
            for i in 0..<l {
                for j in 0..<l where labels[i] != labels[j] { mask[(w * l + i) * l + j] = -100 }
            }
        }
        return mask
    }

    /// Swin's relative position index for a full window (Wt, Wh, Ww): entry (i, j) is the row of
    /// the ((2Wt−1)(2Wh−1)(2Ww−1), heads) bias table for the offset of token i from token j,
    /// ((dt + Wt−1)(2Wh−1) + dh + Wh−1)(2Ww−1) + dw + Ww−1. (L, L) with L = Wt·Wh·Ww.
    public static func relativePositionIndex(window: [Int]) -> [Int] {
        let coordinates = (0..<window.reduce(1, *)).map { [$0 / (window[1] * window[2]), $0 / window[2] % window[1], $0 % window[2]] }
        return coordinates.flatMap { a in
            coordinates.map { b in
                ((a[0] - b[0] + window[0] - 1) * (2 * window[1] - 1) + a[1] - b[1] + window[1] - 1) * (2 * window[2] - 1)
                    + a[2] - b[2] + window[2] - 1
            }
        }
    }
}

/// Grid → windows (steps 1–3 above).
///
/// windows[b, l, c] = inp[source(b, l), c], or 0 where the token is padding.
/// inp is (N, T, H, W, C), windows is (B, L, C) with B = N·nW.
public enum WindowPartition {
    public static func forward(windows: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                               geometry g: ShiftedWindowGeometry, pool: ComputePool) {
        let c = g.channels
        pool.forEachRange(g.windowCount) { range in
            g.forEachToken(windows: range) { row, source in
                if let source {
                    (windows + row * c).update(from: input + source * c, count: c)
                } else {
                    (windows + row * c).update(repeating: 0, count: c)
                }
            }
        }
    }

    /// dinp[source(b, l), c] = dwindows[b, l, c]; padding tokens have no input to reach. Every
    /// grid token sits in exactly one window, so this is `WindowReverse.forward` and dinp is
    /// written whole (its buffer needs no zeroing).
    public static func backward(dInput: UnsafeMutablePointer<Float>, dWindows: UnsafePointer<Float>,
                                geometry g: ShiftedWindowGeometry, pool: ComputePool) {
        WindowReverse.forward(output: dInput, windows: dWindows, geometry: g, pool: pool)
    }
}

/// Windows → grid (step 5 above), the inverse of `WindowPartition`.
///
/// out[source(b, l), c] = windows[b, l, c]; padding tokens are dropped.
/// windows is (B, L, C), out is (N, T, H, W, C).
public enum WindowReverse {
    public static func forward(output: UnsafeMutablePointer<Float>, windows: UnsafePointer<Float>,
                               geometry g: ShiftedWindowGeometry, pool: ComputePool) {
        let c = g.channels
        pool.forEachRange(g.windowCount) { range in
            g.forEachToken(windows: range) { row, source in
                guard let source else { return }
                (output + source * c).update(from: windows + row * c, count: c)
            }
        }
    }

    /// dwindows[b, l, c] = dout[source(b, l), c], or 0 for padding: `WindowPartition.forward`,
    /// writing every window row.
    public static func backward(dWindows: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                geometry g: ShiftedWindowGeometry, pool: ComputePool) {
        WindowPartition.forward(windows: dWindows, input: dOutput, geometry: g, pool: pool)
    }
}
