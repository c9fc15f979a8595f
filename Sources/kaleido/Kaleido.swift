import ArgumentParser
import Foundation
import KaleidoTensor
import KaleidoTrain
import Logging

@main
struct Kaleido: ParsableCommand {
    /// Picks OpenBLAS's best kernels before anything runs (see `BLASCoreSelection`), and the
    /// instruction-set cap and convolution kernels before any layer is built.
    static func main() {
        do { CPUCapability.setCap(try .capFromEnvironment()) } catch { exitReporting(error) }
        BLASCoreSelection.reexecuteIfBeneficial()
        Conv2DDirect.path = .fromEnvironment()
        if Conv2DDirect.path != .widest { DepthwiseConv2D.usesAVX512 = false }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exitReporting(error)
        }
    }

    /// ArgumentParser's own exit prints the message in pieces; under mpirun every rank that fails
    /// the same check prints it at once and the pieces interleave ("EErEror: …"). One write per
    /// message keeps each whole (a pipe write of up to PIPE_BUF bytes is atomic), and with several
    /// ranks the rank that failed is named in front.
    static func exitReporting(_ error: Error) -> Never {
        let code = exitCode(for: error)
        let message = fullMessage(for: error)
        if code == .success {
            if !message.isEmpty { print(message) }
            Foundation.exit(code.rawValue)
        }
        let identity = RankIdentity.fromLauncher(environment: ProcessInfo.processInfo.environment)
        let prefix = identity.worldSize > 1 ? "[rank \(identity.rank)/\(identity.worldSize)] " : ""
        if !message.isEmpty { FileHandle.standardError.write(Data((prefix + message + "\n").utf8)) }
        Foundation.exit(code.rawValue)
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
