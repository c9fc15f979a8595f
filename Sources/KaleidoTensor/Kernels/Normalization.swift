import CKernels
import Foundation

// Both normalisations compute x̂ = (x − μ) · rstd with rstd = 1 / √(σ² + eps) (σ² the biased
// variance) and out = x̂ · w + b. They differ in the axis: LayerNorm takes μ, σ² over the
// channels of each row, BatchNorm over the rows of each channel. The input gradient has the same
// form for both, with means taken over the normalised axis:
//
//     dx̂  = dout · w
//     dinp = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂))
//
// inp and out are (M, C) channels-last: M = N, N·H·W or N·T·H·W rows of C channels.

/// Layer normalisation over the last dimension (channels-last LayerNorm, as in ConvNeXt and ViT).
///
/// out[m, c] = (inp[m, c] − μ[m]) · rstd[m] · w[c] + b[c]
/// inp and out are (M, C); weight and bias are (C) or nil (no affine part); the cache mean and
/// rstd are (M). The per-row loops are CKernels' `kaleido_layernorm_*` (16-float vectors, cloned
/// for AVX-512, x86-64-v3 and baseline, the same bits on each).
public enum LayerNorm {
    public static func forward(
        output: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
        rows: Int, channels: Int, epsilon: Float = 1e-5, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: channels) { range in
            let offset = range.lowerBound * channels
            kaleido_layernorm_forward(output + offset, mean + range.lowerBound, rstd + range.lowerBound, input + offset,
                                      weight, bias, range.count, channels, epsilon)
        }
    }

    /// dinp[m, :]  = rstd[m] · (dx̂ − mean_c(dx̂) − x̂ · mean_c(dx̂ · x̂)),  dx̂ = dout · w  (written, not added)
    /// dw[c]      += Σ_m dout[m, c] · x̂[m, c]
    /// db[c]      += Σ_m dout[m, c]
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
        mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        rows: Int, channels: Int, pool: ComputePool
    ) {
        if let dInput {
            pool.forEachRowRange(rows, columns: channels) { range in
                let offset = range.lowerBound * channels
                kaleido_layernorm_input_gradient(dInput + offset, dOutput + offset, input + offset, weight,
                                                 mean + range.lowerBound, rstd + range.lowerBound, range.count, channels)
            }
        }
        guard dWeight != nil || dBias != nil else { return }
        pool.forEachChannelRange(channels) { range in
            for m in 0..<rows {
                let x = input + m * channels, dout = dOutput + m * channels
                let mu = mean[m], s = rstd[m]
                if let dWeight { for c in range { dWeight[c] += dout[c] * ((x[c] - mu) * s) } }
                if let dBias { for c in range { dBias[c] += dout[c] } }
            }
        }
    }
}

/// Per-channel Float64 sums of a term over a range of rows, sixteen channels at a time in four
/// vector registers. A row-by-row loop through memory is not vectorised (the compiler cannot
/// rule out that the sums alias the rows), and a vectorised one waits on its own stores; here
/// each channel's running sum stays in a register while the rows go by, still adding the rows
/// in order, so the sums are the serial loop's over the same rows to the bit.
enum ColumnSums {
    @inline(__always)
    static func widen(_ p: UnsafePointer<Float>) -> SIMD4<Double> {
        SIMD4<Double>(UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self))
    }

    @inline(__always)
    static func narrow(_ p: UnsafePointer<Float>) -> SIMD4<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
    }

    /// sums[c] += Σ_{m ∈ rows} term(m, c); `vector(m, c)` gives channels c..<c+4 of the term,
    /// `scalar(m, c)` channel c alone (for a channel count not a multiple of four).
    @inline(__always)
    static func add(_ rows: Range<Int>, channels: Int, into sums: UnsafeMutablePointer<Double>,
                    vector: (_ row: Int, _ channel: Int) -> SIMD4<Double>,
                    scalar: (_ row: Int, _ channel: Int) -> Double) {
        func load(_ c: Int) -> SIMD4<Double> { UnsafeRawPointer(sums + c).loadUnaligned(as: SIMD4<Double>.self) }
        func store(_ value: SIMD4<Double>, _ c: Int) {
            UnsafeMutableRawPointer(sums + c).storeBytes(of: value, as: SIMD4<Double>.self)
        }
        var c = 0
        while c + 16 <= channels {
            var a0 = load(c), a1 = load(c + 4), a2 = load(c + 8), a3 = load(c + 12)
            for m in rows {
                a0 += vector(m, c)
                a1 += vector(m, c + 4)
                a2 += vector(m, c + 8)
                a3 += vector(m, c + 12)
            }
            store(a0, c); store(a1, c + 4); store(a2, c + 8); store(a3, c + 12)
            c += 16
        }
        while c + 4 <= channels {
            var a = load(c)
            for m in rows { a += vector(m, c) }
            store(a, c)
            c += 4
        }
        while c < channels {
            var a = sums[c]
            for m in rows { a += scalar(m, c) }
            sums[c] = a
            c += 1
        }
    }

    /// sums[c] += Σ_{m ∈ rows} (x[m, c] − μ[c])², x being (rows, channels).
    @inline(__always)
    static func addSquares(_ rows: Range<Int>, of x: UnsafePointer<Float>, centredOn mu: UnsafePointer<Double>,
                           channels: Int, into sums: UnsafeMutablePointer<Double>) {
        add(rows, channels: channels, into: sums,
            vector: { m, c in
                let centred = widen(x + m * channels + c) - UnsafeRawPointer(mu + c).loadUnaligned(as: SIMD4<Double>.self)
                return centred * centred
            },
            scalar: { m, c in
                let centred = Double(x[m * channels + c]) - mu[c]
                return centred * centred
            })
    }
}

