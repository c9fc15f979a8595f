import Foundation

/// Softmax over the last dimension.
///
/// out[r, j] = exp(x[r, j]) / Σ_k exp(x[r, k])
/// inp and out are (rows, columns). The backward works from the output alone, which is the cache.
public enum Softmax {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        rows: Int, columns: Int, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: columns) { range in
            for r in range {
                let row = output + r * columns
                let (_, sum) = exponentiateRow(output: row, input: input + r * columns, columns: columns)
                let inverseSum = 1 / sum
                for j in 0..<columns { row[j] *= inverseSum }
            }
        }
    }

    /// dinp[r, j] += out[r, j] · (dout[r, j] − Σ_k dout[r, k] · out[r, k])
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, output: UnsafePointer<Float>,
        rows: Int, columns: Int, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: columns) { range in
            for r in range {
                let offset = r * columns
                var dot: Float = 0
                for j in 0..<columns { dot += dOutput[offset + j] * output[offset + j] }
                for j in 0..<columns { dInput[offset + j] += output[offset + j] * (dOutput[offset + j] - dot) }
            }
        }
    }

    /// Writes exp(x_j − max) into `output` and returns the max and the sum of the exponentials.
    /// The max is subtracted only for numerical stability: exp never overflows, and the sum is at
    /// least 1, so its logarithm and inverse are safe.
    static func exponentiateRow(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, columns: Int
    ) -> (max: Float, sum: Float) {
        var maximum = -Float.infinity
        for j in 0..<columns { maximum = max(maximum, input[j]) }
        return (maximum, exponentiate(output: output, input: input, columns: columns, subtracting: maximum))
    }

    /// out[j] = exp(inp[j] − shift) with `VectorMath.exp` (a loop LLVM vectorises); returns
    /// Σ_j out[j], summed in eight interleaved partial sums. `output` may be `input`.
    @inline(__always)
    static func exponentiate(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, columns: Int,
                             subtracting shift: Float) -> Float {
        for j in 0..<columns { output[j] = VectorMath.exp(input[j] - shift) }
        var sums = SIMD8<Float>(repeating: 0)
        var j = 0
        while j + 8 <= columns {
            sums += UnsafeRawPointer(output + j).loadUnaligned(as: SIMD8<Float>.self)
            j += 8
        }
        var sum = sums.sum()
        while j < columns { sum += output[j]; j += 1 }
        return sum
    }
}

/// Log-softmax over the last dimension.
///
/// out[r, j] = x[r, j] − log Σ_k exp(x[r, k])
/// inp and out are (rows, columns). The backward works from the output alone, which is the cache.
public enum LogSoftmax {
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        rows: Int, columns: Int, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: columns) { range in
            for r in range {
                let row = output + r * columns, inputRow = input + r * columns
                // The exponentials are only needed for their sum; the output row is the scratch.
                let (maximum, sum) = Softmax.exponentiateRow(output: row, input: inputRow, columns: columns)
                let logSumExp = maximum + log(sum)
                for j in 0..<columns { row[j] = inputRow[j] - logSumExp }
            }
        }
    }

    /// dinp[r, j] += dout[r, j] − exp(out[r, j]) · Σ_k dout[r, k]
    public static func backward(
        dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, output: UnsafePointer<Float>,
        rows: Int, columns: Int, pool: ComputePool
    ) {
        pool.forEachRowRange(rows, columns: columns) { range in
            for r in range {
                let offset = r * columns
                var sum: Float = 0
                for j in 0..<columns { sum += dOutput[offset + j] }
                for j in 0..<columns { dInput[offset + j] += dOutput[offset + j] - exp(output[offset + j]) * sum }
            }
        }
    }
}
