import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import KaleidoData
import KaleidoDist
import KaleidoNN
import KaleidoTensor
@testable import KaleidoTrain

/// Four texture classes drawn at 16 px — horizontal stripes, vertical stripes, checkerboard, a
/// disk — in random colour pairs with pixel noise, as an image folder and a video-frames folder
/// (two frames, the pattern moving between them). Invariant to flips and mild crops, so a short
/// supervised training learns them, while colour, which dominates random features, says nothing.
enum TextureFolders {
    static let classes = ["0-horizontal", "1-vertical", "2-checker", "3-disk"]

    static func pattern(_ label: Int, phase: Float, rng: inout SplitMix64) -> Image8 {
        let colours = (0..<2).map { _ in (0..<3).map { _ in Float(rng.next() % 256) } }
        var pixels: [UInt8] = []
        for y in 0..<16 {
            for x in 0..<16 {
                let u = (Float(x) / 4 + phase).truncatingRemainder(dividingBy: 1) < 0.5
                let v = (Float(y) / 4 + phase).truncatingRemainder(dividingBy: 1) < 0.5
                let on = [v, u, u != v, (x - 8) * (x - 8) + (y - 8) * (y - 8) < 30][label]
                for c in 0..<3 { pixels.append(UInt8(max(0, min(255, colours[on ? 0 : 1][c] + 40 * (rng.uniform() - 0.5))))) }
            }
        }
        return Image8(width: 16, height: 16, channels: 3, pixels: pixels)
    }

    /// `root/images/{train,val}/<class>/<i>.png` and `root/videos/{train,val}/<class>/<i>/00000{1,2}.png`.
    static func write(to root: URL) throws {
        var rng = SplitMix64(seed: 11)
        for (split, count) in [("train", 40), ("val", 20)] {
            for (label, name) in classes.enumerated() {
                let images = root.appendingPathComponent("images/\(split)/\(name)")
                try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
                for i in 0..<count {
                    try ImageCodec.writePNG(pattern(label, phase: rng.uniform(), rng: &rng), to: images.appendingPathComponent("\(i).png").path)
                }
                for i in 0..<(count / 2) {
                    let video = root.appendingPathComponent("videos/\(split)/\(name)/\(i)")
                    try FileManager.default.createDirectory(at: video, withIntermediateDirectories: true)
                    let phase = rng.uniform()
                    var frameRNG = rng
                    for frame in 1...2 {
                        try ImageCodec.writePNG(pattern(label, phase: phase + 0.25 * Float(frame), rng: &frameRNG),
                                                to: video.appendingPathComponent(String(format: "%06d.png", frame)).path)
                        frameRNG = rng
                    }
                    _ = rng.next()
                }
            }
        }
    }
}

/// Two checkpoints of the same tiny ResNet-18 (base width 8) on `TextureFolders`, made once for
/// the whole suite: "trained" by a short *supervised* pretraining (the `supervised` objective, 30
/// steps, so the assertions do not hinge on how fast ReLICv2 learns on tiny data) and "random",
/// one step at a learning rate of 1e-12 (the initial weights, BatchNorm statistics of one batch).
final class EvaluationFixture: @unchecked Sendable {
    static let shared = Result { try EvaluationFixture() }

    let root: URL
    let trained: URL
    let random: URL
    var images: String { root.appendingPathComponent("data/images").path }
    var videos: String { root.appendingPathComponent("data/videos").path }