/// Batch normalisation over channels-last activations, as PyTorch's `BatchNorm1d/2d/3d`.
///
/// out[m, c] = (inp[m, c] − μ[c]) · rstd[c] · w[c] + b[c]
/// inp and out are (M, C); weight and bias are (C) or nil; the cache mean and rstd are (C); the
/// running mean and variance are (C).
///
/// Training: μ and σ² are the batch statistics over the M rows (biased σ² for normalising), and
/// the running statistics move towards them by `momentum`, the variance in its unbiased form
/// σ² · M / (M − 1), as PyTorch does. M must be at least 2.
/// Evaluation: μ and σ² are the running statistics, which are left unchanged. The cache holds them
/// too, so the backward (e.g. through a frozen encoder) reads its statistics from the same place.
///
/// Statistics are summed per channel in Float64, in blocks of rows fixed by the shape
/// (`ComputePool.sumOverRows`), so they do not depend on the thread count.
///
/// Synchronised (SyncBN): given `sumAcrossRanks`, an in-place element-wise sum over the ranks
/// of a data-parallel job, the statistics are those of the global batch: Σx and the row count
/// are summed first (giving μ), then Σ(x − μ)² (giving σ²); the backward sums Σdout and
/// Σdout·x̂ the same way before the input gradient. The kernel does not know how the sum is
/// done (MPI lives elsewhere); it returns the global row count, which the backward needs.
public enum BatchNorm {
    /// The kernel's way of summing per-channel values over ranks, in place.
    public typealias SumAcrossRanks = (UnsafeMutableBufferPointer<Float>) -> Void

