// Dropout and stochastic depth ("inverted" dropout): a kept value is divided by the keep
// probability 1 − p, so the expected output equals the input and evaluation is the identity.
// The cached mask folds that factor in: each entry is 0 (dropped) or 1 / (1 − p) (kept).
// With p = 0 or outside training the forward copies its input, fills the mask with ones and
// draws nothing from the generator, so switching regularisation off does not shift later draws.

import CKernels

/// Stochastic depth (timm's `drop_path`): drops whole samples of a residual branch.
///
/// out[n, i] = inp[n, i] · mask[n]
/// inp and out are (N, S) with S the floats of one sample (e.g. H·W·C); mask is (N), drawn in
/// sample order from `rng`.
public enum DropPath {
    public static func forward(
        output: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        batch: Int, sampleSize: Int, probability: Float, training: Bool,
        rng: inout SplitMix64, pool: ComputePool
    ) {
        if isActive(probability: probability, training: training) {
            let keep = 1 - probability, kept = 1 / keep
            for n in 0..<batch { mask[n] = rng.uniform() < keep ? kept : 0 }
        } else {
            mask.update(repeating: 1, count: batch)
        }
        multiply(output, by: input, groupMask: mask, groups: batch, groupSize: sampleSize, accumulate: false, pool: pool)
    }

    /// dinp[n, i] = dout[n, i] · mask[n]  (written: its buffer needs no zeroing)
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, mask: UnsafePointer<Float>,
        batch: Int, sampleSize: Int, pool: ComputePool
    ) {
        multiply(dInput, by: dOutput, groupMask: mask, groups: batch, groupSize: sampleSize, accumulate: false, pool: pool)
    }
}

/// Dropout: drops single values.
///
/// out[i] = inp[i] · mask[i]
/// inp, out and mask hold `count` floats. The forward draws one seed from `rng` and derives the
/// mask of each fixed block of values from (seed, block), so the mask can be drawn in parallel and
/// is the same for every thread count.
public enum Dropout {
    public static func forward(
        output: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        count: Int, probability: Float, training: Bool,
        rng: inout SplitMix64, pool: ComputePool
    ) {
        if isActive(probability: probability, training: training) {
            let keep = 1 - probability, kept = 1 / keep
            let seed = rng.next()
            let blocks = (count + maskBlock - 1) / maskBlock
            pool.forEachRange(blocks, minimumPerThread: max(1, ComputePool.floatsPerThread / maskBlock)) { range in
                for block in range {
                    var blockRNG = SplitMix64(keys: seed, UInt64(block))
                    for i in (block * maskBlock)..<min((block + 1) * maskBlock, count) {
                        mask[i] = blockRNG.uniform() < keep ? kept : 0
                    }
                }
            }
        } else {
            mask.update(repeating: 1, count: count)
        }
        multiply(output, by: input, groupMask: mask, groups: count, groupSize: 1, accumulate: false, pool: pool)
    }

    /// dinp[i] += dout[i] · mask[i]
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, mask: UnsafePointer<Float>,
        count: Int, pool: ComputePool
    ) {
        multiply(dInput, by: dOutput, groupMask: mask, groups: count, groupSize: 1, accumulate: true, pool: pool)
    }

    /// Values per independently seeded block of the mask.
    static let maskBlock = 4096
}

private func isActive(probability: Float, training: Bool) -> Bool {
    precondition((0...1).contains(probability), "drop probability \(probability) is outside [0, 1]")
    return training && probability > 0
}

/// target[g, i] = (or +=) source[g, i] · mask[g], for `groups` groups of `groupSize` floats.
private func multiply(
    _ target: UnsafeMutablePointer<Float>, by source: UnsafePointer<Float>, groupMask mask: UnsafePointer<Float>,
    groups: Int, groupSize: Int, accumulate: Bool, pool: ComputePool
) {
    pool.forEachRowRange(groups, columns: groupSize) { range in
        for g in range {
            // target[i] = (accumulate ? target[i] : 0) + source[i] · mask[g], in place when target is source.
            let offset = g * groupSize
            kaleido_scale_add(target + offset, source + offset, mask[g], groupSize, accumulate ? 1 : 0)
        }
    }
}
