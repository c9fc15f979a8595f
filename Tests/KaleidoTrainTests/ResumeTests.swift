import Foundation
import Testing
import KaleidoCheckpoint
import KaleidoDist
import KaleidoTensor
@testable import KaleidoTrain

/// NoisyCopies that asks for preemption once it has made `preemptAt` batches.
final class PreemptingSource: MultiViewSource {
    let inner = NoisyCopies(samples: 8, side: 8, pool: 8)
    let signal: PreemptionSignal
    let preemptAt: Int?
    init(signal: PreemptionSignal, preemptAt: Int?) { self.signal = signal; self.preemptAt = preemptAt }

    func batch(step: Int, rank: Int, worldSize: Int) throws -> MultiViewBatch {
        if step == preemptAt { signal.request() }
        return try inner.batch(step: step, rank: rank, worldSize: worldSize)
    }

    func groups(step: Int, rank: Int, worldSize: Int) throws -> [MultiViewBatch] {
        [try batch(step: step, rank: rank, worldSize: worldSize)]
    }
}

@Suite(.serialized) struct ResumeTests {
    func config(directory: URL, name: String) -> KaleidoConfig {
        var config = KaleidoConfig()
        config.run.outputDir = directory.path
        config.run.name = name
        config.run.steps = 6
        config.run.logEvery = 1
        config.model.baseWidth = 4
        config.data.batchSize = 8
        config.ssl.projectorHidden = 32
        config.ssl.projectorDim = 16
        config.ssl.predictorHidden = 32
        config.ssl.queueSize = 16
        config.optim.warmupSteps = 2
        config.checkpoint.everySteps = 0
        config.eval.linearProbe = false
        return config
    }

    /// Loss of every step, from the run's metrics (a resumed run appends to the same file).
    func losses(_ directory: URL) throws -> [Int: Double] {
        let text = try String(contentsOf: directory.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        var result: [Int: Double] = [:]
        for line in text.split(separator: "\n") {
            let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            if row["kind"] as? String == "train" { result[row["step"] as! Int] = row["loss"] as? Double }
        }
        return result
    }

    /// Preempted after 3 of 6 steps, saved, resumed from the checkpoint: the loss curve equals
    /// the uninterrupted run's bit for bit (weights, target, AdamW moments, queue and RNG restored).
    @Test func preemptedAndResumedRunMatchesTheUninterruptedOneExactly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-resume-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }

        let straight = Pretrainer(config: config(directory: root, name: "straight"), communicator: LocalCommunicator(), threads: 1)
        let full = try straight.run(source: PreemptingSource(signal: PreemptionSignal(signals: []), preemptAt: nil),
                                    evaluation: nil, classes: 8)
        #expect(full.stepsRun == 6 && !full.preempted)

        let interrupted = Pretrainer(config: config(directory: root, name: "resumed"), communicator: LocalCommunicator(), threads: 1)
        let signal = PreemptionSignal(signals: [])
        let first = try interrupted.run(source: PreemptingSource(signal: signal, preemptAt: 2), evaluation: nil, classes: 8,
                                        preemption: signal)
        #expect(first.preempted && first.stepsRun == 3)
        let checkpoint = try #require(interrupted.checkpointStore.newestValid())
        let loaded = try interrupted.checkpointStore.load(checkpoint)
        #expect(loaded.step == 3)
        let second = try interrupted.run(source: PreemptingSource(signal: PreemptionSignal(signals: []), preemptAt: nil),
                                         evaluation: nil, classes: 8, resume: loaded)
        #expect(second.stepsRun == 3 && !second.preempted)

        let expected = try losses(straight.runDirectory), got = try losses(interrupted.runDirectory)
        #expect(expected.count == 6)
        for step in 1...6 {
            #expect(got[step].map { $0.bitPattern } == expected[step].map { $0.bitPattern }, "step \(step): \(String(describing: got[step])) vs \(String(describing: expected[step]))")
        }
    }
}
