import Foundation
import Logging

/// Fault injection for process-level crash tests: with `KALEIDO_FAULT_PAUSE_AT=POINT@STEP`, the
/// save of step STEP stops at POINT, creates the file named by `KALEIDO_FAULT_PAUSE_MARKER`, and
/// sleeps, so a test can `kill -9` the process at exactly that point instead of racing a timer.
///
/// Points: `shard-write` (the shard file is open and its first frame written, nothing fsynced)
/// and `before-rename` (every shard and the manifest are durable in `.tmp-step-…`, the commit
/// rename has not happened).
enum FaultPause: String {
    case shardWrite = "shard-write"
    case beforeRename = "before-rename"

    func pauseIfRequested(step: Int, environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard environment["KALEIDO_FAULT_PAUSE_AT"] == "\(rawValue)@\(step)" else { return }
        Logger(label: "kaleido.checkpoint").warning("fault injection: pausing a save", metadata: ["point": "\(rawValue)", "step": "\(step)"])
        if let marker = environment["KALEIDO_FAULT_PAUSE_MARKER"] {
            FileManager.default.createFile(atPath: marker, contents: Data("\(ProcessInfo.processInfo.processIdentifier)\n".utf8))
        }
        Thread.sleep(forTimeInterval: 3600)
    }
}