    /// Returns the rows the statistics covered: `rows`, or the global count when synchronised.
    @discardableResult
    public static func forward(
        output: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
        runningMean: UnsafeMutablePointer<Float>, runningVariance: UnsafeMutablePointer<Float>,
        rows: Int, channels: Int, training: Bool, momentum: Float = 0.1, epsilon: Float = 1e-5, pool: ComputePool,
        sumAcrossRanks: SumAcrossRanks? = nil, reluAfter: Bool = false
    ) -> Int {
        var statisticsRows = rows
        if training, let sumAcrossRanks {
            statisticsRows = synchronizedStatistics(mean: mean, rstd: rstd, input: input, runningMean: runningMean,
                                                    runningVariance: runningVariance, rows: rows, channels: channels,
                                                    momentum: momentum, epsilon: epsilon, pool: pool, sum: sumAcrossRanks)
        } else if training {
            precondition(rows > 1, "BatchNorm in training needs more than one value per channel, got \(rows) rows")
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * channels) { buffer in
                let means = buffer.baseAddress!, squares = means + channels
                channelSums(of: input, rows: rows, channels: channels, pool: pool, into: means)
                for c in 0..<channels { means[c] /= Double(rows) }
                // Second pass over centred values: the one-pass E[x²] − μ² cancels badly.
                centredSquareSums(of: input, around: means, rows: rows, channels: channels, pool: pool, into: squares)
                for c in 0..<channels {
                    let batchMean = means[c]
                    let biasedVariance = squares[c] / Double(rows)
                    let unbiasedVariance = squares[c] / Double(rows - 1)
                    mean[c] = Float(batchMean)
                    rstd[c] = Float(1 / (biasedVariance + Double(epsilon)).squareRoot())
                    runningMean[c] = (1 - momentum) * runningMean[c] + momentum * Float(batchMean)
                    runningVariance[c] = (1 - momentum) * runningVariance[c] + momentum * Float(unbiasedVariance)
                }
            }
        } else {
            for c in 0..<channels {
                mean[c] = runningMean[c]
                rstd[c] = 1 / (runningVariance[c] + epsilon).squareRoot()
            }
        }
        // out = (x − μ) · (rstd · w) + b with the two per-channel factors formed once, so the
        // loop over rows is a plain vectorisable multiply-add; with `reluAfter`, max(out, 0) in
        // the same pass (the ReLU that follows every BatchNorm but a residual branch's last).
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * channels) { buffer in
            let scale = buffer.baseAddress!, shift = scale + channels
            for c in 0..<channels {
                scale[c] = rstd[c] * (weight?[c] ?? 1)
                shift[c] = bias?[c] ?? 0
            }
            pool.forEachRowRange(rows, columns: channels) { range in
                for m in range {
                    let x = input + m * channels, out = output + m * channels
                    if reluAfter {
                        for c in 0..<channels { out[c] = max((x[c] - mean[c]) * scale[c] + shift[c], 0) }
                    } else {
                        for c in 0..<channels { out[c] = (x[c] - mean[c]) * scale[c] + shift[c] }
                    }
                }
            }
        }
        return statisticsRows
    }

    /// sums[c] = Σ_m x[m, c] over this rank's rows, x being (rows, channels).
    static func channelSums(of input: UnsafePointer<Float>, rows: Int, channels: Int, pool: ComputePool,
                            into sums: UnsafeMutablePointer<Double>) {
        pool.sumOverRows(rows, channels: channels, quantities: 1, into: sums) { range, partial in
            ColumnSums.add(range, channels: channels, into: partial,
                           vector: { m, c in ColumnSums.widen(input + m * channels + c) },
                           scalar: { m, c in Double(input[m * channels + c]) })
        }
    }

    /// sums[c] = Σ_m (x[m, c] − μ[c])² over this rank's rows.
    static func centredSquareSums(of input: UnsafePointer<Float>, around mean: UnsafePointer<Double>, rows: Int,
                                  channels: Int, pool: ComputePool, into sums: UnsafeMutablePointer<Double>) {
        pool.sumOverRows(rows, channels: channels, quantities: 1, into: sums) { range, partial in
            ColumnSums.addSquares(range, of: input, centredOn: mean, channels: channels, into: partial)
        }
    }

    /// Global batch statistics for SyncBN, in two summed passes (mean, then centred squares).
    static func synchronizedStatistics(
        mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        runningMean: UnsafeMutablePointer<Float>, runningVariance: UnsafeMutablePointer<Float>,
        rows: Int, channels: Int, momentum: Float, epsilon: Float, pool: ComputePool, sum: SumAcrossRanks
    ) -> Int {
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: channels + 1)
        defer { buffer.deallocate() }
        let local = UnsafeMutablePointer<Double>.allocate(capacity: 2 * channels), means = local + channels
        defer { local.deallocate() }
        channelSums(of: input, rows: rows, channels: channels, pool: pool, into: local)
        for c in 0..<channels { buffer[c] = Float(local[c]) }
        buffer[channels] = Float(rows)
        sum(buffer)
        let total = Int(buffer[channels].rounded())
        precondition(total > 1, "SyncBN in training needs more than one value per channel over all ranks, got \(total)")
        for c in 0..<channels { means[c] = Double(buffer[c]) / Double(total) }
        centredSquareSums(of: input, around: means, rows: rows, channels: channels, pool: pool, into: local)
        for c in 0..<channels { buffer[c] = Float(local[c]) }
        buffer[channels] = 0
        sum(buffer)
        for c in 0..<channels {
            let squares = Double(buffer[c])
            mean[c] = Float(means[c])
            rstd[c] = Float(1 / (squares / Double(total) + Double(epsilon)).squareRoot())
            runningMean[c] = (1 - momentum) * runningMean[c] + momentum * Float(means[c])
            runningVariance[c] = (1 - momentum) * runningVariance[c] + momentum * Float(squares / Double(total - 1))
        }
        return total
    }

    /// Training (batch statistics):
    ///   dinp[:, c] = rstd[c] · (dx̂ − mean_m(dx̂) − x̂ · mean_m(dx̂ · x̂)),  dx̂ = dout · w
    /// Evaluation (running statistics are constants):
    ///   dinp[:, c] = rstd[c] · dx̂
    /// dinp is written, not added to: its buffer needs no zeroing (a pass over a whole activation).
    /// Given `reluOutput`, the output of a forward run with `reluAfter`, dout is first taken
    /// through that ReLU (dout where out > 0, else 0) inside the same passes, to the bit what a
    /// separate ReLU backward would have handed over.
    /// Both:
    ///   dw[c] += Σ_m dout[m, c] · x̂[m, c]
    ///   db[c] += Σ_m dout[m, c]
    /// `training` must be the value the forward ran with. Synchronised, dw and db stay this
    /// rank's sums (the gradient all-reduce averages them) while the two means use the sums over
    /// every rank and `statisticsRows`, the forward's global row count.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
        mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        rows: Int, channels: Int, training: Bool, pool: ComputePool,
        sumAcrossRanks: SumAcrossRanks? = nil, statisticsRows: Int? = nil, reluOutput: UnsafePointer<Float>? = nil
    ) {
        // dout through the ReLU when there is one: four channels, and one.
        @inline(__always) func gradient4(_ i: Int) -> SIMD4<Float> {
            let g = ColumnSums.narrow(dOutput + i)
            guard let reluOutput else { return g }
            return SIMD4<Float>(repeating: 0).replacing(with: g, where: ColumnSums.narrow(reluOutput + i) .> 0)
        }
        @inline(__always) func gradient(_ i: Int) -> Float {
            guard let reluOutput else { return dOutput[i] }
            return reluOutput[i] > 0 ? dOutput[i] : 0
        }
        // Per channel: Σ_m dout and Σ_m dout · x̂, which give db, dw and (times w / M) the two means.
        let sumDOutput = UnsafeMutablePointer<Float>.allocate(capacity: channels)
        let sumDOutputTimesNormalized = UnsafeMutablePointer<Float>.allocate(capacity: channels)
        defer {
            sumDOutput.deallocate()
            sumDOutputTimesNormalized.deallocate()
        }
        withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * channels) { buffer in
            let sums = buffer.baseAddress!, sumsTimesNormalized = sums + channels
            pool.sumOverRows(rows, channels: channels, quantities: 2, into: sums) { range, partial in
                ColumnSums.add(range, channels: channels, into: partial,
                               vector: { m, c in SIMD4<Double>(gradient4(m * channels + c)) },
                               scalar: { m, c in Double(gradient(m * channels + c)) })
                // Σ dout · x̂ with the product in Float32, x̂ = (x − μ) · rstd.
                ColumnSums.add(range, channels: channels, into: partial + channels,
                               vector: { m, c in
                                   let normalized = (ColumnSums.narrow(input + m * channels + c) - ColumnSums.narrow(mean + c))
                                       * ColumnSums.narrow(rstd + c)
                                   return SIMD4<Double>(gradient4(m * channels + c) * normalized)
                               },
                               scalar: { m, c in
                                   Double(gradient(m * channels + c) * ((input[m * channels + c] - mean[c]) * rstd[c]))
                               })
            }
            for c in 0..<channels {
                sumDOutput[c] = Float(sums[c])
                sumDOutputTimesNormalized[c] = Float(sumsTimesNormalized[c])
                dWeight?[c] += sumDOutputTimesNormalized[c]
                dBias?[c] += sumDOutput[c]
            }
        }
        guard let dInput else { return }
        if training, let sumAcrossRanks {
            let sums = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * channels)
            defer { sums.deallocate() }
            for c in 0..<channels { sums[c] = sumDOutput[c]; sums[channels + c] = sumDOutputTimesNormalized[c] }
            sumAcrossRanks(sums)
            for c in 0..<channels { sumDOutput[c] = sums[c]; sumDOutputTimesNormalized[c] = sums[channels + c] }
        }
        // In evaluation the statistics are constants, so the two mean terms vanish.
        let meanFactor: Float = training ? 1 / Float(statisticsRows ?? rows) : 0
        // Per channel, with x̂ = (x − μ) · rstd:
        //   dinp = rstd·w · dout − rstd·w·mean(dout) − rstd²·w·mean(dout·x̂) · (x − μ)
        // so the loop over rows is dinp = a·dout − b − k·(x − μ) with a, b, k formed once.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * channels) { buffer in
            let a = buffer.baseAddress!, b = a + channels, k = b + channels
            for c in 0..<channels {
                let w = weight?[c] ?? 1
                a[c] = rstd[c] * w
                b[c] = rstd[c] * sumDOutput[c] * w * meanFactor
                k[c] = rstd[c] * rstd[c] * sumDOutputTimesNormalized[c] * w * meanFactor
            }
            pool.forEachRowRange(rows, columns: channels) { range in
                for m in range {
                    let x = input + m * channels, dout = dOutput + m * channels, dx = dInput + m * channels
                    if let reluOutput {
                        let out = reluOutput + m * channels
                        for c in 0..<channels { dx[c] = a[c] * (out[c] > 0 ? dout[c] : 0) - b[c] - k[c] * (x[c] - mean[c]) }
                    } else {
                        for c in 0..<channels { dx[c] = a[c] * dout[c] - b[c] - k[c] * (x[c] - mean[c]) }
                    }
                }
            }
        }
    }
}
