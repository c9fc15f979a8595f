import Foundation
import Testing
import KaleidoCheckpoint
import KaleidoDist
import KaleidoSSL
import KaleidoSafeTensors
@testable import KaleidoTrain

/// `model.init`: an encoder state dict with timm/torchvision names as the starting point.
@Suite(.serialized) struct InitialWeightsTests {
    static func config(seed: Int, width: Int = 4, overrides: (inout KaleidoConfig) -> Void = { _ in }) -> KaleidoConfig {
        var config = KaleidoConfig()
        config.run.seed = seed
        config.model.baseWidth = width
        config.ssl.projectorHidden = 32
        config.ssl.projectorDim = 16
        config.ssl.predictorHidden = 32
        overrides(&config)
        return config
    }

    /// The encoder of `model` (online arena) as `kaleido checkpoint export` writes it.
    static func exportEncoder(_ model: ReLICv2Model, to file: URL) throws {
        let store = CheckpointStore(directory: file.deletingLastPathComponent().appendingPathComponent("ckpt-\(UUID().uuidString)"))
        let saved = try store.save(CheckpointContent(step: 0, config: "", arrays: [SavedArray(name: "online", arena: model.online)]),
                                   communicator: LocalCommunicator())
        try LoadedCheckpoint(contentsOf: saved, threads: 1).exportEncoder(to: file)
    }

    /// `file`'s tensors written to `url` under `rename(name)`, those renamed to nil left out.
    static func rewrite(_ file: SafeTensorsFile, to url: URL, _ rename: (String) -> String?) throws {
        var writer = SafeTensorsWriter()
        for name in file.names {
            guard let newName = rename(name) else { continue }
            if file.tensors[name]!.dtype == .i64 {
                let (shape, values) = try file.integers(name)
                try writer.add(newName, shape: shape, int64: values)
            } else {
                let (shape, values) = try file.floats(name)
                try writer.add(newName, shape: shape, values: values)
            }
        }
        try writer.write(to: url)
    }

    static func tensors(_ file: URL) throws -> [String: [UInt32]] {
        let loaded = try SafeTensorsFile(contentsOf: file)
        var result: [String: [UInt32]] = [:]
        for name in loaded.names where loaded.tensors[name]!.dtype == .f32 { result[name] = try loaded.floats(name).values.map(\.bitPattern) }
        return result
    }

    func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-init-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// A model of another seed, initialised from an exported encoder and exported again before
    /// any step, writes the same tensors bit for bit; its target equals its online encoder.
    @Test func initThenExportGivesTheSameTensors() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = try Pretrainer(config: Self.config(seed: 0), communicator: LocalCommunicator(), threads: 1).makeModel()
        let file = directory.appendingPathComponent("encoder.safetensors")
        try Self.exportEncoder(source, to: file)

