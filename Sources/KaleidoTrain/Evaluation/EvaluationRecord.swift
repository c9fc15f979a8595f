import Foundation

/// One evaluation's result as the eval commands save it, `<run>/eval/<name>.json`, and as
/// `kaleido report` reads it back into its tables.
public struct EvaluationRecord: Codable, Sendable, Equatable {
    /// `linear`, `knn`, `finetune` or `retrieval`: the table it belongs to.
    public var kind: String
    /// File stem, unique per setting: `linear-image`, `finetune-1pct-image`, `retrieval-image-video`.
    public var name: String
    public var checkpoint: String
    public var step: Int
    public var encoder: String
    public var data: String
    /// How it was run (solver, k, fraction, …), for the report.
    public var settings: [String: String]
    /// Accuracies and recalls as fractions in [0, 1] (`top1`, `recall@1`, `chance@1`, …), counts.
    public var metrics: [String: Double]
    public var seconds: Double
    /// ISO 8601 time of the evaluation.
    public var date: String

    public init(kind: String, name: String, checkpoint: EvaluatedCheckpoint, data: String, settings: [String: String],
                metrics: [String: Double], seconds: Double) {
        self.kind = kind
        self.name = name
        self.checkpoint = checkpoint.url.path
        self.step = checkpoint.checkpoint.step
        self.encoder = checkpoint.encoder.rawValue
        self.data = data
        self.settings = settings
        self.metrics = metrics
        self.seconds = seconds
        self.date = ISO8601DateFormatter().string(from: Date())
    }

    /// Where records of a run live.
    public static func directory(run: URL) -> URL { run.appendingPathComponent("eval") }

    /// Writes `<directory>/<name>.json` (replacing an earlier result of the same name).
    @discardableResult
    public func write(to directory: URL) throws -> URL {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let url = directory.appendingPathComponent("\(name).json")
        try encoder.encode(self).write(to: url, options: .atomic)
        return url
    }

    /// Every record in `directory`, sorted by kind and name; a file that does not parse is an
    /// error naming it.
    public static func readAll(in directory: URL) throws -> [EvaluationRecord] {
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
        return try files.filter { $0.hasSuffix(".json") }.sorted().map { file in
            let url = directory.appendingPathComponent(file)
            do {
                return try JSONDecoder().decode(EvaluationRecord.self, from: Data(contentsOf: url))
            } catch {
                throw EvaluationError.malformedMetrics(path: url.path, line: 1, message: "not an evaluation result: \(error)")
            }
        }.sorted { ($0.kind, $0.name) < ($1.kind, $1.name) }
    }
}
