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
    /// dw and db are summed before dinp is written, so dinp may be dout's own memory.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
        mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        rows: Int, channels: Int, pool: ComputePool
    ) {
        if dWeight != nil || dBias != nil {
            pool.forEachChannelRange(channels) { range in
                for m in 0..<rows {
                    let x = input + m * channels, dout = dOutput + m * channels
                    let mu = mean[m], s = rstd[m]
                    if let dWeight { for c in range { dWeight[c] += dout[c] * ((x[c] - mu) * s) } }
                    if let dBias { for c in range { dBias[c] += dout[c] } }
                }
            }
        }
        guard let dInput else { return }
        pool.forEachRowRange(rows, columns: channels) { range in
            let offset = range.lowerBound * channels
            kaleido_layernorm_input_gradient(dInput + offset, dOutput + offset, input + offset, weight,
                                             mean + range.lowerBound, rstd + range.lowerBound, range.count, channels)
        }
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
/// (`ComputePool.sumOverRows`), so they do not depend on the thread count. The passes over the
/// rows are CKernels' `kaleido_batchnorm_*` (16-float vectors, cloned for AVX-512, x86-64-v3 and
/// baseline, the same bits on each).
///
/// Synchronised (SyncBN): given `sumAcrossRanks`, an in-place element-wise sum over the ranks
/// of a data-parallel job, the statistics are those of the global batch: Σx and the row count
/// are summed first (giving μ), then Σ(x − μ) and Σ(x − μ)² (giving σ²); the backward sums Σdout and
/// Σdout·x̂ the same way before the input gradient. The kernel does not know how the sum is
/// done (MPI lives elsewhere); it returns the global row count, which the backward needs.
public enum BatchNorm {
    /// The kernel's way of summing per-channel values over ranks, in place.
    public typealias SumAcrossRanks = (UnsafeMutableBufferPointer<Float>) -> Void

    /// Returns the rows the statistics covered: `rows`, or the global count when synchronised.
    /// With `addend` (M, C), out = BN(inp) + addend, and with `reluAfter`, out = max(out, 0), in
    /// the same pass: a residual block's sum and ReLU after its branch's last BatchNorm.
    @discardableResult
    public static func forward(
        output: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, addend: UnsafePointer<Float>? = nil, weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
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
                let sums = buffer.baseAddress!, squares = sums + channels
                // One pass of Σ(x − k) and Σ(x − k)² with k = the channel's first value: a sample
                // of the channel, so S2/M − (S1/M)² does not cancel the way E[x²] − μ² can.
                pool.sumOverRows(rows, channels: channels, quantities: 2, into: sums) { range, partial in
                    kaleido_batchnorm_sums(partial, partial + channels, input + range.lowerBound * channels, input,
                                           range.count, channels)
                }
                for c in 0..<channels {
                    let shiftedMean = sums[c] / Double(rows)
                    let biasedVariance = max(squares[c] / Double(rows) - shiftedMean * shiftedMean, 0)
                    let batchMean = Double(input[c]) + shiftedMean
                    update(channel: c, mean: batchMean, biasedVariance: biasedVariance, rows: rows, into: mean, rstd,
                           runningMean, runningVariance, momentum: momentum, epsilon: epsilon)
                }
            }
        } else {
            for c in 0..<channels {
                mean[c] = runningMean[c]
                rstd[c] = 1 / (runningVariance[c] + epsilon).squareRoot()
            }
        }
        // out = (x − μ) · scale + shift with scale = rstd · w and shift = b formed once.
        withAffineFactors(rstd: rstd, weight: weight, bias: bias, channels: channels) { scale, shift in
            pool.forEachRowRange(rows, columns: channels) { range in
                let offset = range.lowerBound * channels
                kaleido_batchnorm_normalize(output + offset, input + offset, addend.map { $0 + offset }, mean, scale, shift,
                                            range.count, channels, reluAfter ? 1 : 0)
            }
        }
        return statisticsRows
    }

    /// scale[c] = rstd[c] · w[c], shift[c] = b[c] (w = 1, b = 0 when absent): the forward's
    /// factors, which the backward forms again to recompute the ReLU's mask to the bit.
    static func withAffineFactors<R>(rstd: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
                                     bias: UnsafePointer<Float>?, channels: Int,
                                     _ body: (UnsafePointer<Float>, UnsafePointer<Float>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * channels) { buffer in
            let scale = buffer.baseAddress!, shift = scale + channels
            for c in 0..<channels {
                scale[c] = rstd[c] * (weight?[c] ?? 1)
                shift[c] = bias?[c] ?? 0
            }
            return body(scale, shift)
        }
    }

    /// The cache's μ and rstd from the batch's mean and biased variance, and the running
    /// statistics moved towards them (the variance in its unbiased form).
    @inline(__always)
    static func update(channel c: Int, mean batchMean: Double, biasedVariance: Double, rows: Int,
                       into mean: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                       _ runningMean: UnsafeMutablePointer<Float>, _ runningVariance: UnsafeMutablePointer<Float>,
                       momentum: Float, epsilon: Float) {
        let unbiasedVariance = biasedVariance * Double(rows) / Double(rows - 1)
        mean[c] = Float(batchMean)
        rstd[c] = Float(1 / (biasedVariance + Double(epsilon)).squareRoot())
        runningMean[c] = (1 - momentum) * runningMean[c] + momentum * Float(batchMean)
        runningVariance[c] = (1 - momentum) * runningVariance[c] + momentum * Float(unbiasedVariance)
    }

    /// Global batch statistics for SyncBN in two summed passes: Σx and the row count give μ, then
    /// Σ(x − μ) and Σ(x − μ)² (μ rounded to Float, the first sum its correction) give σ².
    static func synchronizedStatistics(
        mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        runningMean: UnsafeMutablePointer<Float>, runningVariance: UnsafeMutablePointer<Float>,
        rows: Int, channels: Int, momentum: Float, epsilon: Float, pool: ComputePool, sum: SumAcrossRanks
    ) -> Int {
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * channels + 1)
        defer { buffer.deallocate() }
        let local = UnsafeMutablePointer<Double>.allocate(capacity: 2 * channels)
        defer { local.deallocate() }
        pool.sumOverRows(rows, channels: channels, quantities: 1, into: local) { range, partial in
            kaleido_batchnorm_sums(partial, nil, input + range.lowerBound * channels, nil, range.count, channels)
        }
        for c in 0..<channels { buffer[c] = Float(local[c]) }
        buffer[channels] = Float(rows)
        sum(UnsafeMutableBufferPointer(rebasing: buffer[0...channels]))
        let total = Int(buffer[channels].rounded())
        precondition(total > 1, "SyncBN in training needs more than one value per channel over all ranks, got \(total)")
        for c in 0..<channels { mean[c] = Float(Double(buffer[c]) / Double(total)) }
        pool.sumOverRows(rows, channels: channels, quantities: 2, into: local) { range, partial in
            kaleido_batchnorm_sums(partial, partial + channels, input + range.lowerBound * channels, mean,
                                   range.count, channels)
        }
        for c in 0..<2 * channels { buffer[c] = Float(local[c]) }
        sum(UnsafeMutableBufferPointer(rebasing: buffer[0..<2 * channels]))
        for c in 0..<channels {
            let correction = Double(buffer[c]) / Double(total)
            let biasedVariance = max(Double(buffer[channels + c]) / Double(total) - correction * correction, 0)
            update(channel: c, mean: Double(mean[c]) + correction, biasedVariance: biasedVariance, rows: total,
                   into: mean, rstd, runningMean, runningVariance, momentum: momentum, epsilon: epsilon)
        }
        return total
    }

    /// Training (batch statistics):
    ///   dinp[:, c] = rstd[c] · (dx̂ − mean_m(dx̂) − x̂ · mean_m(dx̂ · x̂)),  dx̂ = dout · w
    /// Evaluation (running statistics are constants):
    ///   dinp[:, c] = rstd[c] · dx̂
    /// dinp is written, not added to: its buffer needs no zeroing (a pass over a whole activation).
    /// With `reluAfter` (the forward's), dout is first taken through that ReLU (dout where the
    /// forward's output was positive, else 0) inside the same passes; the mask is recomputed from
    /// x, `weight` and `bias` with the forward's arithmetic, so the output need not be kept.
    /// With the forward's `addend` the mask is that of BN(x) + addend, and `dAddend` (which may be
    /// dOutput) receives dout through the ReLU: the gradient of the sum, for the shortcut's
    /// backward.
    /// Both:
    ///   dw[c] += Σ_m dout[m, c] · x̂[m, c]
    ///   db[c] += Σ_m dout[m, c]
    /// `training` must be the value the forward ran with. Synchronised, dw and db stay this
    /// rank's sums (the gradient all-reduce averages them) while the two means use the sums over
    /// every rank and `statisticsRows`, the forward's global row count.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
        bias: UnsafePointer<Float>?, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        rows: Int, channels: Int, training: Bool, pool: ComputePool,
        sumAcrossRanks: SumAcrossRanks? = nil, statisticsRows: Int? = nil, reluAfter: Bool = false,
        addend: UnsafePointer<Float>? = nil, dAddend: UnsafeMutablePointer<Float>? = nil
    ) {
        precondition(reluAfter || (addend == nil && dAddend == nil), "BatchNorm's addend gradient is for a fused ReLU")
        precondition(dAddend != nil || addend == nil, "BatchNorm with an addend gives its gradient in dAddend")
        let relu: Int32 = reluAfter ? 1 : 0
        withAffineFactors(rstd: rstd, weight: weight, bias: bias, channels: channels) { scale, shift in
            // Per channel: Σ_m dout and Σ_m dout · x̂, which give db, dw and (times w / M) the two means.
            let sums = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * channels)
            defer { sums.deallocate() }
            let sumDOutput = sums.baseAddress!, sumDOutputTimesNormalized = sumDOutput + channels
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * channels) { buffer in
                let exact = buffer.baseAddress!
                pool.sumOverRows(rows, channels: channels, quantities: 2, into: exact) { range, partial in
                    let offset = range.lowerBound * channels
                    kaleido_batchnorm_gradient_sums(partial, partial + channels, dAddend.map { $0 + offset }, dOutput + offset,
                                                    input + offset, addend.map { $0 + offset }, mean, scale, shift,
                                                    range.count, channels, relu)
                }
                for c in 0..<channels {
                    sumDOutput[c] = Float(exact[c])
                    sumDOutputTimesNormalized[c] = Float(exact[channels + c] * Double(rstd[c]))
                    dWeight?[c] += sumDOutputTimesNormalized[c]
                    dBias?[c] += sumDOutput[c]
                }
            }
            guard let dInput else { return }
            precondition(dAddend != dInput, "BatchNorm: dInput over dAddend, which the shortcut still needs")
            if training, let sumAcrossRanks { sumAcrossRanks(sums) }
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
                    let offset = range.lowerBound * channels
                    // With dAddend, dout already went through the ReLU into it.
                    kaleido_batchnorm_input_gradient(dInput + offset, (dAddend.map { UnsafePointer($0) } ?? dOutput) + offset,
                                                     input + offset, mean, a, b, k, scale, shift, range.count, channels,
                                                     dAddend == nil ? relu : 0)
                }
            }
        }
    }
}
