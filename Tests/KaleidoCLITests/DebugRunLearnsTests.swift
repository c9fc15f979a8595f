import Foundation
import Testing

/// The shortened debug run learns: `kaleido pretrain` with the default config but 300 instead of
/// 1000 steps must lift the linear probe and the kNN classifier above the same evaluation of the
/// network before training. Runs the release build (scripts/test.sh builds it): the debug build's
/// unoptimised kernels would take most of an hour.
///
/// Margins: at 300 steps the debug recipe measured probe 23.6% vs 16.0% and kNN 21.8% vs 12.0%
/// (the full 1000-step run: 31.2% vs 16.0%, 24.0% vs 12.0%); the test asks for half of each gain.
@Suite struct DebugRunLearnsTests {
    @Test func aShortDebugRunBeatsTheRandomNetwork() throws {
        let debugDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let kaleido = debugDirectory.deletingLastPathComponent().appendingPathComponent("release/kaleido")
        guard FileManager.default.isExecutableFile(atPath: kaleido.path) else {
            Issue.record("\(kaleido.path) is missing: run scripts/test.sh, which builds the release kaleido first")
            return
        }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-learns-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let process = Process()
        process.executableURL = kaleido
        process.arguments = ["pretrain", "--set", "run.output_dir=\(root.path)", "--set", "run.steps=300",
                             "--set", "checkpoint.every_steps=0"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "pretrain failed:\n\(stdout)")

        /// The "top-1 X%" values of the line starting with `label`: after training, then before.
        func topOne(_ label: String) throws -> (after: Double, before: Double) {
            let line = String(try #require(stdout.split(separator: "\n").first { $0.hasPrefix(label) }, "no \(label) line in:\n\(stdout)"))
            let pattern = try NSRegularExpression(pattern: "top-1 ([0-9.]+)%")
            let values = pattern.matches(in: line, range: NSRange(line.startIndex..., in: line)).compactMap { match in
                Range(match.range(at: 1), in: line).flatMap { Double(line[$0]) }
            }
            try #require(values.count == 2, "expected two top-1 values in: \(line)")
            return (values[0], values[1])
        }
        let probe = try topOne("linear probe:")
        let knn = try topOne("kNN")
        #expect(probe.after - probe.before >= 3.5, "linear probe \(probe.before)% → \(probe.after)%\n\(stdout)")
        #expect(knn.after - knn.before >= 5, "kNN \(knn.before)% → \(knn.after)%\n\(stdout)")
    }
}
