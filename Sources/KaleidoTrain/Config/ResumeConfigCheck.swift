import Yams

/// What changed between the config a checkpoint was saved with and the config resuming it.
///
/// A key that alters the sample stream, the model or the objective (`run.seed`, `model.*`, the
/// `data.*` keys that shape pretraining batches, `ssl.*` but the EMA schedule) is refused unless
/// the user names it with `--resume-allow KEY`: resuming across such a change trains a different
/// run than the one checkpointed, silently. Every other key (`run.steps`, `optim.*`, `dist.*`,
/// `checkpoint.*`, `eval.*`, fine-tuning augmentations, …) is what users change on purpose when
/// they extend, re-tune or move a run, and is accepted with a warning. docs/checkpoints.md
/// lists both sets.
public struct ResumeConfigCheck: Sendable, Equatable {
    public struct Change: Sendable, Equatable, CustomStringConvertible {
        public var keyPath: String
        public var old: String
        public var new: String
        public var description: String { "\(keyPath): \(old) → \(new)" }
    }

    /// Changes to keys that alter the run, not named by `--resume-allow`.
    public var refused: [Change] = []
    /// Changes to keys that alter the run, accepted because `--resume-allow` named them.
    public var allowed: [Change] = []
    /// Changes to keys that do not alter the sample stream, model or objective.
    public var accepted: [Change] = []

    /// Key paths whose change alters the run (prefixes end in a dot), and the exceptions inside them.
    static let runDefining = ["run.seed", "model.", "data.", "ssl."]
    static let runNeutral: Set<String> = [
        "data.workers", "data.prefetch",   // how many threads decode, not what they decode
        "data.finetune_scale_min", "data.randaugment_layers", "data.randaugment_magnitude", "data.mixup_alpha",
        "data.cutmix_alpha", "data.erasing_probability", "data.label_smoothing",   // fine-tuning only
        "ssl.ema_base", "ssl.ema_final",   // a schedule, like the learning rate
        "model.init", "model.init_ignore",   // starting weights: a resume starts from the checkpoint's
    ]

    /// Whether changing `keyPath` (snake_case, dotted) alters the sample stream, model or objective.
    public static func altersRun(_ keyPath: String) -> Bool {
        !runNeutral.contains(keyPath) && runDefining.contains { $0.hasSuffix(".") ? keyPath.hasPrefix($0) : keyPath == $0 }
    }

    /// Every key path a config has (for checking `--resume-allow` names).
    public static var keyPaths: Set<String> {
        guard let schema = try? ConfigLoader.schemaNode(of: KaleidoConfig()) else { return [] }
        return Set(schema.leafPaths().map { $0.joined(separator: ".") })
    }

    /// - Parameters:
    ///   - saved: the resolved YAML stored in the checkpoint's manifest.
    ///   - allowing: key paths from `--resume-allow`; each must be a key of the config.
    /// Keys the saved config lacks (written by an older Kaleido) are not compared.
    public init(saved: String, current: KaleidoConfig, allowing: Set<String> = []) throws {
        let known = Self.keyPaths
        if let unknown = allowing.sorted().first(where: { !known.contains($0) }) {
            throw ConfigError.unknownKey(origin: .override("--resume-allow \(unknown)"), keyPath: unknown, suggestion: nil)
        }
        let old = try Yams.compose(yaml: saved).map(Self.leaves) ?? [:]
        let new = Self.leaves(try ConfigLoader.schemaNode(of: current))
        for key in new.keys.sorted() {
            guard let before = old[key], let after = new[key], before != after else { continue }
            let change = Change(keyPath: key, old: before, new: after)
            if !Self.altersRun(key) {
                accepted.append(change)
            } else if allowing.contains(key) {
                allowed.append(change)
            } else {
                refused.append(change)
            }
        }
    }

    /// Scalar leaves by dotted key path, values as written (sequences flattened to `[a, b]`).
    static func leaves(_ node: Node) -> [String: String] {
        var values: [String: String] = [:]
        for path in node.leafPaths() {
            guard let leaf = node.value(at: path) else { continue }
            values[path.joined(separator: ".")] = Self.text(leaf)
        }
        return values
    }

    private static func text(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar):
            // Same number, different spelling (`0.5` / `5e-1`, `1` / `1.0`) is no change.
            if let number = Double(scalar.string), scalar.string.contains(where: { $0 == "." || $0 == "e" }) { return "\(number)" }
            return scalar.string
        case .sequence(let sequence): return "[" + sequence.map(text).joined(separator: ", ") + "]"
        case .mapping: return "{…}"
        case .alias: return "*alias"
        }
    }
}
