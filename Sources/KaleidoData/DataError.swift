/// A dataset that cannot be used at all. Every case names the file or folder at fault, so the
/// message alone tells the user what to fix. (A single unreadable sample is not one of these: the
/// loader skips it, counts it and logs its path; see `DataHealth`.)
public enum DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The dataset root (or a split folder inside it) does not exist or is not a folder.
    case missingRoot(path: String)
    /// The root exists but holds no class folders.
    case emptyRoot(path: String)
    /// A class folder holds no samples of the expected layout.
    case emptyClass(path: String, expected: String)
    /// A video folder holds no frames.
    case emptyVideo(path: String)
    /// An RGB-D sample lacks its RGB image or its depth map.
    case missingFile(path: String, what: String)
    /// A depth map that is not a 16-bit grayscale PNG.
    case depthBitDepth(path: String, found: String)
    /// A modality has a positive share in the mix but no dataset.
    case missingModality(Modality)
    /// Too many unreadable files in a row: the data is probably not what the config says.
    case tooManyCorrupt(path: String, attempts: Int)
    /// A saved loader state that does not fit the current data configuration.
    case stateMismatch(String)
    /// A WebDataset shard (or its listing) that cannot be used.
    case badShard(path: String, reason: String)

    public var description: String {
        switch self {
        case .missingRoot(let path): return "\(path): dataset folder does not exist or is not a folder"
        case .emptyRoot(let path): return "\(path): no class folders (expected root/<class>/...)"
        case .emptyClass(let path, let expected): return "\(path): empty class folder (expected \(expected))"
        case .emptyVideo(let path): return "\(path): video folder has no frames (expected 000001.jpg|png, ...)"
        case .missingFile(let path, let what): return "\(path): missing \(what)"
        case .depthBitDepth(let path, let found):
            return "\(path): depth map must be a 16-bit grayscale PNG, found \(found)"
        case .missingModality(let modality):
            let key = modality == .image ? "data.dataset=image_folder with data.root" : "data.\(modality)_root"
            return "data.mix.\(modality) is positive but no \(modality) dataset is configured; set \(key) or data.mix.\(modality)=0"
        case .tooManyCorrupt(let path, let attempts):
            return "\(path): \(attempts) unreadable samples in a row; is data.root pointing at the right files?"
        case .stateMismatch(let message): return "loader state does not match the data configuration: \(message)"
        case .badShard(let path, let reason): return "\(path): \(reason)"
        }
    }
}
