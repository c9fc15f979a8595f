import Foundation

/// Metrics of a run, appended as one JSON object per line to `metrics.jsonl` in the run
/// directory (easy to read back with pandas or jq), and mirrored to TensorBoard.
public final class MetricsLog {
    public let directory: URL
    private let lines: FileHandle
    private let tensorBoard: TensorBoardWriter

    public init(directory: URL) throws {
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent("metrics.jsonl")
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        lines = try FileHandle(forWritingTo: url)
        try lines.seekToEnd()
        tensorBoard = try TensorBoardWriter(directory: directory)
    }

    deinit { try? lines.close() }

    /// Records `values` at `step` under `kind` ("train", "probe", …).
    public func record(step: Int, kind: String, values: [String: Double]) throws {
        var object: [String: Any] = ["step": step, "kind": kind]
        for (key, value) in values { object[key] = value.isFinite ? value : String(describing: value) }
        var data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        data.append(0x0A)
        try lines.write(contentsOf: data)
        try tensorBoard.add(step: step, values: Dictionary(uniqueKeysWithValues: values.map { ("\(kind)/\($0.key)", $0.value) }))
    }

    public func flush() throws {
        try lines.synchronize()
        try tensorBoard.flush()
    }
}
