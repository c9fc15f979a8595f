/// 64-bit FNV-1a. Text is hashed a byte per step; floats a whole bit pattern per step (not per
/// byte), which is how the replica fingerprints compared across ranks have always been defined.
public enum FNV1a {
    public static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    public static let prime: UInt64 = 0x0000_0100_0000_01b3

    /// The hash of `text`'s UTF-8 bytes.
    public static func hash(_ text: String) -> UInt64 {
        var hash = offsetBasis
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* prime }
        return hash
    }

    /// The hash of the floats' bit patterns, continuing from `start` (a hash of what came before).
    public static func hash(_ values: UnsafeBufferPointer<Float>, continuing start: UInt64 = offsetBasis) -> UInt64 {
        var hash = start
        for value in values { hash = (hash ^ UInt64(value.bitPattern)) &* prime }
        return hash
    }
}
