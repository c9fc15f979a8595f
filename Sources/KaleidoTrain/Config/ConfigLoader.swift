import Foundation
import Yams

/// A configuration after files and overrides are applied, with where each value came from.
public struct ResolvedConfig: Sendable {
    public let config: KaleidoConfig
    /// Origin of every value that did not come from the defaults, by snake_case key path.
    public let origins: [String: ConfigOrigin]

    /// The resolved configuration as YAML with snake_case keys (what `kaleido config show` prints
    /// and what checkpoint manifests record).
    public func yaml() throws -> String {
        try ConfigLoader.yaml(of: config)
    }
}

/// Builds a `KaleidoConfig` from the defaults, an optional YAML file and `--set` overrides, in that
/// order, rejecting anything it does not understand.
///
/// How: the defaults are encoded to a YAML tree, which is the schema: a key the user writes must
/// exist in it (so a typo is an error, not a silently ignored value). User values replace leaves
/// of that tree, which is then decoded into the typed structs (so a wrong type is an error naming
/// its key), and finally each struct checks its ranges.
public enum ConfigLoader {
    /// Resolves `file` (if any) and `overrides` (each `a.b.c=value`, value in YAML syntax).
    public static func load(file: String? = nil, overrides: [String] = []) throws -> ResolvedConfig {
        var state = try MergeState()
        if let file {
            try state.mergeFile(file, visiting: [])
        }
        for text in overrides {
            try state.mergeOverride(text)
        }
        return try finish(state)
    }

    private static func finish(_ state: MergeState) throws -> ResolvedConfig {
        let config = try state.decode()
        var validator = ConfigValidator()
        config.validate(&validator)
        if let first = validator.violations.first {
            throw ConfigError.outOfRange(origin: state.origin(of: first.path), keyPath: first.path, message: first.message)
        }
        return ResolvedConfig(config: config, origins: state.origins)
    }

    /// Parses YAML text that is not from a file (tests, embedded configs); `name` stands in for the path
    /// in errors, and `base:` paths are resolved relative to the current directory.
    public static func load(yaml: String, name: String, overrides: [String] = []) throws -> ResolvedConfig {
        var state = try MergeState()
        try state.mergeDocument(yaml, path: name, visiting: [])
        for text in overrides {
            try state.mergeOverride(text)
        }
        return try finish(state)
    }

    static func yaml(of config: KaleidoConfig) throws -> String {
        let node = try schemaNode(of: config)
        return try Yams.serialize(node: node, sortKeys: false)
    }

    /// The config encoded as a YAML tree with snake_case keys.
    static func schemaNode(of config: KaleidoConfig) throws -> Node {
        let text = try YAMLEncoder().encode(config)
        guard let node = try Yams.compose(yaml: text) else { fatalError("the encoder produced no YAML") }
        return node.mappingKeys(KeyStyle.snakeCase).readableFloats()
    }
}

// MARK: - Merging

private struct MergeState {
    /// The defaults tree; the set of keys a user may write.
    let schema: Node
    /// Defaults with user values applied so far.
    var tree: Node
    var origins: [String: ConfigOrigin] = [:]

    init() throws {
        schema = try ConfigLoader.schemaNode(of: KaleidoConfig())
        tree = schema
    }

    mutating func mergeFile(_ path: String, visiting: Set<String>) throws {
        let canonical = URL(fileURLWithPath: path).standardizedFileURL.path
        guard !visiting.contains(canonical) else { throw ConfigError.baseCycle(path: path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"
            throw ConfigError.unreadable(path: path, reason: reason)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError.unreadable(path: path, reason: "not UTF-8 text")
        }
        try mergeDocument(text, path: path, visiting: visiting.union([canonical]))
    }

    mutating func mergeDocument(_ text: String, path: String, visiting: Set<String>) throws {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError.syntax(path: path, reason: "\(error)".replacingOccurrences(of: "\n", with: " "))
        }
        guard let root else { return }  // an empty file changes nothing
        guard var mapping = root.mapping else {
            throw ConfigError.notAMapping(origin: .file(path: path, line: root.mark?.line), keyPath: "")
        }
        // `base: other.yaml` (relative to this file) is applied first, then this file on top.
        if let base = mapping["base"] {
            guard let basePath = base.string, !basePath.isEmpty else {
                throw ConfigError.typeMismatch(origin: .file(path: path, line: base.mark?.line), keyPath: "base",
                                               expected: "a file path", got: describe(base))
            }
            let resolved = basePath.hasPrefix("/") ? basePath
                : URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(basePath).path
            try mergeFile(resolved, visiting: visiting)
            mapping["base"] = nil
        }
        try merge(.mapping(mapping), at: [], origin: { .file(path: path, line: $0.mark?.line) })
    }

