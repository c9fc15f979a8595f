import Foundation
import Logging

/// Where a save stops for a process-level crash test: a test can then `kill -9` the process at
/// exactly that point instead of racing a timer.
public struct SavePause: Sendable, Equatable {
    public enum Point: String, Sendable, CaseIterable {
        /// The shard file is open and its first frame written; nothing is fsynced.
        case shardWrite = "shard-write"
        /// Every shard and the manifest are durable in `.tmp-step-…`; the commit rename has not happened.
        case beforeRename = "before-rename"
    }

    public var point: Point
    /// The step whose save stops.
    public var step: Int
    /// A file created (holding the process id) once the save has stopped: what the test waits for.
    public var marker: String?

    public init(point: Point, step: Int, marker: String? = nil) {
        self.point = point
        self.step = step
        self.marker = marker
    }

    /// Sleeps for an hour when the save of `step` has reached `point`.
    func pauseIfReached(_ point: Point, step: Int) {
        guard point == self.point, step == self.step else { return }
        Logger(label: "kaleido.checkpoint").warning("fault injection: pausing a save", metadata: ["point": "\(point.rawValue)", "step": "\(step)"])
        if let marker {
            _ = FileManager.default.createFile(atPath: marker, contents: Data("\(ProcessInfo.processInfo.processIdentifier)\n".utf8))
        }
        Thread.sleep(forTimeInterval: 3600)
    }
}
