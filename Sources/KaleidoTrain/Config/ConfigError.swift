/// Where a config value came from, so errors point at the line a user must edit.
public enum ConfigOrigin: Equatable, Sendable, CustomStringConvertible {
    /// Built-in default (the debug configuration).
    case defaults
    /// A YAML file, with the line of the value when known.
    case file(path: String, line: Int?)
    /// A `--set key=value` override from the command line.
    case override(String)

    public var description: String {
        switch self {
        case .defaults: return "defaults"
        case .file(let path, _): return path
        case .override(let text): return "--set \(text)"
        }
    }

    var lineSuffix: String {
        if case .file(_, let line?) = self { return " (line \(line))" }
        return ""
    }
}

/// A configuration that cannot be used. Every case names the file (or override) and the key path.
public enum ConfigError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case syntax(path: String, reason: String)
    case notAMapping(origin: ConfigOrigin, keyPath: String)
    case unknownKey(origin: ConfigOrigin, keyPath: String, suggestion: String?)
    case typeMismatch(origin: ConfigOrigin, keyPath: String, expected: String, got: String)
    case outOfRange(origin: ConfigOrigin, keyPath: String, message: String)
    case badOverride(text: String, reason: String)
    case baseCycle(path: String)
    /// `--resume` of a checkpoint saved with other values of keys that alter the run.
    case resumeChanged(checkpoint: String, changes: [ResumeConfigCheck.Change])

    public var description: String {
        switch self {
        case .unreadable(let path, let reason):
            return "\(path): cannot read config: \(reason)"
        case .syntax(let path, let reason):
            return "\(path): invalid YAML: \(reason)"
        case .notAMapping(let origin, let keyPath):
            let at = keyPath.isEmpty ? "top level" : keyPath
            return "\(origin): \(at): expected a mapping of keys\(origin.lineSuffix)"
        case .unknownKey(let origin, let keyPath, let suggestion):
            let hint = suggestion.map { " (did you mean \($0)?)" } ?? ""
            return "\(origin): \(keyPath): unknown key\(hint)\(origin.lineSuffix)"
        case .typeMismatch(let origin, let keyPath, let expected, let got):
            return "\(origin): \(keyPath): expected \(expected), got \(got)\(origin.lineSuffix)"
        case .outOfRange(let origin, let keyPath, let message):
            return "\(origin): \(keyPath): \(message)\(origin.lineSuffix)"
        case .badOverride(let text, let reason):
            return "--set \(text): \(reason)"
        case .baseCycle(let path):
            return "\(path): `base:` files include each other in a cycle"
        case .resumeChanged(let checkpoint, let changes):
            return "--resume \(checkpoint): the checkpoint was saved with another value of "
                + (changes.count == 1 ? "a key that changes" : "\(changes.count) keys that change")
                + " the data stream, the model or the objective:\n"
                + changes.map { "  \($0)" }.joined(separator: "\n")
                + "\nResume with the checkpoint's values, or accept the change with "
                + changes.map { "--resume-allow \($0.keyPath)" }.joined(separator: " ")
        }
    }
}
