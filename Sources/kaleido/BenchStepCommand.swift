import ArgumentParser
import Foundation
import KaleidoNN
import KaleidoTrain

extension Kaleido.Bench {
    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Images/s, GFLOP/s and peak memory of the ReLICv2 training step, on the PyTorch reference's workload.",
            discussion: """
            The workload of ../shared/bench/pytorch_reference.py: 2 large + 2 small views of a random batch, \
            projector and predictor 1024→128, AdamW, EMA target. Each model runs at its suite's shapes unless \
            --batch, --large, --small or --frames say otherwise (--list prints them):

              small     resnet18-cifar, convnext-atto, swin-tiny-32
                        batch 64, 2×32 + 2×16 px
              paper     resnet50, convnext-tiny: batch 16, 2×224 + 2×96 px
                        swin3d-t (Omnivore Swin-T's trunk): batch 8, 8-frame clips,
                        2×112 + 2×64 px
              omnivore  omnivore-cifar, omnivore-cifar-joint (Kaleido's own, no reference)
                        batch 64, 2×32 + 2×16 px, 2-frame clips

            Each model runs in its own process so its peak RSS is its own. Compare side by side with \
            scripts/bench-vs-pytorch.sh. Under mpirun every rank steps on --batch samples and gradients are \
            all-reduced: images/s is then global, and the all-reduce wait share is reported.
            """)

        @Option(help: "Comma-separated model names (see the suites above); default: the small and omnivore suites.")
        var models: String?

        @Option(help: "Comma-separated suites: small, paper, omnivore, or all.")
        var suite: String?

        @Option(help: "Samples per step (default: the model's).") var batch: Int?
        @Option(help: "Large view side in pixels (default: the model's).") var large: Int?
        @Option(help: "Small view side in pixels (default: the model's).") var small: Int?
        @Option(help: "Frames per clip, for models with clips (default: the model's).") var frames: Int?
        @Option(help: "Threads for OpenBLAS and Kaleido's loops.") var threads: Int = 2
        @Option(help: "Untimed steps first.") var warmup: Int = 2
        @Option(help: "Timed steps.") var steps: Int = 5
        @Flag(help: "JSON lines only (the reference's keys), no table.") var json = false
        @Flag(help: "Print each selected model with its shape arguments, one a line, and run nothing.") var list = false

        /// The selected models, at their shapes with this command's overrides.
        func benches() throws -> [StepBench] {
            try StepBench.selection(models: models, suites: suite).map { model in
                var bench = StepBench(model)
                if let batch { bench.batch = batch }
                if let large { bench.large = large }
                if let small { bench.small = small }
                if let frames { bench.clipFrames = frames }
                (bench.threads, bench.warmup, bench.steps) = (threads, warmup, steps)
                return bench
            }
        }

        func validate() throws {
            do { _ = try StepBench.selection(models: models, suites: suite) } catch let error as StepBench.SelectionError {
                throw ValidationError(error.description)
            }
            guard (batch ?? 2) >= 2, (large ?? 8) >= 8, (small ?? 8) >= 8, (frames ?? 1) >= 1, threads >= 1, warmup >= 0, steps >= 1 else {
                throw ValidationError("--batch ≥ 2, --large/--small ≥ 8, --frames ≥ 1, --threads ≥ 1, --steps ≥ 1")
            }
            // A view the backbone cannot take would stop inside a layer.
            for bench in try benches() {
                let minimum = try ModelZoo.minimumInputSide(bench.model.zoo)
                for (option, side) in [("--large", bench.large), ("--small", bench.small)] where side < minimum.side {
                    throw ValidationError("\(option) \(side): \(bench.model.name) needs at least \(minimum.side) pixels (\(minimum.reason))")
                }
            }
        }

        func run() throws {
            let benches = try benches()
            if list {
                for bench in benches { print(([bench.model.name] + bench.shapeArguments).joined(separator: " ")) }
                return
            }
            if benches.count > 1 {
                // One process per model, so each peak RSS belongs to one model.
                for bench in benches {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
                    process.arguments = ["bench", "step", "--models", bench.model.name] + bench.shapeArguments
                        + ["--threads", "\(threads)", "--warmup", "\(warmup)", "--steps", "\(steps)"] + (json ? ["--json"] : [])
                    try process.run()
                    process.waitUntilExit()
                    guard process.terminationStatus == 0 else { throw ExitCode(process.terminationStatus) }
                }
                return
            }
            let communicator = try Distributed.communicator()
            defer { communicator.finalize() }
            let result = try benches[0].run(communicator: communicator)
            guard communicator.isCoordinator else { return }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            if !json {
                print(String(format: "%@: %.1f images/s over %d rank(s), %.3f s/step, %.1f GFLOP/s, peak RSS %.0f MiB, %d parameters, "
                             + "%.1f%% of the step waiting on all-reduce, %.2f of %d cores delivered",
                             result.model, result.imagesPerS, result.ranks, result.stepS, result.gflopsPerS, result.peakRssMib,
                             result.onlineParams, result.allreduceWaitShare * 100, result.coresDelivered, result.threads))
            }
            fflush(nil)
        }
    }
}
