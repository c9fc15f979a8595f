import ArgumentParser
import Foundation
import KaleidoData
import KaleidoTrain

/// What every evaluation of a checkpoint needs: which weights, which data, where results go.
struct EvaluationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A checkpoint directory (with manifest.json) or a run directory (its newest valid checkpoint).",
                               valueName: "path"))
    var checkpoint: String?

    @Option(name: .customLong("init"), help: ArgumentHelp(
        "Instead of --checkpoint: evaluate these weights (a .safetensors state dict with timm/torchvision names) in the "
        + "model of --config/--set; they are written as step 0 of <run.output_dir>/<file name>-init first.", valueName: "file"))
    var initialWeights: String?

    @Option(help: ArgumentHelp("With --init: the config whose model and data the weights are evaluated with (default: the built-in debug config).",
                               valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("`synthetic` (the embedded dataset of the run's config) or a dataset folder with train/ and val/ "
                               + "(default: the data the run trained on: synthetic, or its config's folder for the modality).",
                               valueName: "synthetic|folder"))
    var data: String?

    @Option(name: .customLong("modality"), help: ArgumentHelp("Modality of the data: image (the default), video or rgbd.",
                                                              valueName: "image|video|rgbd"))
    var chosenModality: Modality?

    var modality: Modality { chosenModality ?? .image }

    @Option(help: ArgumentHelp("Weights to evaluate: the online encoder or the EMA target encoder (default online; "
                               + "`finetune`: eval.finetune_encoder of the checkpoint's config).", valueName: "online|target"))
    var encoder: String?

    @Option(name: .customLong("set"), help: ArgumentHelp(
        "Override a value of the checkpoint's config, e.g. --set data.synthetic_val_size=200 (repeatable).", valueName: "key.path=value"))
    var overrides: [String] = []

    @Option(help: "Compute threads (0 = every core).")
    var threads = 0

    @Flag(help: "Recompute frozen features instead of reusing <run>/eval-cache/.")
    var noCache = false

    @Option(help: ArgumentHelp("Folder for the result JSON (default: <run>/eval).", valueName: "dir"))
    var output: String?

    @Flag(help: "Print the result record as JSON instead of a table.")
    var json = false

    /// --encoder as the config's choice; validate() has refused anything else.
    var chosenEncoder: TrainedEncoder? { encoder.flatMap(TrainedEncoder.init(rawValue:)) }

    func validate() throws {
        if let encoder, TrainedEncoder(rawValue: encoder) == nil {
            throw ValidationError("--encoder must be online or target, got \(encoder)")
        }
        if threads < 0 { throw ValidationError("--threads must be ≥ 0, got \(threads)") }
        if (checkpoint == nil) == (initialWeights == nil) { throw ValidationError("give --checkpoint or --init (one of them)") }
        if config != nil && initialWeights == nil { throw ValidationError("--config goes with --init (a checkpoint holds its config)") }
    }

    /// The checkpoint with --encoder, or else the encoder `defaultEncoder` picks from its config.
    func suite(defaultEncoder: (KaleidoConfig) -> TrainedEncoder = { _ in .online }) throws -> EvaluationSuite {
        let threads = self.threads > 0 ? self.threads : ProcessInfo.processInfo.activeProcessorCount
        var path = checkpoint ?? ""
        var overrides = self.overrides
        if let initialWeights {
            // The file's weights become step 0 of a run directory named after it.
            let resolved = try ConfigLoader.load(file: config, overrides: overrides).config
            let name = URL(fileURLWithPath: initialWeights).deletingPathExtension().lastPathComponent + "-init"
            path = try InitialWeights.checkpoint(file: initialWeights, config: resolved,
                                                 runDirectory: URL(fileURLWithPath: resolved.run.outputDir).appendingPathComponent(name)).path
            overrides = []   // already in the checkpoint's config
        }
        let checkpoint = try EvaluatedCheckpoint(path: path, encoder: { chosenEncoder ?? defaultEncoder($0) },
                                                 overrides: overrides, threads: threads)
        var suite = EvaluationSuite(checkpoint: checkpoint, threads: threads)
        suite.cache = !noCache
        return suite
    }

    /// Saves the record and prints it.
    func finish(_ record: EvaluationRecord, suite: EvaluationSuite) throws {
        let file = try suite.save(record, in: output.map { URL(fileURLWithPath: $0) })
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(record), as: UTF8.self))
        } else {
            print(EvaluationTable.text(record))
            print("saved \(file.path)")
        }
    }
}

extension Modality: ExpressibleByArgument {
    public init?(argument: String) {
        guard let modality = Modality.allCases.first(where: { $0.description == argument }) else { return nil }
        self = modality
    }

    // By name in errors (the raw values 0, 1, 2 are the checkpoint's business).
    public static var allValueStrings: [String] { allCases.map(\.description) }
}

extension LinearProbe.Solver: ExpressibleByArgument {}