    static func config(root: URL, name: String, steps: Int, lr: Double) -> KaleidoConfig {
        var config = KaleidoConfig()
        config.run.outputDir = root.path
        config.run.name = name
        config.run.steps = steps
        config.run.logEvery = 5
        config.model.baseWidth = 8
        config.data.dataset = .imageFolder
        config.data.root = root.appendingPathComponent("data/images").path
        config.data.batchSize = 32
        config.data.largeSize = 16
        config.data.largeScaleMin = 0.8
        config.data.largeScaleMax = 1.0
        config.data.jitterStrength = 0
        config.data.smallCrops = 0
        config.data.smallSize = 16
        // The embedded dataset at the same size, for the modality checks.
        config.data.syntheticClasses = 4
        config.data.syntheticTrainSize = 40
        config.data.syntheticValSize = 20
        config.data.syntheticSize = 16
        config.data.syntheticFrames = 2
        config.data.clipFrames = 2
        config.ssl.objective = .supervised
        config.ssl.saliencyProbability = 0
        config.ssl.projectorHidden = 32
        config.ssl.projectorDim = 16
        config.ssl.predictorHidden = 32
        config.optim.lr = lr
        config.optim.warmupSteps = 3
        config.checkpoint.everySteps = 0
        config.eval.linearProbe = false
        config.eval.onlineProbe = true
        config.eval.onlineProbeLr = 0.02
        return config
    }

    static func pretrain(_ config: KaleidoConfig) throws -> URL {
        let (summary, _) = try PretrainingRun(config: config).run(communicator: LocalCommunicator(), threads: 2)
        return URL(fileURLWithPath: summary.lastCheckpoint!)
    }

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-eval-\(UUID().uuidString)")
        try TextureFolders.write(to: root.appendingPathComponent("data"))
        trained = try Self.pretrain(Self.config(root: root, name: "trained", steps: 30, lr: 1e-2))
        random = try Self.pretrain(Self.config(root: root, name: "random", steps: 1, lr: 1e-12))
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    func suite(_ checkpoint: URL, cache: Bool = true) throws -> EvaluationSuite {
        var suite = EvaluationSuite(checkpoint: try EvaluatedCheckpoint(path: checkpoint.path, threads: 2), threads: 2)
        suite.cache = cache
        return suite
    }
}

@Suite(.serialized) struct EvaluationSuiteTests {
    var fixture: EvaluationFixture { get throws { try EvaluationFixture.shared.get() } }

    // MARK: - Pieces

    @Test func labelSubsetsAreDeterministicClassBalancedAndNested() {
        let labels = (0..<1000).map { Int32($0 % 10) }
        let one = LabelSubset.indices(labels: labels, fraction: 0.01, seed: 3)
        let ten = LabelSubset.indices(labels: labels, fraction: 0.1, seed: 3)
        #expect(one == LabelSubset.indices(labels: labels, fraction: 0.01, seed: 3))
        #expect(one != LabelSubset.indices(labels: labels, fraction: 0.01, seed: 4))
        for (subset, perClass) in [(one, 1), (ten, 10)] {
            let counts = Dictionary(grouping: subset) { labels[$0] }.mapValues(\.count)
            #expect(counts.count == 10 && counts.values.allSatisfy { $0 == perClass }, "\(counts)")
        }
        #expect(Set(one).isSubset(of: Set(ten)))
        // Unbalanced classes keep their proportions, and a tiny class still gets one sample.
        let skewed: [Int32] = Array(repeating: 0, count: 300) + Array(repeating: 1, count: 100) + [2]
        let counts = Dictionary(grouping: LabelSubset.indices(labels: skewed, fraction: 0.1, seed: 0)) { skewed[$0] }.mapValues(\.count)
        #expect(counts == [0: 30, 1: 10, 2: 1])
    }

    @Test func layerScalesDecayFromTheClassifierDown() throws {
        let builder = ParameterBuilder()
        _ = try ModelZoo.make("resnet18-cifar", options: ModelOptions(classes: 4, baseWidth: 4), builder: builder)
        let names = builder.specs.map(\.name)
        let scales = SemiSupervisedFineTuning.layerScales(names, decay: 0.5)
        func scale(_ name: String) -> Float { scales[names.firstIndex(of: name)!] }
        // Stem, 8 basic blocks, classifier: the stem trains at 0.5⁹ of the classifier's rate.
        #expect(scale("fc.weight") == 1)
        #expect(scale("conv1.weight") == pow(0.5, 9))
        #expect(scale("layer1.0.conv1.weight") == pow(0.5, 8))
        #expect(scale("layer4.1.bn2.bias") == 0.5)
        #expect(scale("layer2.0.downsample.0.weight") == scale("layer2.0.conv1.weight"))
    }

