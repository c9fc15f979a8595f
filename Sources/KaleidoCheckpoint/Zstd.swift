import CZstd

/// Failure of a zstd call, with the name of what was being (de)compressed.
public struct ZstdError: Error, CustomStringConvertible {
    public let what: String
    public let message: String
    public var description: String { "\(what): \(message)" }
}

/// One-shot zstd compression of in-memory buffers (checkpoint shards are compressed whole).
public enum Zstd {
    /// Version of the libzstd actually loaded, e.g. "1.5.4".
    public static var version: String { String(cString: ZSTD_versionString()) }

    /// Highest level this libzstd accepts.
    public static var maxLevel: Int { Int(ZSTD_maxCLevel()) }

    /// Compresses `input` at `level`. `what` names the data in errors (a file or shard).
    public static func compress(_ input: UnsafeRawBufferPointer, level: Int, what: String = "buffer") throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = output.withUnsafeMutableBytes { out in
            ZSTD_compress(out.baseAddress, bound, input.baseAddress, input.count, Int32(level))
        }
        if ZSTD_isError(written) != 0 {
            throw ZstdError(what: what, message: String(cString: ZSTD_getErrorName(written)))
        }
        output.removeSubrange(written...)
        return output
    }

    /// Decompresses a whole zstd frame whose content size must equal `expectedSize`:
    /// a shorter or longer result means a truncated or foreign file, which is an error.
    public static func decompress(_ input: UnsafeRawBufferPointer, expectedSize: Int, what: String = "buffer") throws -> [UInt8] {
        let declared = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        if declared == ZSTD_CONTENTSIZE_ERROR {
            throw ZstdError(what: what, message: "not a zstd frame (corrupt or truncated)")
        }
        if declared != ZSTD_CONTENTSIZE_UNKNOWN, declared != UInt64(expectedSize) {
            throw ZstdError(what: what, message: "frame holds \(declared) bytes, expected \(expectedSize)")
        }
        var output = [UInt8](repeating: 0, count: expectedSize)
        let produced = output.withUnsafeMutableBytes { out in
            ZSTD_decompress(out.baseAddress, expectedSize, input.baseAddress, input.count)
        }
        if ZSTD_isError(produced) != 0 {
            throw ZstdError(what: what, message: String(cString: ZSTD_getErrorName(produced)))
        }
        guard produced == expectedSize else {
            throw ZstdError(what: what, message: "decompressed \(produced) bytes, expected \(expectedSize)")
        }
        return output
    }
}
