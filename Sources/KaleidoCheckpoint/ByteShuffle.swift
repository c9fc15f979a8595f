/// Byte shuffling of fixed-width elements before compression.
///
/// Float32 weights compress poorly as they are: the low mantissa bytes are noise and interleave
/// with the exponent bytes that repeat. Gathering byte 0 of every element, then byte 1, and so on
/// puts the repetitive exponent bytes side by side (as HDF5's and Blosc's shuffle filters do):
/// on this machine zstd level 1 goes from ratio ≈1.08 to ≈1.19 on fp32 weights.
public enum ByteShuffle {
    /// out[b · n + i] = in[i · width + b] for n = count / width elements; a tail shorter than one
    /// element is copied as it is.
    public static func shuffle(_ input: UnsafeRawBufferPointer, elementWidth width: Int) -> [UInt8] {
        let n = input.count / width
        var output = [UInt8](repeating: 0, count: input.count)
        output.withUnsafeMutableBytes { out in
            for byte in 0..<width {
                let row = byte * n
                for i in 0..<n { out[row + i] = input[i * width + byte] }
            }
            for t in (n * width)..<input.count { out[t] = input[t] }
        }
        return output
    }

    /// Inverse of `shuffle`.
    public static func unshuffle(_ input: UnsafeRawBufferPointer, elementWidth width: Int) -> [UInt8] {
        let n = input.count / width
        var output = [UInt8](repeating: 0, count: input.count)
        output.withUnsafeMutableBytes { out in
            for byte in 0..<width {
                let row = byte * n
                for i in 0..<n { out[i * width + byte] = input[row + i] }
            }
            for t in (n * width)..<input.count { out[t] = input[t] }
        }
        return output
    }
}
