// 2-D pooling over channels-last images: inp is (N, H, W, C), out is (N, OH, OW, C) with
// OH = ⌊(H + 2·padding − kernel) / stride⌋ + 1 and likewise OW (PyTorch's ceil_mode=False).
// Windows are square. Every loop splits over the batch: a sample's backward writes only that
// sample's input gradient, so overlapping windows accumulate serially and in a fixed order.

/// The square window shared by the 2-D pooling kernels.
struct PoolingWindow {
    let kernel: Int, stride: Int, padding: Int

    init(kernel: Int, stride: Int, padding: Int) {
        precondition(kernel >= 1 && stride >= 1, "pooling needs kernel ≥ 1 and stride ≥ 1, got \(kernel), \(stride)")
        // As PyTorch requires: every window then overlaps the input in at least one position.
        precondition(padding >= 0 && padding <= kernel / 2, "pooling padding \(padding) must be in 0...\(kernel / 2)")
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
    }

    func outputSize(_ inputSize: Int) -> Int {
        precondition(inputSize + 2 * padding >= kernel, "pooling kernel \(kernel) exceeds padded input \(inputSize)")
        return (inputSize + 2 * padding - kernel) / stride + 1
    }

    /// Input positions covered by output position `output`, with the padding cut off.
    func inputRange(output: Int, inputSize: Int) -> Range<Int> {
        let start = output * stride - padding
        return max(start, 0)..<min(start + kernel, inputSize)
    }

    /// Calls `body(n, oh, ow, rows, columns)` for every output window, with the input rows and
    /// columns it covers, samples split over `pool`.
    func forEachWindow(
        batch: Int, height: Int, width: Int, channels: Int, pool: ComputePool,
        _ body: (_ n: Int, _ oh: Int, _ ow: Int, _ rows: Range<Int>, _ columns: Range<Int>) -> Void
    ) {
        let outputHeight = outputSize(height), outputWidth = outputSize(width)
        pool.forEachRowRange(batch, columns: height * width * channels) { range in
            for n in range {
                for oh in 0..<outputHeight {
                    let rows = inputRange(output: oh, inputSize: height)
                    for ow in 0..<outputWidth { body(n, oh, ow, rows, inputRange(output: ow, inputSize: width)) }
                }
            }
        }
    }
}

/// Max pooling: out[n, oh, ow, c] = max over the window of inp[n, ih, iw, c]; padding never wins.
///
/// argmax is (N, OH, OW, C) Int32 and holds ih · W + iw of the winner, PyTorch's
/// `return_indices` convention. The first maximum in row-major window order wins ties, and NaN
/// propagates, as in PyTorch.
public enum MaxPool2D {
    public static func outputSize(inputSize: Int, kernel: Int, stride: Int, padding: Int) -> Int {
        PoolingWindow(kernel: kernel, stride: stride, padding: padding).outputSize(inputSize)
    }

    public static func forward(
        output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>, input: UnsafePointer<Float>,
        batch: Int, height: Int, width: Int, channels: Int,
        kernel: Int, stride: Int, padding: Int, pool: ComputePool
    ) {
        let window = PoolingWindow(kernel: kernel, stride: stride, padding: padding)
        let outputHeight = window.outputSize(height), outputWidth = window.outputSize(width)
        window.forEachWindow(batch: batch, height: height, width: width, channels: channels, pool: pool) {
            n, oh, ow, rows, columns in
            let offset = ((n * outputHeight + oh) * outputWidth + ow) * channels
            let out = output + offset, winner = argmax + offset
            // Start as PyTorch does: −∞, credited to the window's first position, so a window
            // holding only −∞ still points its gradient at a real input.
            out.update(repeating: -.infinity, count: channels)
            winner.update(repeating: Int32(rows.lowerBound * width + columns.lowerBound), count: channels)
            for ih in rows {
                for iw in columns {
                    let x = input + ((n * height + ih) * width + iw) * channels
                    let position = Int32(ih * width + iw)
                    for c in 0..<channels where x[c] > out[c] || x[c].isNaN {
                        out[c] = x[c]
                        winner[c] = position
                    }
                }
            }
        }
    }

