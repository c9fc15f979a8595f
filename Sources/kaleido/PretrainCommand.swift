import ArgumentParser
import KaleidoDist
import KaleidoTrain
import Logging

extension Kaleido {
    struct Pretrain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pretrain an encoder with ReLICv2, then score it with a linear probe and kNN (per modality) and retrieval.",
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

        @Option(name: .customLong("resume-allow"),
                help: ArgumentHelp("Accept a changed value of KEY (e.g. data.batch_size) in the resumed run although it alters the data, model or objective (repeatable).",
                                   valueName: "key"))
        var resumeAllowed: [String] = []

        @Option(help: "Run at most this many steps, then save a checkpoint and exit 0 (continue with --resume auto).")
        var stopAfter: Int?

        @Option(name: .customLong("init"), help: ArgumentHelp("Start the encoder from these weights (model.init): a .safetensors state dict with timm/torchvision names.",
                                                              valueName: "file"))
        var initialWeights: String?

        func validate() throws {
            if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after must be at least 1, got \(stopAfter)") }
            if !resumeAllowed.isEmpty && resume == nil { throw ValidationError("--resume-allow needs --resume") }
        }

        func run() throws {
            logging.bootstrap()
            let run = PretrainingRun(resolved: try config.resolve(extra: initialWeights.map { ["model.init=\"\($0)\""] } ?? []), resume: resume, resumeAllowed: Set(resumeAllowed), stopAfter: stopAfter,
                                     preemption: PreemptionSignal(), faults: .fromEnvironment())
            let communicator = try Distributed.communicator()
            defer { communicator.finalize() }
            let threads = Distributed.threads(configured: run.config.dist.threads)
            Distributed.logThreadPlan(threads: threads, configured: run.config.dist.threads, logger: Logger(label: "kaleido.pretrain"))
            let (summary, directory) = try run.run(communicator: communicator, threads: threads)
            guard communicator.isCoordinator else { return }
            if summary.preempted {
                print("preempted: checkpoint \(summary.lastCheckpoint ?? "?") saved; continue with --resume auto")
                if summary.stopSignal == "SIGINT" { throw ExitCode(130) }   // what a shell reports for Ctrl-C
                return
            }
            summary.report(knnK: run.config.eval.knnK).forEach { print($0) }
            print("run directory: \(directory.path)")
        }
    }
}