    mutating func mergeOverride(_ text: String) throws {
        guard let equals = text.firstIndex(of: "=") else {
            throw ConfigError.badOverride(text: text, reason: "expected key.path=value")
        }
        let keyPath = text[..<equals].trimmingCharacters(in: .whitespaces)
        let valueText = String(text[text.index(after: equals)...])
        let keys = keyPath.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !keyPath.isEmpty, !keys.contains(where: \.isEmpty) else {
            throw ConfigError.badOverride(text: text, reason: "the key path \"\(keyPath)\" is malformed")
        }
        let value: Node
        do {
            value = try Yams.compose(yaml: valueText) ?? Node("", .implicit)
        } catch {
            throw ConfigError.badOverride(text: text, reason: "the value is not valid YAML")
        }
        // Wrap the value in mappings so an override merges exactly like a file.
        let wrapped = keys.reversed().reduce(value) { inner, key in Node([(Node(key), inner)]) }
        try merge(wrapped, at: [], origin: { _ in .override(text) })
    }

    /// Copies the leaves of `user` into `tree`, checking every key against the schema.
    private mutating func merge(_ user: Node, at path: [String], origin: (Node) -> ConfigOrigin) throws {
        let schemaHere = schema.value(at: path)
        guard let schemaMapping = schemaHere?.mapping else {
            tree = tree.setting(user, at: path)
            origins[path.joined(separator: ".")] = origin(user)
            return
        }
        guard let userMapping = user.mapping else {
            throw ConfigError.typeMismatch(origin: origin(user), keyPath: path.joined(separator: "."),
                                           expected: "a mapping of keys", got: describe(user))
        }
        for (keyNode, value) in userMapping {
            guard let key = keyNode.string else {
                throw ConfigError.typeMismatch(origin: origin(keyNode), keyPath: path.joined(separator: "."),
                                               expected: "string keys", got: describe(keyNode))
            }
            let childPath = path + [key]
            guard schemaMapping[key] != nil else {
                throw ConfigError.unknownKey(origin: origin(keyNode), keyPath: childPath.joined(separator: "."),
                                             suggestion: suggestion(for: childPath))
            }
            try merge(value, at: childPath, origin: origin)
        }
    }

    /// A key the user probably meant: a sibling a few edits away, or the same key in another section.
    private func suggestion(for path: [String]) -> String? {
        let key = path.last!
        let parent = Array(path.dropLast())
        if let siblings = schema.value(at: parent)?.mapping?.keys.compactMap(\.string) {
            let scored = siblings.map { ($0, editDistance($0, key)) }.filter { $0.1 <= max(2, key.count / 3) }
            if let best = scored.min(by: { $0.1 < $1.1 }) {
                return (parent + [best.0]).joined(separator: ".")
            }
        }
        return schema.leafPaths().first { $0.last == key }?.joined(separator: ".")
    }

    /// Decodes the merged tree; a type error names the key and where its value came from.
    func decode() throws -> KaleidoConfig {
        do {
            return try YAMLDecoder().decode(KaleidoConfig.self, from: tree.mappingKeys(KeyStyle.camelCase))
        } catch let error as DecodingError {
            let (codingPath, expected) = explain(error)
            let keyPath = codingPath.map { KeyStyle.snakeCase($0.stringValue) }
            let dotted = keyPath.joined(separator: ".")
            let got = tree.value(at: keyPath).map(describe) ?? "nothing"
            switch error {
            case .dataCorrupted(let context) where context.debugDescription.hasPrefix("expected "):
                // ConfigChoice already wrote "expected one of …, got …".
                throw ConfigError.outOfRange(origin: origin(of: dotted), keyPath: dotted,
                                             message: context.debugDescription)
            default:
                throw ConfigError.typeMismatch(origin: origin(of: dotted), keyPath: dotted, expected: expected, got: got)
            }
        }
    }

    /// The origin of a key path, or of the nearest value below it (for checks on whole sections).
    func origin(of dotted: String) -> ConfigOrigin {
        if let exact = origins[dotted] { return exact }
        if let below = origins.filter({ $0.key.hasPrefix(dotted + ".") }).min(by: { $0.key < $1.key }) {
            return below.value
        }
        return .defaults
    }
}

private func explain(_ error: DecodingError) -> ([CodingKey], String) {
    switch error {
    case .typeMismatch(let type, let context):
        return (context.codingPath, expectation(for: type))
    case .valueNotFound(let type, let context):
        return (context.codingPath, expectation(for: type))
    case .keyNotFound(let key, let context):
        return (context.codingPath + [key], "a value")
    case .dataCorrupted(let context):
        return (context.codingPath, "a valid value")
    @unknown default:
        return ([], "a valid value")
    }
}

