import ArgumentParser
import Foundation
import KaleidoCheckpoint
import KaleidoData
import KaleidoTrain
import Logging

extension Kaleido {
    struct Pretrain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pretrain an encoder with ReLICv2, then score it with a linear probe and kNN.",
            discussion: """
            Without --config the debug run (configs/debug.yaml) trains on the embedded synthetic dataset in one process.
            Under mpirun or srun every rank runs this same command; rank 0 logs, writes metrics and evaluates.
            Metrics go to <run.output_dir>/<run.name>/metrics.jsonl and TensorBoard event files there.
            """)

        @OptionGroup var config: ConfigOptions
        @OptionGroup var logging: LoggingOptions

        @Option(help: ArgumentHelp("Continue from a checkpoint: `auto` (the newest valid one of this run, or start fresh) or a checkpoint directory.",
                                   valueName: "auto|path"))
        var resume: String?

        @Option(help: "Run at most this many steps, then save a checkpoint and exit 0 (continue with --resume auto).")
        var stopAfter: Int?

        func validate() throws {
            if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after must be at least 1, got \(stopAfter)") }
        }

        func run() throws {
            logging.bootstrap()
            let resolved = try config.resolve()
            let communicator = try Distributed.communicator()
            defer { communicator.finalize() }
            let threads = Distributed.threads(configured: resolved.config.dist.threads)
            let plan = Distributed.threadPlan(threads: threads)
            let logger = Logger(label: "kaleido.pretrain")
            logger.info("compute threads", metadata: ["threads": "\(threads)", "dist.threads": "\(resolved.config.dist.threads)",
                                                      "ranks_on_node": "\(plan.localRanks)", "node_cores": "\(plan.nodeCores)",
                                                      "bound_to_cores": "\(plan.allowedCores)"])
            for problem in plan.problems { logger.warning("\(problem)") }
            let pretrainer = Pretrainer(config: resolved.config, communicator: communicator, threads: threads)
            let data = resolved.config.dataConfiguration
            let pipeline = try DataPipeline(data, split: .train)
            // Every rank loads the checkpoint (each needs the full arrays); `auto` without one starts fresh.
            var checkpoint: LoadedCheckpoint?
            if let resume {
                let url = resume == "auto" ? pretrainer.checkpointStore.newestValid() : URL(fileURLWithPath: resume)
                checkpoint = try url.map { try pretrainer.checkpointStore.load($0) }
            }
            let start = checkpoint.map { pipeline.state(at: $0.step) } ?? .start
            let loader = try DataLoader(pipeline: pipeline, rank: communicator.rank, worldSize: communicator.worldSize, state: start)
            defer { loader.stop() }
            let evaluation = resolved.config.eval.linearProbe && communicator.isCoordinator
                ? try PipelineEvaluationSource(configuration: data) : nil
            let summary = try pretrainer.run(source: LoaderSource(loader: loader), evaluation: evaluation,
                                             classes: pipeline.classes.count, resume: checkpoint, preemption: PreemptionSignal(),
                                             stopAfter: stopAfter)
            guard communicator.isCoordinator else { return }
            if summary.preempted {
                print("preempted: checkpoint \(summary.lastCheckpoint ?? "?") saved; continue with --resume auto")
                return
            }
            print(String(format: "pretrained %d steps: final loss %.4f, %.1f images/s", summary.steps, summary.finalLoss,
                         summary.imagesPerSecond))
            if summary.lossByFifth.count > 1 {
                print("mean loss by fifth of the run: " + summary.lossByFifth.map { String(format: "%.3f", $0) }.joined(separator: " → ")
                      + (summary.lossFellMonotonically ? "  (falls monotonically)" : "  (not monotonic)"))
            }
            if let probe = summary.probe {
                print(String(format: "linear probe: top-1 %.1f%%  top-5 %.1f%%   (before training: top-1 %.1f%%)",
                             probe.top1 * 100, probe.top5 * 100, (summary.initialProbe?.top1 ?? .nan) * 100))
            }
            if let knn = summary.knnTop1 {
                print(String(format: "kNN (k=%d):   top-1 %.1f%%                (before training: top-1 %.1f%%)",
                             resolved.config.eval.knnK, knn * 100, (summary.initialKnnTop1 ?? .nan) * 100))
            }
            print("run directory: \(pretrainer.runDirectory.path)")
        }
    }
}
