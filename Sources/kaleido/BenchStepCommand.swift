import ArgumentParser
import Foundation
import KaleidoTrain

extension Kaleido.Bench {
    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Images/s, GFLOP/s and peak memory of the ReLICv2 training step, on the PyTorch reference's workload.",
            discussion: """
            The workload of ../shared/bench/pytorch_reference.py: 2 large + 2 small views of a random batch, projector and
            predictor 1024→128, AdamW, EMA target. Each model runs in its own process so its peak RSS is its own.
            Compare side by side with scripts/bench-vs-pytorch.sh. Under mpirun every rank steps on --batch samples and
            gradients are all-reduced: images/s is then global, and the all-reduce wait share is reported.
            """)

        @Option(help: "Comma-separated: resnet18-cifar, convnext-atto, swin-tiny-32, omnivore-cifar, omnivore-cifar-joint.")
        var models: String = StepBench.models.map(\.name).joined(separator: ",")

        @Option(help: "Samples per step.") var batch: Int = 64
        @Option(help: "Large view side in pixels.") var large: Int = 32
        @Option(help: "Small view side in pixels.") var small: Int = 16
        @Option(help: "Threads for OpenBLAS and Kaleido's loops.") var threads: Int = 2
        @Option(help: "Untimed steps first.") var warmup: Int = 2
        @Option(help: "Timed steps.") var steps: Int = 5
        @Option(help: "Frames of the joint step's clips (omnivore-cifar-joint).") var frames: Int = StepBench().clipFrames
        @Flag(help: "JSON lines only (the reference's keys), no table.") var json = false

        var names: [String] { models.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

        func validate() throws {
            let known = StepBench.models.map(\.name)
            for name in names where !known.contains(name) {
                throw ValidationError("unknown model \"\(name)\"; choose from \(known.joined(separator: ", "))")
            }
            guard batch >= 2, large >= 8, small >= 8, threads >= 1, warmup >= 0, steps >= 1, frames >= 1 else {
                throw ValidationError("--batch ≥ 2, --large/--small ≥ 8, --threads ≥ 1, --steps ≥ 1, --frames ≥ 1")
            }
        }

        func run() throws {
            if names.count > 1 {
                // One process per model, so each peak RSS belongs to one model.
                for name in names {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
                    process.arguments = ["bench", "step", "--models", name, "--batch", "\(batch)", "--large", "\(large)",
                                         "--small", "\(small)", "--threads", "\(threads)", "--warmup", "\(warmup)",
                                         "--steps", "\(steps)", "--frames", "\(frames)"] + (json ? ["--json"] : [])
                    try process.run()
                    process.waitUntilExit()
                    guard process.terminationStatus == 0 else { throw ExitCode(process.terminationStatus) }
                }
                return
            }
            var bench = StepBench()
            (bench.batch, bench.large, bench.small, bench.threads, bench.warmup, bench.steps) = (batch, large, small, threads, warmup, steps)
            bench.clipFrames = frames
            let communicator = try Distributed.communicator()
            defer { communicator.finalize() }
            let result = try bench.run(model: names[0], communicator: communicator)
            guard communicator.isCoordinator else { return }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            if !json {
                print(String(format: "%@: %.1f images/s over %d rank(s), %.3f s/step, %.1f GFLOP/s, peak RSS %.0f MiB, %d parameters, "
                             + "%.1f%% of the step waiting on all-reduce",
                             result.model, result.imagesPerS, result.ranks, result.stepS, result.gflopsPerS, result.peakRssMib,
                             result.onlineParams, result.allreduceWaitShare * 100))
            }
            fflush(nil)
        }
    }
}