extension Kaleido {
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Evaluate a pretrained encoder: linear probe, kNN, cross-modal retrieval.",
            discussion: """
            Features are the pooled backbone outputs of centre crops (87.5 % of the shorter side, resized to \
            data.large_size), computed once per checkpoint, encoder and data and cached in <run>/eval-cache/. \
            Results are saved as JSON in <run>/eval/ for `kaleido report`. See docs/evaluation.md.
            """,
            subcommands: [Linear.self, KNN.self, Retrieval.self])

        struct Linear: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Linear probe on frozen features: top-1/top-5 on the val split.")

            @OptionGroup var options: EvaluationOptions
            @OptionGroup var logging: LoggingOptions

            @Option(help: "Solver: lbfgs (full batch), sgd (mini-batch, momentum 0.9, cosine) or adamw (full batch).")
            var solver: LinearProbe.Solver = .lbfgs

            @Option(help: "Epochs (sgd, adamw) or iterations (lbfgs).")
            var epochs = 100

            @Option(help: "Learning rate (sgd, adamw).")
            var lr: Float = 0.1

            @Option(help: "L2 penalty (lbfgs, sgd) or decoupled weight decay (adamw).")
            var weightDecay: Float = 1e-4

            func validate() throws {
                if epochs < 1 { throw ValidationError("--epochs must be ≥ 1, got \(epochs)") }
                if !(lr > 0) { throw ValidationError("--lr must be > 0, got \(lr)") }
                if !(weightDecay >= 0) { throw ValidationError("--weight-decay must be ≥ 0, got \(weightDecay)") }
            }

            func run() throws {
                logging.bootstrap()
                let suite = try options.suite()
                let data = try suite.data(options.data, modality: options.modality)
                let probe = LinearProbe(epochs: epochs, learningRate: lr, weightDecay: weightDecay, solver: solver)
                try options.finish(try suite.linear(data, probe: probe), suite: suite)
            }
        }

        struct KNN: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "knn",
                abstract: "Weighted k-nearest-neighbour classification (cosine similarity, exp(s/T) votes): top-1/top-5.")

            @OptionGroup var options: EvaluationOptions
            @OptionGroup var logging: LoggingOptions

            @Option(help: "Neighbours (default: eval.knn_k of the checkpoint's config).")
            var k: Int?

            @Option(help: "Vote temperature T (default: eval.knn_temperature).")
            var temperature: Double?

            func validate() throws {
                if let k, k < 1 { throw ValidationError("--k must be ≥ 1, got \(k)") }
                if let temperature, !(temperature > 0) { throw ValidationError("--temperature must be > 0, got \(temperature)") }
            }

            func run() throws {
                logging.bootstrap()
                let suite = try options.suite()
                let data = try suite.data(options.data, modality: options.modality)
                let config = suite.checkpoint.config.eval
                let knn = KNearestNeighbours(k: k ?? config.knnK, temperature: Float(temperature ?? config.knnTemperature))
                try options.finish(try suite.knn(data, knn: knn), suite: suite)
            }
        }

        struct Retrieval: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Cross-modal nearest-neighbour retrieval by class: recall@1/@5 next to chance.",
                discussion: """
                Each pair QUERY:GALLERY takes the val split of QUERY as queries and the train split of GALLERY as the items \
                retrieved; a retrieval is correct when a neighbour has the query's class. By default every modality comes from \
                the data the run trained on; with --data synthetic from the embedded dataset; with folders give --data \
                (images), --video-data and --rgbd-data as needed.
                """)

            @OptionGroup var options: EvaluationOptions
            @OptionGroup var logging: LoggingOptions

            @Option(help: ArgumentHelp("Comma-separated query:gallery modality pairs.", valueName: "pairs"))
            var pairs = "image:video,video:image,rgbd:image"

            @Option(help: ArgumentHelp("Video-frames dataset folder (when --data is a folder).", valueName: "folder"))
            var videoData: String?

            @Option(help: ArgumentHelp("RGB-D dataset folder (when --data is a folder).", valueName: "folder"))
            var rgbdData: String?

            func parsedPairs() throws -> [(Modality, Modality)] {
                try pairs.split(separator: ",").map { pair in
                    let parts = pair.split(separator: ":").map(String.init)
                    guard parts.count == 2, let query = Modality(argument: parts[0]), let gallery = Modality(argument: parts[1]) else {
                        throw ValidationError("--pairs: expected query:gallery with image, video or rgbd, got \"\(pair)\"")
                    }
                    return (query, gallery)
                }
            }

            func validate() throws { _ = try parsedPairs() }

            func run() throws {
                logging.bootstrap()
                let suite = try options.suite()
                // nil: the run's own data of that modality.
                func spec(_ modality: Modality) -> String? {
                    if options.data == "synthetic" { return "synthetic" }
                    switch modality {
                    case .image: return options.data
                    case .video: return videoData ?? options.data
                    case .rgbd: return rgbdData ?? options.data
                    }
                }
                var opened: [Modality: EvaluationData] = [:]
                func data(_ modality: Modality) throws -> EvaluationData {
                    if let data = opened[modality] { return data }
                    let data = try suite.data(spec(modality), modality: modality)
                    opened[modality] = data
                    return data
                }
                for (query, gallery) in try parsedPairs() {
                    try options.finish(try suite.retrieval(query: data(query), gallery: data(gallery), retrieval: CrossModalRetrieval()),
                                       suite: suite)
                }
            }
        }
    }
}
