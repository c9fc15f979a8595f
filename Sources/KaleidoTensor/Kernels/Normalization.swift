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
/// rstd are (M).
public enum LayerNorm {
    public static func forward(
        output: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
        rows: Int, channels: Int, epsilon: Float = 1e-5, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: channels) { range in
            for m in range {
                let x = input + m * channels, out = output + m * channels
                let mu = RowSum.sum(channels) { x[$0] } / Float(channels)
                // Second pass over centred values: the one-pass E[x²] − μ² cancels badly.
                let squares = RowSum.sum(channels) { (x[$0] - mu) * (x[$0] - mu) }
                let s = 1 / (squares / Float(channels) + epsilon).squareRoot()
                if let weight, let bias {
                    for c in 0..<channels { out[c] = (x[c] - mu) * s * weight[c] + bias[c] }
                } else {
                    for c in 0..<channels { out[c] = (x[c] - mu) * s * (weight?[c] ?? 1) + (bias?[c] ?? 0) }
                }
                mean[m] = mu
                rstd[m] = s
            }
        }
    }

    /// dinp[m, :] += rstd[m] · (dx̂ − mean_c(dx̂) − x̂ · mean_c(dx̂ · x̂)),  dx̂ = dout · w
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
                for m in range {
                    let x = input + m * channels, dout = dOutput + m * channels, dx = dInput + m * channels
                    let mu = mean[m], s = rstd[m]
                    let meanDNormalized: Float, meanDNormalizedTimesNormalized: Float
                    if let weight {
                        meanDNormalized = RowSum.sum(channels) { dout[$0] * weight[$0] } / Float(channels)
                        meanDNormalizedTimesNormalized = RowSum.sum(channels) { dout[$0] * weight[$0] * ((x[$0] - mu) * s) } / Float(channels)
                        for c in 0..<channels {
                            dx[c] += s * (dout[c] * weight[c] - meanDNormalized - (x[c] - mu) * s * meanDNormalizedTimesNormalized)
                        }
                    } else {
                        meanDNormalized = RowSum.sum(channels) { dout[$0] } / Float(channels)
                        meanDNormalizedTimesNormalized = RowSum.sum(channels) { dout[$0] * ((x[$0] - mu) * s) } / Float(channels)
                        for c in 0..<channels {
                            dx[c] += s * (dout[c] - meanDNormalized - (x[c] - mu) * s * meanDNormalizedTimesNormalized)
                        }
                    }
                }
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