    @Test func lbfgsAndSGDProbesFitSeparableClassesAndNotNoise() {
        let helper = EvaluationTests()
        let train = helper.clusters(count: 200, classes: 5, dimension: 16, spread: 0.3, seed: 1)
        let test = helper.clusters(count: 100, classes: 5, dimension: 16, spread: 0.3, seed: 2)
        for solver in [LinearProbe.Solver.lbfgs, .sgd] {
            let result = LinearProbe(epochs: 50, learningRate: 0.1, solver: solver).evaluate(train: train, test: test, classes: 5, pool: .serial)
            #expect(result.top1 > 0.95 && result.top5 == 1, "\(solver): \(result)")
            let noise = FeatureSet(features: train.features, labels: train.labels.shuffledDeterministically())
            let chance = LinearProbe(epochs: 50, learningRate: 0.1, solver: solver).evaluate(train: noise, test: test, classes: 5, pool: .serial)
            #expect(chance.top1 < 0.45, "\(solver) on shuffled labels: \(chance)")
        }
    }

    @Test func retrievalRecallIsHighForMatchingClassesAndNearChanceOtherwise() {
        let helper = EvaluationTests()
        let images = helper.clusters(count: 60, classes: 4, dimension: 8, spread: 0.2, seed: 7)
        let videos = helper.clusters(count: 80, classes: 4, dimension: 8, spread: 0.2, seed: 8)
        let result = CrossModalRetrieval().evaluate(query: images, gallery: videos, pool: .serial)
        #expect(result.recall[1]! > 0.95 && result.chance[1]! == 0.25)
        // 20 of 80 gallery items share the class: P(no hit in 5 draws) = C(60,5)/C(80,5).
        #expect(abs(result.chance[5]! - (1 - (60.0 * 59 * 58 * 57 * 56) / (80.0 * 79 * 78 * 77 * 76))) < 1e-12)
        let unrelated = FeatureSet(features: videos.features, labels: videos.labels.shuffledDeterministically())
        let guess = CrossModalRetrieval().evaluate(query: images, gallery: unrelated, pool: .serial)
        #expect(abs(guess.recall[1]! - guess.chance[1]!) < 0.2, "\(guess)")
    }

    @Test func knnTopFiveIncludesTopOne() {
        let helper = EvaluationTests()
        let train = helper.clusters(count: 120, classes: 6, dimension: 8, spread: 1.5, seed: 4)
        let test = helper.clusters(count: 60, classes: 6, dimension: 8, spread: 1.5, seed: 5)
        let result = KNearestNeighbours(k: 10).evaluate(train: train, test: test, classes: 6, pool: .serial)
        #expect(result.top5 >= result.top1 && result.top5 > 0.8)
        #expect(result.top1 == KNearestNeighbours(k: 10).top1(train: train, test: test, classes: 6, pool: .serial))
    }

    // MARK: - On checkpoints

