import ArgumentParser
import Foundation
import KaleidoTensor
import KaleidoTrain
import Logging

@main
struct Kaleido: ParsableCommand {
    /// Picks OpenBLAS's best kernels before anything runs (see `BLASCoreSelection`), and the
    /// convolution kernels before any layer is built.
    static func main() {
        BLASCoreSelection.reexecuteIfBeneficial()
        Conv2DDirect.path = .fromEnvironment()
        main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "kaleido",
        abstract: "Distributed self-supervised pretraining (ReLICv2, Omnivore) on CPU BLAS and MPI.",
        discussion: """
        Single process:   kaleido <subcommand> ...
        Several ranks:    mpirun -np 4 kaleido <subcommand> ...
        """,
        version: kaleidoVersion,
        subcommands: [Pretrain.self, Finetune.self, Eval.self, Report.self, Version.self, Config.self, Model.self, DataCommand.self, Bench.self,
                      Checkpoint.self])
}

/// Options every subcommand that logs shares.
struct LoggingOptions: ParsableArguments {
    @Option(name: .customLong("log-level"), help: "Least severe messages shown: trace, debug, info, notice, warning, error, critical.")
    var level: Logger.Level = .info

    /// Rank-prefixed logging to stderr; call once before any library code logs.
    func bootstrap() {
        RankLogHandler.bootstrap(identity: .fromLauncher(environment: ProcessInfo.processInfo.environment), level: level)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