/// Σ_{c < count} term(c) in eight interleaved partial sums (lane j sums c ≡ j mod 8), then the
/// lanes and the tail: a fixed order, so the result does not depend on the thread count, and
/// eight independent chains instead of one serial dependency (a plain Float loop is not
/// vectorised, because reassociating it would change the result).
enum RowSum {
    @inline(__always)
    static func sum(_ count: Int, _ term: (Int) -> Float) -> Float {
        var lanes = SIMD8<Float>()
        var c = 0
        while c + 8 <= count {
            lanes += SIMD8<Float>(term(c), term(c + 1), term(c + 2), term(c + 3),
                                  term(c + 4), term(c + 5), term(c + 6), term(c + 7))
            c += 8
        }
        var total = lanes.sum()
        while c < count { total += term(c); c += 1 }
        return total
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
/// Statistics are summed per channel in Float64, serially over rows, so they do not depend on the
/// thread count.
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
        sumAcrossRanks: SumAcrossRanks? = nil
    ) -> Int {
        var statisticsRows = rows
        if training, let sumAcrossRanks {
            statisticsRows = synchronizedStatistics(mean: mean, rstd: rstd, input: input, runningMean: runningMean,
                                                    runningVariance: runningVariance, rows: rows, channels: channels,
                                                    momentum: momentum, epsilon: epsilon, sum: sumAcrossRanks)
        } else if training {
            precondition(rows > 1, "BatchNorm in training needs more than one value per channel, got \(rows) rows")
            pool.forEachChannelRange(channels) { range in
                var sums = [Double](repeating: 0, count: range.count)
                for m in 0..<rows {
                    let x = input + m * channels
                    for c in range { sums[c - range.lowerBound] += Double(x[c]) }
                }
                let means = sums.map { $0 / Double(rows) }
                // Second pass over centred values: the one-pass E[x²] − μ² cancels badly.
                var squares = [Double](repeating: 0, count: range.count)
                for m in 0..<rows {
                    let x = input + m * channels
                    for c in range {
                        let centred = Double(x[c]) - means[c - range.lowerBound]
                        squares[c - range.lowerBound] += centred * centred
                    }
                }
                for c in range {
                    let batchMean = means[c - range.lowerBound]
                    let biasedVariance = squares[c - range.lowerBound] / Double(rows)
                    let unbiasedVariance = squares[c - range.lowerBound] / Double(rows - 1)
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
        // loop over rows is a plain vectorisable multiply-add.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * channels) { buffer in
            let scale = buffer.baseAddress!, shift = scale + channels
            for c in 0..<channels {
                scale[c] = rstd[c] * (weight?[c] ?? 1)
                shift[c] = bias?[c] ?? 0
            }
            pool.forEachRowRange(rows, columns: channels) { range in
                for m in range {
                    let x = input + m * channels, out = output + m * channels
                    for c in 0..<channels { out[c] = (x[c] - mean[c]) * scale[c] + shift[c] }
                }
            }
        }
        return statisticsRows
    }

    /// Global batch statistics for SyncBN, in two summed passes (mean, then centred squares).
    static func synchronizedStatistics(
        mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        runningMean: UnsafeMutablePointer<Float>, runningVariance: UnsafeMutablePointer<Float>,
        rows: Int, channels: Int, momentum: Float, epsilon: Float, sum: SumAcrossRanks
    ) -> Int {
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: channels + 1)
        defer { buffer.deallocate() }
        var local = [Double](repeating: 0, count: channels)
        for m in 0..<rows { for c in 0..<channels { local[c] += Double(input[m * channels + c]) } }
        for c in 0..<channels { buffer[c] = Float(local[c]) }
        buffer[channels] = Float(rows)
        sum(buffer)
        let total = Int(buffer[channels].rounded())
        precondition(total > 1, "SyncBN in training needs more than one value per channel over all ranks, got \(total)")
        let means = (0..<channels).map { Double(buffer[$0]) / Double(total) }
        local = [Double](repeating: 0, count: channels)
        for m in 0..<rows {
            for c in 0..<channels {
                let centred = Double(input[m * channels + c]) - means[c]
                local[c] += centred * centred
            }
        }
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
    ///   dinp[:, c] += rstd[c] · (dx̂ − mean_m(dx̂) − x̂ · mean_m(dx̂ · x̂)),  dx̂ = dout · w
    /// Evaluation (running statistics are constants):
    ///   dinp[:, c] += rstd[c] · dx̂
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
        sumAcrossRanks: SumAcrossRanks? = nil, statisticsRows: Int? = nil
    ) {
        // Per channel: Σ_m dout and Σ_m dout · x̂, which give db, dw and (times w / M) the two means.
        let sumDOutput = UnsafeMutablePointer<Float>.allocate(capacity: channels)
        let sumDOutputTimesNormalized = UnsafeMutablePointer<Float>.allocate(capacity: channels)
        defer {
            sumDOutput.deallocate()
            sumDOutputTimesNormalized.deallocate()
        }
        pool.forEachChannelRange(channels) { range in
            var sums = [Double](repeating: 0, count: range.count)
            var sumsTimesNormalized = [Double](repeating: 0, count: range.count)
            for m in 0..<rows {
                let x = input + m * channels, dout = dOutput + m * channels
                for c in range {
                    let normalized = (x[c] - mean[c]) * rstd[c]
                    sums[c - range.lowerBound] += Double(dout[c])
                    sumsTimesNormalized[c - range.lowerBound] += Double(dout[c] * normalized)
                }
            }
            for c in range {
                sumDOutput[c] = Float(sums[c - range.lowerBound])
                sumDOutputTimesNormalized[c] = Float(sumsTimesNormalized[c - range.lowerBound])
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
        //   dinp += rstd·w · dout − rstd·w·mean(dout) − rstd²·w·mean(dout·x̂) · (x − μ)
        // so the loop over rows is dinp += a·dout − b − k·(x − μ) with a, b, k formed once.
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
                    for c in 0..<channels { dx[c] += a[c] * dout[c] - b[c] - k[c] * (x[c] - mean[c]) }
                }
            }
        }
    }
}