        let model = try Pretrainer(config: Self.config(seed: 1), communicator: LocalCommunicator(), threads: 1).makeModel()
        let before = try Self.tensors(file)
        let report = try InitialWeights.load(file.path, ignoring: [], into: model)
        #expect(report.missing.isEmpty && report.unexpected.isEmpty && !report.loaded.isEmpty)
        let again = directory.appendingPathComponent("again.safetensors")
        try Self.exportEncoder(model, to: again)
        #expect(try Self.tensors(again) == before)
        #expect(!before.isEmpty)
        let online = UnsafeBufferPointer(start: model.online.values.pointer, count: model.online.count)
        let target = UnsafeBufferPointer(start: model.target.values.pointer, count: model.target.count)
        #expect(Array(online) == Array(target))
    }

    /// A file of another width names the tensors whose shapes differ (first ten, then a count);
    /// an encoder entry the file lacks is named with the key that skips it.
    @Test func aMismatchNamesTheTensorsAndTouchesNothing() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("narrow.safetensors")
        try Self.exportEncoder(try Pretrainer(config: Self.config(seed: 0), communicator: LocalCommunicator(), threads: 1).makeModel(), to: file)

        let wide = try Pretrainer(config: Self.config(seed: 1, width: 8), communicator: LocalCommunicator(), threads: 1).makeModel()
        let untouched = Array(UnsafeBufferPointer(start: wide.online.values.pointer, count: wide.online.count))
        do {
            try InitialWeights.load(file.path, ignoring: [], into: wide)
            Issue.record("a file of another width loaded")
        } catch let error as ArenaImportError {
            let message = "\(error)"
            #expect(message.contains(file.path) && message.contains("of another shape") && message.contains("'conv1.weight': shape [4, 3, 3, 3] in the file, [8, 3, 3, 3] in the model"), "\(message)")
            #expect(message.contains("… and ") && message.split(separator: "\n").count <= 14, "\(message)")
        }
        #expect(Array(UnsafeBufferPointer(start: wide.online.values.pointer, count: wide.online.count)) == untouched)

        // The supervised objective's heads are not in a backbone's file: named, and skipped by prefix.
        let supervised = try Pretrainer(config: Self.config(seed: 1) { $0.ssl.objective = .relicv2Supervised },
                                        communicator: LocalCommunicator(), threads: 1).makeModel(classes: 10)
        #expect { try InitialWeights.load(file.path, ignoring: [], into: supervised) } throws: {
            "\($0)".contains("missing from the file") && "\($0)".contains("heads.image.weight") && "\($0)".contains("model.init_ignore")
        }
        let report = try InitialWeights.load(file.path, ignoring: ["heads."], into: supervised)
        #expect(report.missing.isEmpty && !report.loaded.contains { $0.hasPrefix("heads.") })
    }

    /// Video-only weights (torchvision's swin3d_t has no depth patch embedding) initialise an
    /// Omnivore trunk: every tensor of the file is loaded and the depth embedding keeps its
    /// zero start, reported as missing rather than refused.
    @Test func omnivoresDepthEmbeddingStaysFreshWhereTheFileHasNone() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        func omnivore(seed: Int) throws -> ReLICv2Model {
            try Pretrainer(config: Self.config(seed: seed, width: 8) { $0.model.arch = .omnivoreSwinCifar },
                           communicator: LocalCommunicator(), threads: 1).makeModel()
        }
        let full = directory.appendingPathComponent("full.safetensors")
        try Self.exportEncoder(try omnivore(seed: 0), to: full)
        let videoOnly = directory.appendingPathComponent("video-only.safetensors")
        let source = try SafeTensorsFile(contentsOf: full)
        try Self.rewrite(source, to: videoOnly) { $0.hasPrefix("depth_patch_embed.") ? nil : $0 }

        let model = try omnivore(seed: 1)
        let depth = model.online.entries.filter { $0.spec.name.hasPrefix("depth_patch_embed.") }
        #expect(!depth.isEmpty)
        let fresh = depth.map { Array(UnsafeBufferPointer(start: model.online.values.pointer + $0.offset, count: $0.count)) }
        let report = try InitialWeights.load(videoOnly.path, ignoring: [], into: model)
        #expect(Set(report.missing) == Set(depth.map(\.spec.name)) && report.unexpected.isEmpty)
        #expect(depth.map { Array(UnsafeBufferPointer(start: model.online.values.pointer + $0.offset, count: $0.count)) } == fresh)
        #expect(report.loaded.count == source.names.count - depth.count)
    }

    /// `kaleido pretrain` with model.init starts from the file: a run initialised from its own
    /// exported starting point trains the same losses as that run, and from other weights others.
    @Test func aPretrainingRunStartsFromTheFile() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        func run(_ name: String, seed: Int, initialWeights: String) throws -> URL {
            let config = Self.config(seed: seed) {
                $0.run.outputDir = directory.path
                $0.run.name = name
                $0.run.steps = 2
                $0.run.logEvery = 1
                $0.data.batchSize = 8
                $0.data.syntheticTrainSize = 64
                $0.data.syntheticValSize = 16
                $0.eval.linearProbe = false
                $0.model.`init` = initialWeights
            }
            return try PretrainingRun(config: config).run(communicator: LocalCommunicator(), threads: 2).runDirectory
        }
        let file = directory.appendingPathComponent("start.safetensors")
        try Self.exportEncoder(try Pretrainer(config: Self.config(seed: 0), communicator: LocalCommunicator(), threads: 1).makeModel(), to: file)
        let plain = try run("plain", seed: 0, initialWeights: "")
        // Another seed would start elsewhere; the file puts the encoder back where seed 0 started
        // (the SSL heads, not in the file, are seed 0's too: the data and heads follow run.seed).
        let initialised = try run("initialised", seed: 0, initialWeights: file.path)
        let expected = try JointPretrainingTests.losses(plain), got = try JointPretrainingTests.losses(initialised)
        #expect(expected.count == 2 && got.mapValues(\.bitPattern) == expected.mapValues(\.bitPattern))
        // …and a file of other weights (seed 5's encoder) changes them: the file is what is used.
        let other = directory.appendingPathComponent("other.safetensors")
        try Self.exportEncoder(try Pretrainer(config: Self.config(seed: 5), communicator: LocalCommunicator(), threads: 1).makeModel(), to: other)
        let elsewhere = try JointPretrainingTests.losses(try run("elsewhere", seed: 0, initialWeights: other.path))
        #expect(elsewhere.count == 2 && elsewhere[1] != expected[1])
    }
}
