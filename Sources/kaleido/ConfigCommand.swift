import ArgumentParser
import KaleidoTrain

/// `--config FILE` and repeatable `--set a.b.c=value`, shared by every command that reads a config.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("YAML config file (default: the built-in debug config, configs/debug.yaml).",
                                            valueName: "file"))
    var config: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Override one value, e.g. --set optim.lr=0.1 (repeatable).",
                                                         valueName: "key.path=value"))
    var overrides: [String] = []

    /// The resolved config; a bad file, key, type or range fails with a message naming it.
    /// `extra` overrides come after the user's `--set`s (a command's own options, e.g. `--init`).
    func resolve(extra: [String] = []) throws -> ResolvedConfig {
        try ConfigLoader.load(file: config, overrides: overrides + extra)
    }
}

extension Kaleido {
    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inspect configurations.",
            subcommands: [Show.self])

        struct Show: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print the resolved configuration (defaults, then --config, then each --set) as YAML.")

            @OptionGroup var options: ConfigOptions

            func run() throws {
                print(try options.resolve().yaml(), terminator: "")
            }
        }
    }
}