    /// dinp[n, argmax[n, oh, ow, c], c] += dout[n, oh, ow, c]
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
        batch: Int, height: Int, width: Int, channels: Int,
        kernel: Int, stride: Int, padding: Int, pool: ComputePool
    ) {
        let window = PoolingWindow(kernel: kernel, stride: stride, padding: padding)
        let outputPositions = window.outputSize(height) * window.outputSize(width)
        pool.forEachRowRange(batch, columns: height * width * channels) { range in
            for n in range {
                let dx = dInput + n * height * width * channels
                for p in 0..<outputPositions {
                    let offset = (n * outputPositions + p) * channels
                    for c in 0..<channels { dx[Int(argmax[offset + c]) * channels + c] += dOutput[offset + c] }
                }
            }
        }
    }
}

/// Average pooling with count_include_pad=True (PyTorch's default): out[n, oh, ow, c] =
/// Σ_window inp[n, ih, iw, c] / kernel², padded positions counting as zeros.
/// (Without ceil_mode a window never reaches past the padding, so the divisor is always kernel².)
public enum AvgPool2D {
    public static func outputSize(inputSize: Int, kernel: Int, stride: Int, padding: Int) -> Int {
        PoolingWindow(kernel: kernel, stride: stride, padding: padding).outputSize(inputSize)
    }

    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        batch: Int, height: Int, width: Int, channels: Int,
        kernel: Int, stride: Int, padding: Int, pool: ComputePool
    ) {
        let window = PoolingWindow(kernel: kernel, stride: stride, padding: padding)
        let outputHeight = window.outputSize(height), outputWidth = window.outputSize(width)
        let area = Float(kernel * kernel)
        window.forEachWindow(batch: batch, height: height, width: width, channels: channels, pool: pool) {
            n, oh, ow, rows, columns in
            let out = output + ((n * outputHeight + oh) * outputWidth + ow) * channels
            out.update(repeating: 0, count: channels)
            for ih in rows {
                for iw in columns {
                    let x = input + ((n * height + ih) * width + iw) * channels
                    for c in 0..<channels { out[c] += x[c] }
                }
            }
            for c in 0..<channels { out[c] /= area }
        }
    }

    /// dinp[n, ih, iw, c] += Σ over the windows containing (ih, iw) of dout[n, oh, ow, c] / kernel²
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
        batch: Int, height: Int, width: Int, channels: Int,
        kernel: Int, stride: Int, padding: Int, pool: ComputePool
    ) {
        let window = PoolingWindow(kernel: kernel, stride: stride, padding: padding)
        let outputHeight = window.outputSize(height), outputWidth = window.outputSize(width)
        let area = Float(kernel * kernel)
        window.forEachWindow(batch: batch, height: height, width: width, channels: channels, pool: pool) {
            n, oh, ow, rows, columns in
            let dout = dOutput + ((n * outputHeight + oh) * outputWidth + ow) * channels
            for ih in rows {
                for iw in columns {
                    let dx = dInput + ((n * height + ih) * width + iw) * channels
                    for c in 0..<channels { dx[c] += dout[c] / area }
                }
            }
        }
    }
}

/// Mean over every spatial position: out[n, c] = Σ_s inp[n, s, c] / S.
/// inp is (N, S, C) with S = H·W for images or T·H·W for videos; out is (N, C).
public enum GlobalAvgPool {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        batch: Int, positions: Int, channels: Int, pool: ComputePool
    ) {
        let inversePositions = 1 / Float(positions)
        pool.forEachRowRange(batch, columns: positions * channels) { range in
            for n in range {
                let out = output + n * channels
                out.update(repeating: 0, count: channels)
                for s in 0..<positions {
                    let x = input + (n * positions + s) * channels
                    for c in 0..<channels { out[c] += x[c] }
                }
                for c in 0..<channels { out[c] *= inversePositions }
            }
        }
    }

    /// dinp[n, s, c] += dout[n, c] / S
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
        batch: Int, positions: Int, channels: Int, pool: ComputePool
    ) {
        let inversePositions = 1 / Float(positions)
        pool.forEachRowRange(batch, columns: positions * channels) { range in
            for n in range {
                let dout = dOutput + n * channels
                for s in 0..<positions {
                    let dx = dInput + (n * positions + s) * channels
                    for c in 0..<channels { dx[c] += dout[c] * inversePositions }
                }
            }
        }
    }
}
