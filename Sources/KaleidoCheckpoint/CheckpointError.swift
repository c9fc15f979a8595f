/// Why a checkpoint could not be saved, found or loaded. Each description names the file (and,
/// where known, the shard, chunk, array or manifest key) at fault, so the message alone says
/// what to delete, restore or fix.
public enum CheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A file system call failed (`operation` is e.g. "write", "fsync", "rename").
    case io(path: String, operation: String, message: String)
    /// `manifest.json` is absent, not JSON, or lacks a key.
    case manifest(path: String, message: String)
    /// The manifest was written by a newer Kaleido.
    case futureFormat(path: String, version: Int, supported: Int)
    /// A shard the manifest lists is not on disk.
    case missingShard(path: String)
    /// A shard is shorter (or longer) than the manifest says: an interrupted copy or write.
    case truncatedShard(path: String, expected: Int, actual: Int)
    /// A shard's bytes do not match the manifest's CRC-32C.
    case checksumMismatch(path: String, expected: String, actual: String)
    /// A shard's zstd data could not be decoded; `arrays` says which arrays that chunk holds.
    case corruptShard(path: String, chunk: Int, arrays: [String], message: String)
    /// One or more ranks could not write their shard; every rank throws this in the same step and
    /// the previous checkpoint stays the newest.
    case saveFailed(step: Int, ranks: [Int], message: String)
    /// The checkpoint has no array of that name.
    case unknownArray(name: String, path: String, available: [String])
    /// The checkpoint's array does not fit what it is being restored into (another model or config).
    case layoutMismatch(array: String, path: String, detail: String)
    /// Invalid input to the library (e.g. a world size below 1).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .io(let path, let operation, let message):
            return "\(path): \(operation) failed: \(message)"
        case .manifest(let path, let message):
            return "\(path): \(message)"
        case .futureFormat(let path, let version, let supported):
            return "\(path): checkpoint format version \(version) is newer than this Kaleido reads (\(supported)); upgrade Kaleido"
        case .missingShard(let path):
            return "\(path): shard missing"
        case .truncatedShard(let path, let expected, let actual):
            return "\(path): shard is \(actual) bytes, the manifest says \(expected) (truncated or incomplete copy)"
        case .checksumMismatch(let path, let expected, let actual):
            return "\(path): CRC-32C \(actual) does not match the manifest's \(expected) (corrupted shard)"
        case .corruptShard(let path, let chunk, let arrays, let message):
            return "\(path): chunk \(chunk) (holding \(arrays.joined(separator: ", "))) cannot be decoded: \(message)"
        case .saveFailed(let step, let ranks, let message):
            return "checkpoint of step \(step) failed on rank\(ranks.count == 1 ? "" : "s") "
                + ranks.map(String.init).joined(separator: ", ") + ": \(message); the previous checkpoint is kept"
        case .unknownArray(let name, let path, let available):
            return "\(path): no array '\(name)' (it has \(available.joined(separator: ", ")))"
        case .layoutMismatch(let array, let path, let detail):
            return "\(path): array '\(array)' does not fit this model: \(detail)"
        case .invalidArgument(let message):
            return message
        }
    }
}
