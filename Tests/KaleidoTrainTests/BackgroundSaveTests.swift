import Foundation
import Testing
import KaleidoCheckpoint
import KaleidoDist
@testable import KaleidoTrain

/// `checkpoint.async`: periodic saves staged at the step boundary and written while training
/// continues hold exactly the state of that boundary, like a blocking save.
@Suite(.serialized) struct BackgroundSaveTests {
    static func config(_ root: URL, name: String, async: Bool, steps: Int = 6, overrides: [String] = []) throws -> ResolvedConfig {
        try ConfigLoader.load(overrides: [
            "run.output_dir=\(root.path)", "run.name=\(name)", "run.steps=\(steps)", "run.log_every=1",
            "model.base_width=4", "data.batch_size=8", "data.synthetic_train_size=64", "data.synthetic_val_size=16",
            "ssl.projector_hidden=32", "ssl.projector_dim=16", "ssl.predictor_hidden=32", "ssl.queue_size=16",
            "optim.warmup_steps=2", "checkpoint.every_steps=2", "checkpoint.keep=10", "checkpoint.async=\(async)",
            "eval.linear_probe=false",
        ] + overrides)
    }

    @Test func backgroundSavesHoldTheStepBoundarysStateAndResumeExactly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-async-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let blocking = try PretrainingRun(resolved: Self.config(root, name: "blocking", async: false))
            .run(communicator: LocalCommunicator(), threads: 2)
        let background = try PretrainingRun(resolved: Self.config(root, name: "background", async: true))
            .run(communicator: LocalCommunicator(), threads: 2)
        #expect(background.summary.lastCheckpoint?.hasSuffix("step-00000006") == true)
        // Every periodic checkpoint is committed, with the same arrays as the blocking save's.
        for step in [2, 4, 6] {
            let name = String(format: "checkpoints/step-%08d", step)
            let a = try LoadedCheckpoint(contentsOf: blocking.runDirectory.appendingPathComponent(name), threads: 1)
            let b = try LoadedCheckpoint(contentsOf: background.runDirectory.appendingPathComponent(name), threads: 1)
            #expect(a.arrayNames == b.arrayNames)
            for array in a.arrayNames {
                #expect(try a.array(array).map(\.bitPattern) == b.array(array).map(\.bitPattern), "step \(step) \(array)")
            }
            #expect(a.blobs == b.blobs, "step \(step)")
        }
        // Each save's cost is in the metrics: background ones with their staging time and window.
        let rows = try JointPretrainingTests.rows(background.runDirectory, kind: "checkpoint")
        #expect(rows.map { $0["step"] as! Int } == [2, 4, 6], "\(rows)")
        #expect(rows.prefix(2).allSatisfy { ($0["async"] as? Double) == 1 && ($0["staging_ms"] as? Double ?? -1) >= 0 }, "\(rows)")
        #expect((rows.last?["async"] as? Double) == 0, "the end of the run waits for its save")

        // Resuming from the background save of step 4 continues the blocking run's curve exactly.
        let resumedConfig = try Self.config(root, name: "resumed", async: true)
        let resumed = try PretrainingRun(resolved: resumedConfig,
                                         resume: background.runDirectory.appendingPathComponent("checkpoints/step-00000004").path)
            .run(communicator: LocalCommunicator(), threads: 2)
        #expect(resumed.summary.stepsRun == 2)
        let expected = try JointPretrainingTests.losses(blocking.runDirectory), got = try JointPretrainingTests.losses(resumed.runDirectory)
        for step in 5...6 { #expect(got[step]?.bitPattern == expected[step]?.bitPattern, "step \(step)") }
    }
}
