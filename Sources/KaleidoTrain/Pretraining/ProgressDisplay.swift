import Foundation

/// Step, loss, learning rate, throughput and ETA on the terminal: one redrawn line on a TTY,
/// plain lines every `every` steps otherwise (logs, CI). Only the coordinator shows progress.
public final class ProgressDisplay {
    let total: Int
    let every: Int
    let interactive: Bool
    let write: (String) -> Void
    private let start = Date()
    private var firstStep: Int?
    private var samplesSeen = 0

    public init(totalSteps: Int, every: Int, interactive: Bool = isatty(STDOUT_FILENO) == 1,
                write: @escaping (String) -> Void = { FileHandle.standardOutput.write(Data($0.utf8)) }) {
        self.total = totalSteps
        self.every = every
        self.interactive = interactive
        self.write = write
    }

    /// Call after each step with the global samples it consumed.
    public func update(step: Int, loss: Double, learningRate: Double, samples: Int) {
        if firstStep == nil { firstStep = step }
        samplesSeen += samples
        let elapsed = Date().timeIntervalSince(start)
        let done = step + 1 - (firstStep ?? 0)
        let rate = elapsed > 0 ? Double(samplesSeen) / elapsed : 0
        let remaining = done > 0 ? elapsed / Double(done) * Double(total - step - 1) : 0
        let text = String(format: "step %d/%d  loss %.4f  lr %.2e  %.0f img/s  ETA %@",
                          step + 1, total, loss, learningRate, rate, Self.clock(remaining))
        if interactive {
            let width = 20, filled = Int(Double(width) * Double(step + 1) / Double(total))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            write("\r[\(bar)] " + text + "   " + (step + 1 == total ? "\n" : ""))
        } else if (step + 1) % every == 0 || step + 1 == total {
            write(text + "\n")
        }
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