private func expectation(for type: Any.Type) -> String {
    switch type {
    case is Double.Type, is Float.Type: return "a number"
    case is Int.Type: return "an integer"
    case is Bool.Type: return "true or false"
    case is String.Type: return "a string"
    default: return "a value of type \(type)"
    }
}

/// How a user's value reads in an error: strings quoted, numbers as written.
private func describe(_ node: Node) -> String {
    switch node {
    case .scalar(let scalar):
        if scalar.string.isEmpty { return "nothing" }
        let quoted = scalar.style == .singleQuoted || scalar.style == .doubleQuoted
        let plainValue = node.int != nil || node.float != nil || node.bool != nil
        return plainValue && !quoted ? scalar.string : "\"\(scalar.string)\""
    case .mapping: return "a mapping"
    case .sequence: return "a list"
    case .alias: return "an alias"
    }
}

private func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(1, a.count) where !a.isEmpty {
        var previous = row[0]
        row[0] = i
        for j in 1...max(1, b.count) where !b.isEmpty {
            let current = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
            previous = current
        }
    }
    return row[b.count]
}

// MARK: - Key styles and tree helpers

/// YAML uses snake_case keys, Swift camelCase properties; the two convert one-to-one.
enum KeyStyle {
    static func snakeCase(_ name: String) -> String {
        var out = ""
        for ch in name {
            if ch.isUppercase { out += "_" + ch.lowercased() } else { out.append(ch) }
        }
        return out
    }

    static func camelCase(_ name: String) -> String {
        let parts = name.split(separator: "_", omittingEmptySubsequences: false)
        guard let first = parts.first else { return name }
        return String(first) + parts.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }
}

extension Node {
    /// The node at a key path, if every key exists.
    func value(at path: [String]) -> Node? {
        var node: Node? = self
        for key in path { node = node?.mapping?[key] }
        return node
    }

    /// A copy with `value` at `path` (intermediate mappings must exist).
    func setting(_ value: Node, at path: [String]) -> Node {
        guard let key = path.first else { return value }
        guard var mapping = self.mapping else { return self }
        let child = mapping[key] ?? Node([(Node, Node)]())
        mapping[key] = child.setting(value, at: Array(path.dropFirst()))
        return .mapping(mapping)
    }

    /// A copy whose mapping keys (at every depth) are renamed by `rename`.
    func mappingKeys(_ rename: (String) -> String) -> Node {
        switch self {
        case .mapping(let mapping):
            let pairs = mapping.map { (key, value) -> (Node, Node) in
                (Node(rename(key.string ?? ""), key.tag), value.mappingKeys(rename))
            }
            return .mapping(Node.Mapping(pairs, mapping.tag, mapping.style))
        case .sequence(let sequence):
            return .sequence(Node.Sequence(sequence.map { $0.mappingKeys(rename) }, sequence.tag, sequence.style))
        default:
            return self
        }
    }

    /// A copy where floats Yams wrote in exponent form (`5e-1`) read as people write them (`0.5`).
    func readableFloats() -> Node {
        switch self {
        case .scalar(let scalar):
            guard scalar.string.contains("e"), let value = Double(scalar.string) else { return self }
            return .scalar(Node.Scalar("\(value)", scalar.tag, scalar.style))
        case .mapping(let mapping):
            let pairs = mapping.map { ($0.key, $0.value.readableFloats()) }
            return .mapping(Node.Mapping(pairs, mapping.tag, mapping.style))
        case .sequence(let sequence):
            return .sequence(Node.Sequence(sequence.map { $0.readableFloats() }, sequence.tag, sequence.style))
        default:
            return self
        }
    }

    /// Key paths of every leaf, depth first in document order.
    func leafPaths(prefix: [String] = []) -> [[String]] {
        guard let mapping = self.mapping else { return [prefix] }
        return mapping.flatMap { key, value in value.leafPaths(prefix: prefix + [key.string ?? ""]) }
    }
}

extension ResolvedConfig {
    /// The rules that depend on the number of ranks, checked when the job starts (a joint step
    /// splits each modality's group over the ranks).
    public func validate(worldSize: Int) throws {
        var validator = ConfigValidator()
        config.validateGroups(&validator, worldSize: worldSize)
        if let first = validator.violations.first {
            throw ConfigError.outOfRange(origin: origins[first.path] ?? .defaults, keyPath: first.path, message: first.message)
        }
    }
}