    @Test func linearProbeAndKNNScoreTheTrainedEncoderAboveTheRandomOne() throws {
        let fixture = try fixture
        var scores: [String: (linear: EvaluationRecord, knn: EvaluationRecord)] = [:]
        for (name, url) in [("trained", fixture.trained), ("random", fixture.random)] {
            let suite = try fixture.suite(url)
            let data = try suite.data(fixture.images, modality: .image)
            let linear = try suite.linear(data, probe: LinearProbe(epochs: 100, weightDecay: 1e-3, solver: .lbfgs))
            let knn = try suite.knn(data, knn: KNearestNeighbours(k: 10, temperature: 0.07))
            scores[name] = (linear, knn)
            try suite.save(linear)
            try suite.save(knn)
        }
        let trained = scores["trained"]!, random = scores["random"]!
        print("linear top-1 trained \(trained.linear.metrics["top1"]!) random \(random.linear.metrics["top1"]!); "
              + "kNN top-1 trained \(trained.knn.metrics["top1"]!) random \(random.knn.metrics["top1"]!)")
        #expect(trained.linear.metrics["top1"]! > random.linear.metrics["top1"]! + 0.15)
        #expect(trained.knn.metrics["top1"]! > random.knn.metrics["top1"]! + 0.15)
        #expect(trained.linear.metrics["top5"]! == 1, "4 classes: top-5 covers them all")
        // Features were cached on disk: a second extraction reads the same numbers back, and
        // they are the bits a serial extraction computes.
        let cache = fixture.trained.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("eval-cache")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache.path).count == 2)
        let suite = try fixture.suite(fixture.trained)
        let data = try suite.data(fixture.images, modality: .image)
        let cached = try FeatureExtractor(suite.checkpoint, pool: .serial).features(data, split: .validation)
        let fresh = try FeatureExtractor(suite.checkpoint, pool: .serial, cache: false).features(data, split: .validation)
        #expect(cached.labels == fresh.labels && cached.features.array == fresh.features.array)
    }

    @Test func fineTuningFromTheTrainedEncoderBeatsRandomInitialisation() throws {
        let fixture = try fixture
        let suite = try fixture.suite(fixture.trained)
        let data = try suite.data(fixture.images, modality: .image)
        var settings = SemiSupervisedFineTuning()
        settings.steps = 12
        settings.batchSize = 16
        settings.learningRate = 5e-3
        settings.warmupSteps = 2
        settings.emaDecay = 0.8
        let pretrained = try suite.finetune(data, fraction: 0.1, settings: settings)
        let scratch = try suite.finetune(data, fraction: 0.1, settings: settings, fromScratch: true)
        print("fine-tuned on 10%: pretrained \(pretrained.metrics) scratch \(scratch.metrics)")
        #expect(pretrained.metrics["labelled"] == 16)
        #expect(pretrained.metrics["top1"]! > scratch.metrics["top1"]! + 0.15)
        #expect(pretrained.metrics["ema_top1"] != nil)
        try suite.save(pretrained)
    }

    @Test func crossModalRetrievalOfTheTrainedEncoderBeatsChanceOnFolders() throws {
        let fixture = try fixture
        var recalls: [String: [String: Double]] = [:]
        for (name, url) in [("trained", fixture.trained), ("random", fixture.random)] {
            let suite = try fixture.suite(url)
            let image = try suite.data(fixture.images, modality: .image), video = try suite.data(fixture.videos, modality: .video)
            let imageToVideo = try suite.retrieval(query: image, gallery: video, retrieval: CrossModalRetrieval())
            let videoToImage = try suite.retrieval(query: video, gallery: image, retrieval: CrossModalRetrieval())
            #expect(imageToVideo.metrics["queries"] == 80 && imageToVideo.metrics["gallery"] == 80)
            #expect(videoToImage.metrics["queries"] == 40 && videoToImage.metrics["gallery"] == 160)
            recalls[name] = ["image-video": imageToVideo.metrics["recall@1"]!, "video-image": videoToImage.metrics["recall@1"]!,
                             "chance": imageToVideo.metrics["chance@1"]!]
            if name == "trained" { try suite.save(imageToVideo); try suite.save(videoToImage) }
        }
        print("retrieval recall@1 \(recalls)")
        #expect(recalls["trained"]!["chance"] == 0.25)
        for pair in ["image-video", "video-image"] {
            #expect(recalls["trained"]![pair]! > 0.25 + 0.2, "\(pair): \(recalls)")
            #expect(recalls["trained"]![pair]! > recalls["random"]![pair]! + 0.1, "\(pair): \(recalls)")
        }
    }

    /// RGB-D and video of the embedded dataset reach a 2-D backbone (colour only; frames averaged)
    /// and are scored against the right chance level.
    @Test func syntheticModalitiesRunThroughATwoDimensionalBackbone() throws {
        let fixture = try fixture
        let suite = try fixture.suite(fixture.random, cache: false)
        let rgbd = try suite.data("synthetic", modality: .rgbd), image = try suite.data("synthetic", modality: .image)
        let record = try suite.retrieval(query: rgbd, gallery: image, retrieval: CrossModalRetrieval())
        #expect(record.metrics["queries"] == 20 && record.metrics["gallery"] == 40 && record.metrics["chance@1"] == 0.25)
        #expect((0...1).contains(record.metrics["recall@5"]!) && record.metrics["recall@5"]! >= record.metrics["recall@1"]!)
        let video = try FeatureExtractor(suite.checkpoint, pool: .serial, cache: false)
            .features(try suite.data("synthetic", modality: .video), split: .validation)
        #expect(video.count == 20 && video.dimension == suite.checkpoint.model.backbone.featureDimension)
    }

    // MARK: - Report and errors

    @Test func reportOfARunHasEveryCurveAndResultTable() throws {
        let fixture = try fixture
        let run = fixture.trained.deletingLastPathComponent().deletingLastPathComponent()
        try EvaluationRecord(kind: "linear", name: "linear-test", checkpoint: try EvaluatedCheckpoint(path: run.path), data: "synthetic",
                             settings: ["solver": "lbfgs"], metrics: ["top1": 0.5, "top5": 1], seconds: 1)
            .write(to: EvaluationRecord.directory(run: run))
        let report = try RunReport(runDirectory: run)
        let page = try report.write()
        let html = try String(contentsOf: page, encoding: .utf8)
        // 30 steps logged every 5: 6 points per curve, the online probe among them.
        let titles = report.charts.map(\.title)
        #expect(titles.contains("Loss") && titles.contains("Learning rate") && titles.contains("EMA momentum")
                && titles.contains("Throughput (images/s)") && titles.contains("Online probe accuracy"), "\(titles)")
        let paths = html.components(separatedBy: "<path class=\"series\"").dropFirst()
        #expect(paths.count >= 5)
        for path in paths {
            let d = path.components(separatedBy: " d=\"")[1].components(separatedBy: "\"")[0]
            #expect(d.split(separator: " ").count == 6 && d.hasPrefix("M"), "\(d)")
            #expect(path.contains("data-points=\"6\""))
        }
        #expect(html.contains("<table class=\"results\" data-kind=\"linear\">") && html.contains("linear-test"))
        #expect(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"))
        // Well-formed enough for an XML parser once the doctype line is dropped.
        let xml = html.replacingOccurrences(of: "<!DOCTYPE html>", with: "").replacingOccurrences(of: "<meta charset=\"utf-8\">", with: "")
        #expect(XMLParser(data: Data(xml.utf8)).parse())
        for chart in report.charts {
            let png = try ImageCodec.readPNG(run.appendingPathComponent("report/\(chart.file).png").path)
            #expect(png.width == 640 && png.height == 320)
            // Series are coloured; the frame, grid and background are grey.
            var coloured = 0
            for i in stride(from: 0, to: png.pixels.count, by: 3) where png.pixels[i] != png.pixels[i + 1] || png.pixels[i + 1] != png.pixels[i + 2] {
                coloured += 1
            }
            #expect(coloured > 300, "\(chart.file).png: \(coloured) coloured pixels")
        }
        // The metrics of the online probe are logged with the training metrics.
        #expect(report.metrics.points("train", "online_probe_acc").count == 6)
        #expect(report.metrics.points("train", "online_probe_loss").allSatisfy { $0.value > 0 && $0.value.isFinite })
    }

    /// The report as a reader's browser shows it: headless chromium (scripts/test.sh installs it,
    /// so CI runs this) draws every series colour the charts use, and its rendered DOM holds
    /// every chart's title, the x-axis label and the tick labels.
    @Test(.enabled(if: ReportScreenshot.browser() != nil, "needs chromium or google-chrome (scripts/test.sh installs chromium)"))
    func reportRendersInAHeadlessBrowser() throws {
        let fixture = try fixture
        let run = fixture.trained.deletingLastPathComponent().deletingLastPathComponent()
        let report = try RunReport(runDirectory: run)
        let page = try report.write()
        let browser = ReportScreenshot.browser()!
        let shot = try ReportScreenshot.capture(page: page, to: run.appendingPathComponent("shot.png"), browser: browser,
                                                width: 1200, height: 4000)
        #expect(shot.width == 1200 && shot.inkFraction > 0.02, "\(shot)")
        let used = Set(report.charts.flatMap { chart in chart.series.indices.map { ReportChart.seriesColours[$0 % ReportChart.seriesColours.count] } })
        #expect(used.count >= 2, "the fixture's charts should use several series colours: \(used)")
        // Visible in each colour (a series whose curve another covers still shows its legend).
        for colour in used { #expect((shot.seriesPixels[colour] ?? 0) > 10, "series colour \(colour) not drawn: \(shot)") }

        let dom = try ReportScreenshot.renderedDOM(page: page, browser: browser)
        for chart in report.charts {
            #expect(dom.contains(">\(HTML.escape(chart.title))</text>"), "chart title \(chart.title) not in the rendered DOM")
            let (xs, ys) = chart.bounds
            let ticks = [ReportChart.label(ys.upperBound, percent: chart.percent), "\(Int(xs.lowerBound.rounded()))", "\(Int(xs.upperBound.rounded()))"]
            for tick in ticks { #expect(dom.contains(">\(tick)</text>"), "\(chart.title): tick label \(tick) not in the rendered DOM") }
        }
        #expect(dom.components(separatedBy: ">step</text>").count - 1 == report.charts.count, "one x-axis label per chart")
        // Every series is a path in its colour with all its points, as laid out by the browser.
        let paths = dom.components(separatedBy: "<path class=\"series\"").dropFirst()
        #expect(paths.count == report.charts.reduce(0) { $0 + $1.series.count })
        for chart in report.charts {
            for (index, series) in chart.series.enumerated() {
                let colour = ReportChart.seriesColours[index % ReportChart.seriesColours.count]
                #expect(paths.contains { $0.contains("data-label=\"\(HTML.escape(series.label))\"") && $0.contains("stroke=\"\(colour)\"")
                                         && $0.contains("data-points=\"\(series.points.count)\"") },
                        "\(chart.title): series \(series.label) not drawn in \(colour)")
            }
        }
    }

    @Test func missingCheckpointAndDataNameThePath() throws {
        let missing = "/nonexistent/kaleido-run"
        #expect(throws: EvaluationError.missingCheckpoint(path: missing)) { try EvaluatedCheckpoint(path: missing) }
        let fixture = try fixture
        let suite = try fixture.suite(fixture.random)
        #expect(throws: EvaluationError.missingData(path: "/nonexistent/images")) {
            try suite.data("/nonexistent/images", modality: .image)
        }
        #expect(throws: EvaluationError.missingMetrics(path: "/nonexistent")) { try RunReport(runDirectory: URL(fileURLWithPath: "/nonexistent")) }
    }

    /// Without --data, evaluation reads what the run trained on; a modality the run had no data
    /// for names the config key to give instead.
    @Test func theDefaultDataIsTheRunsOwn() throws {
        let synthetic = try ConfigLoader.load().config
        #expect(try EvaluationData.runData(of: synthetic, modality: .video) == "synthetic")
        let folders = try ConfigLoader.load(overrides: ["data.dataset=image_folder", "data.root=/data/images",
                                                        "data.rgbd_root=/data/rgbd"]).config
        #expect(try EvaluationData.runData(of: folders, modality: .image) == "/data/images")
        #expect(try EvaluationData.runData(of: folders, modality: .rgbd) == "/data/rgbd")
        #expect(throws: EvaluationError.badData(spec: "data.video_root", message: "the run (data.dataset image_folder) has no video "
                                                + "data in its config: give the folder with --data")) {
            try EvaluationData.runData(of: folders, modality: .video)
        }
        let frames = try ConfigLoader.load(overrides: ["data.dataset=video_frames", "data.root=/data/clips"]).config
        #expect(try EvaluationData.runData(of: frames, modality: .video) == "/data/clips")
    }
}
