/// Elementwise kernels, and the three ways the kernels outside BLAS split their loops over a
/// `ComputePool`.

import CKernels

// MARK: - Work splitting

extension ComputePool {
    /// Below about this many floats per thread, waking a thread costs more than the loop.
    static let floatsPerThread = 16384

    /// Splits `0..<count` for loops whose elements are independent.
    func forEachElementRange(_ count: Int, _ body: (Range<Int>) -> Void) {
        forEachRange(count, minimumPerThread: Self.floatsPerThread, body)
    }

    /// Splits the rows of a (rows, columns) matrix for loops whose rows are independent.
    func forEachRowRange(_ rows: Int, columns: Int, _ body: (Range<Int>) -> Void) {
        forEachRange(rows, minimumPerThread: max(1, Self.floatsPerThread / max(1, columns)), body)
    }

    /// Splits the channels of a reduction over rows. Each thread owns whole channels and sums
    /// their rows serially in a fixed order, so the result does not depend on the thread count.
    func forEachChannelRange(_ channels: Int, _ body: (Range<Int>) -> Void) {
        forEachRange(channels, minimumPerThread: 64, body)
    }

    /// Per-channel Float64 sums over the rows of (rows, channels) matrices, `quantities` sums per
    /// channel: `accumulate(rows, partial)` adds the terms of those rows into `partial`
    /// (quantities × channels, zeroed first), and the result lands in `sums` (the same layout).
    ///
    /// Splitting by channel (`forEachChannelRange`) leaves a narrow layer on one thread with a
    /// strided inner loop; here the rows are cut into blocks whose size depends on the shape
    /// alone, the pool's threads take blocks in turn, and the blocks' partial sums are added in
    /// block order, so the result does not depend on the thread count and the inner loop runs
    /// along contiguous channels.
    func sumOverRows(_ rows: Int, channels: Int, quantities: Int, into sums: UnsafeMutablePointer<Double>,
                     _ accumulate: (_ rows: Range<Int>, _ partial: UnsafeMutablePointer<Double>) -> Void) {
        let width = quantities * channels
        let blockRows = max(1, 4 * Self.floatsPerThread / max(1, channels))
        let blocks = (rows + blockRows - 1) / blockRows
        sums.initialize(repeating: 0, count: width)
        guard blocks > 1 else {
            accumulate(0..<rows, sums)
            return
        }
        let partials = UnsafeMutablePointer<Double>.allocate(capacity: blocks * width)
        defer { partials.deallocate() }
        partials.initialize(repeating: 0, count: blocks * width)
        forEachPiece(blocks) { block in
            accumulate(block * blockRows..<min(rows, (block + 1) * blockRows), partials + block * width)
        }
        for block in 0..<blocks {
            let partial = partials + block * width
            for i in 0..<width { sums[i] += partial[i] }
        }
    }
}

// MARK: - Kernels

/// out = 0 over `count` floats: the start of every gradient buffer that kernels accumulate into,
/// split over the pool so that the other threads are not idle while one thread zeroes megabytes.
public enum Zero {
    public static func fill(_ output: UnsafeMutablePointer<Float>, count: Int, pool: ComputePool) {
        pool.forEachElementRange(count) { range in
            (output + range.lowerBound).update(repeating: 0, count: range.count)
        }
    }
}

/// Sum of two tensors of the same shape: out = a + b. a, b and out hold `count` floats.
public enum Add {
    /// With `reluAfter`, out = max(a + b, 0) in the same pass: a ResNet block's sum and ReLU.
    public static func forward(
        output: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        count: Int, pool: ComputePool, reluAfter: Bool = false
    ) {
        // In C: out may be a or b itself (a backward's sum over a gradient it consumes), where a
        // loop LLVM vectorises checks for overlap and runs its scalar version.
        pool.forEachElementRange(count) { range in
            let i = range.lowerBound
            kaleido_add(output + i, a + i, b + i, range.count, reluAfter ? 1 : 0)
        }
    }

    /// da += dout, db += dout.
    public static func backward(
        dA: UnsafeMutablePointer<Float>?, dB: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, count: Int, pool: ComputePool
    ) {
        pool.forEachElementRange(count) { range in
            for gradient in [dA, dB] {
                guard let gradient else { continue }
                for i in range { gradient[i] += dOutput[i] }
            }
        }
    }
}

/// Per-channel scale over the last dimension (layer scale): out[m, c] = inp[m, c] · γ[c].
/// inp and out are (M, C), scale γ is (C).
public enum Scale {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, scale: UnsafePointer<Float>,
        rows: Int, channels: Int, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: channels) { range in
            let offset = range.lowerBound * channels
            kaleido_scale_channels(output + offset, input + offset, scale, range.count, channels)
        }
    }

    /// dinp[m, c]  = dout[m, c] · γ[c]  (the forward applied to dout; written, so its buffer
    ///                                   needs no zeroing)
    /// dγ[c]      += Σ_m dout[m, c] · inp[m, c]
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dScale: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, scale: UnsafePointer<Float>,
        rows: Int, channels: Int, pool: ComputePool
    ) {
        // dγ first: dinp may be dout's own memory.
        if let dScale {
            pool.forEachChannelRange(channels) { range in
                for m in 0..<rows {
                    let offset = m * channels
                    for c in range { dScale[c] += dOutput[offset + c] * input[offset + c] }
                }
            }
        }
        if let dInput { forward(output: dInput, input: dOutput, scale: scale, rows: rows, channels: channels, pool: pool) }
    }
}
