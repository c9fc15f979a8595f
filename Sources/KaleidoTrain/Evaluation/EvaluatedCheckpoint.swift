import Foundation
import KaleidoCheckpoint
import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor

/// Errors of the evaluation commands; each names the path or key at fault.
public enum EvaluationError: Error, CustomStringConvertible, Equatable {
    case missingCheckpoint(path: String)
    case noValidCheckpoint(path: String)
    case missingData(path: String)
    case badData(spec: String, message: String)
    case unsupported(String)
    case missingMetrics(path: String)
    case malformedMetrics(path: String, line: Int, message: String)
    case encoderMismatch(path: String, parameter: String)

    public var description: String {
        switch self {
        case .missingCheckpoint(let path):
            return "\(path): no checkpoint here (expected a checkpoint directory with manifest.json, or a run directory with checkpoints/)"
        case .noValidCheckpoint(let path):
            return "\(path): no complete, valid checkpoint in its checkpoints/ folder or among its step-N directories"
        case .missingData(let path):
            return "\(path): dataset folder does not exist (give `synthetic` or an existing folder)"
        case .badData(let spec, let message):
            return "\(spec): \(message)"
        case .unsupported(let message):
            return message
        case .missingMetrics(let path):
            return "\(path): no metrics.jsonl (is this a run directory written by `kaleido pretrain`?)"
        case .malformedMetrics(let path, let line, let message):
            return "\(path):\(line): \(message)"
        case .encoderMismatch(let path, let parameter):
            return "\(path): the checkpoint has no encoder parameter '\(parameter)' of this model's shape"
        }
    }
}

/// A pretrained encoder loaded from a checkpoint for evaluation: the run's resolved config from
/// the manifest, the ReLICv2 model with the chosen network's weights (online or EMA target), and
/// where the run keeps its results.
public final class EvaluatedCheckpoint {
    public let url: URL
    public let checkpoint: LoadedCheckpoint
    public let config: KaleidoConfig
    public let model: ReLICv2Model
    public let encoder: TrainedEncoder
    /// `<run>` for a checkpoint at `<run>/checkpoints/step-N`, else the checkpoint directory:
    /// results (`eval/`) and the feature cache (`eval-cache/`) go here.
    public let runDirectory: URL

    /// Opens `path`, a checkpoint directory, or a run directory or folder of checkpoints (its
    /// newest valid checkpoint: `CheckpointStore.locate`).
    /// `overrides` (`key=value`) change the saved config, e.g. the synthetic split sizes; keys
    /// that change the model make the restore fail naming the first parameter that differs.
    public convenience init(path: String, encoder: TrainedEncoder = .online, overrides: [String] = [], threads: Int = 1) throws {
        try self.init(path: path, encoder: { _ in encoder }, overrides: overrides, threads: threads)
    }

    /// As above, with the encoder chosen from the run's resolved config (`kaleido finetune`
    /// starts from `eval.finetune_encoder` unless told otherwise).
    public init(path: String, encoder choose: (KaleidoConfig) -> TrainedEncoder, overrides: [String] = [], threads: Int = 1) throws {
        let given = URL(fileURLWithPath: path).standardizedFileURL
        let url: URL
        switch CheckpointStore.locate(path) {
        case .checkpoint(let found): url = found
        case .noValidCheckpoint: throw EvaluationError.noValidCheckpoint(path: given.path)
        case .notACheckpoint: throw EvaluationError.missingCheckpoint(path: given.path)
        }
        self.url = url
        checkpoint = try LoadedCheckpoint(contentsOf: url, threads: threads)
        config = try ConfigLoader.load(yaml: checkpoint.config, name: url.appendingPathComponent(CheckpointNames.manifest).path,
                                       overrides: overrides).config
        encoder = choose(config)
        runDirectory = url.deletingLastPathComponent().lastPathComponent == "checkpoints"
            ? url.deletingLastPathComponent().deletingLastPathComponent() : url
        // The supervised objective's heads are part of the arena: their class count comes from
        // the saved layout so the restore sees the same model.
        let headClasses = checkpoint.layout(of: encoder.rawValue)?.first { $0.name.hasPrefix("heads.") && $0.shape.count == 2 }?.shape[0] ?? 0
        let builder = Pretrainer(config: config, communicator: LocalCommunicator(), threads: threads)
        model = try builder.makeModel(classes: headClasses)
        try checkpoint.restore(encoder.rawValue, into: model.online)
    }

    /// The name ModelZoo builds the backbone under.
    public var backboneName: String { config.model.arch.zooName(cifarStem: config.model.cifarStem) }

    /// What identifies these weights in cache keys: the shards' checksums change with any weight.
    public var fingerprint: String {
        "\(url.path)@\(checkpoint.step):\(encoder.rawValue):" + checkpoint.manifest.shards.map(\.crc32c).joined(separator: ",")
    }

    /// The encoder's parameters by name, as saved (SSL heads excluded), for initialising a
    /// fine-tuning network.
    public func encoderWeights() throws -> [String: (shape: [Int], values: UnsafeBufferPointer<Float>)] {
        let values = try checkpoint.values(encoder.rawValue)
        var result: [String: (shape: [Int], values: UnsafeBufferPointer<Float>)] = [:]
        for entry in checkpoint.layout(of: encoder.rawValue) ?? [] where !LoadedCheckpoint.headPrefixes.contains(where: entry.name.hasPrefix)
            && !entry.name.hasPrefix("heads.") {
            result[entry.name] = (entry.shape, UnsafeBufferPointer(rebasing: values[entry.offset..<(entry.offset + entry.count)]))
        }
        return result
    }
}
