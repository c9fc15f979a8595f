import Foundation
import Testing
import KaleidoCheckpoint
import KaleidoDist
import KaleidoSSL
import KaleidoSafeTensors
@testable import KaleidoTrain

/// `model.init` with state dicts PyTorch wrote (tools/fixtures/make_init_fixtures.py): torchvision's
/// ResNet, timm's ConvNeXt and Omnivore's official checkpoint naming load into the Kaleido model of
/// the same shape, and the encoder exported before any step is the file, bit for bit.
@Suite(.serialized) struct InitialWeightsFixtureTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/init")

    /// One tensor as stored: what a bit-for-bit comparison compares.
    struct Stored: Equatable, CustomStringConvertible {
        let dtype: SafeTensorsDType
        let shape: [Int]
        let bytes: Data
        var description: String { "\(dtype.rawValue) \(shape), \(bytes.count) bytes" }
    }

    static func stored(_ file: SafeTensorsFile) throws -> [String: Stored] {
        var result: [String: Stored] = [:]
        for name in file.names {
            let entry = try file.entry(name)
            result[name] = Stored(dtype: entry.dtype, shape: entry.shape, bytes: try file.rawBytes(name))
        }
        return result
    }

    static func model(seed: Int = 1, _ overrides: (inout KaleidoConfig) -> Void, classes: Int = 0) throws -> ReLICv2Model {
        try Pretrainer(config: InitialWeightsTests.config(seed: seed, overrides: overrides), communicator: LocalCommunicator(), threads: 1)
            .makeModel(classes: classes)
    }

    static func resnet18(width: Int) -> (inout KaleidoConfig) -> Void {
        { $0.model.arch = .resnet18; $0.model.cifarStem = true; $0.model.baseWidth = width }
    }

    static func convnextAtto(width: Int) -> (inout KaleidoConfig) -> Void {
        { $0.model.arch = .convnextAtto; $0.model.baseWidth = width; $0.model.stemPatch = 4 }
    }

    static func omnivoreCIFAR(width: Int) -> (inout KaleidoConfig) -> Void {
        { $0.model.arch = .omnivoreSwinCifar; $0.model.baseWidth = width }
    }

    /// Loads `fixture` into `model` skipping `ignoring`, exports the encoder, and returns the
    /// export's tensors and the report.
    func loadAndExport(_ fixture: String, ignoring: [String], into model: ReLICv2Model) throws -> (exported: [String: Stored], report: ArenaImportReport) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-init-fixture-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let report = try InitialWeights.load(Self.fixtures.appendingPathComponent(fixture).path, ignoring: ignoring, into: model)
        let exported = directory.appendingPathComponent("encoder.safetensors")
        try InitialWeightsTests.exportEncoder(model, to: exported)
        return (try Self.stored(SafeTensorsFile(contentsOf: exported)), report)
    }

    /// Every tensor of the export equals the fixture's under `expectedName`, and the two name
    /// sets are the same but for the skipped head: checked both ways.
    func expectSameTensors(_ exported: [String: Stored], fixture: String, skipped head: String, count: Int,
                           expectedName: (String) -> String = { $0 }, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = try SafeTensorsFile(contentsOf: Self.fixtures.appendingPathComponent(fixture))
        let original = try Self.stored(file)
        var expected: [String: Stored] = [:]
        for (name, tensor) in original where !expectedName(name).hasPrefix(head) { expected[expectedName(name)] = tensor }
        #expect(original.keys.contains { expectedName($0).hasPrefix(head) }, "the fixture has no \(head) to skip", sourceLocation: sourceLocation)
        #expect(Set(exported.keys).subtracting(expected.keys).isEmpty, "exported but not in the file", sourceLocation: sourceLocation)
        #expect(Set(expected.keys).subtracting(exported.keys).isEmpty, "in the file but not exported", sourceLocation: sourceLocation)
        let differing = expected.keys.sorted().filter { exported[$0] != nil && exported[$0] != expected[$0] }
        #expect(differing.isEmpty, "differ: \(differing.prefix(5).map { "\($0): \(expected[$0]!) vs \(exported[$0]!)" })",
                sourceLocation: sourceLocation)
        #expect(expected.count == count, sourceLocation: sourceLocation)
    }

    // MARK: - timm / torchvision

    /// torchvision's ResNet-18 (width 4, CIFAR stem): all 120 encoder tensors, BatchNorm running
    /// statistics and counters included, come back out as PyTorch wrote them.
    @Test func torchvisionResNet18LoadsBitForBit() throws {
        let model = try Self.model(Self.resnet18(width: 4))
        let (exported, report) = try loadAndExport("resnet18_cifar_w4.safetensors", ignoring: ["fc."], into: model)
        #expect(report.isComplete && report.converted.isEmpty && report.loaded.count == 120)
        try expectSameTensors(exported, fixture: "resnet18_cifar_w4.safetensors", skipped: "fc.", count: 120)
    }

    /// timm's ConvNeXt-atto (dims 4-8-16-32, conv MLP): layer scales, LayerNorms and the head's
    /// norm load; the classifier `head.fc` is skipped.
    @Test func timmConvNeXtAttoLoadsBitForBit() throws {
        let model = try Self.model(Self.convnextAtto(width: 4))
        let (exported, report) = try loadAndExport("convnext_atto_w4.safetensors", ignoring: ["head.fc."], into: model)
        #expect(report.isComplete && report.converted.isEmpty)
        #expect(report.loaded.contains("head.norm.weight") && report.loaded.contains("stages.3.blocks.1.gamma"))
        try expectSameTensors(exported, fixture: "convnext_atto_w4.safetensors", skipped: "head.fc.", count: 126)
    }

    /// A file of another width stops before anything is written, naming a mis-shaped tensor
    /// with both shapes.
    @Test func aFixtureInAModelOfAnotherWidthNamesTheMisshapenTensors() throws {
        let cases: [(fixture: String, ignoring: [String], configure: (inout KaleidoConfig) -> Void, expected: String)] = [
            ("resnet18_cifar_w4.safetensors", ["fc."], Self.resnet18(width: 8), "'conv1.weight': shape [4, 3, 3, 3] in the file, [8, 3, 3, 3] in the model"),
            ("convnext_atto_w4.safetensors", ["head.fc."], Self.convnextAtto(width: 8), "'stem.0.weight': shape [4, 3, 4, 4] in the file, [8, 3, 4, 4] in the model"),
        ]
        for (fixture, ignoring, configure, expected) in cases {
            let model = try Self.model(configure)
            let untouched = Array(UnsafeBufferPointer(start: model.online.values.pointer, count: model.online.count))
            let path = Self.fixtures.appendingPathComponent(fixture).path
            #expect { try InitialWeights.load(path, ignoring: ignoring, into: model) } throws: { error in
                let message = "\(error)"
                return error is ArenaImportError && message.contains(path) && message.contains("of another shape") && message.contains(expected)
                    && !message.contains("missing from the file") && !message.contains("unexpected in the file")
            }
            #expect(Array(UnsafeBufferPointer(start: model.online.values.pointer, count: model.online.count)) == untouched)
        }
    }

    // MARK: - Omnivore's official naming

    static let omnivoreFixture = "omnivore_official_swin_cifar_w6.safetensors"

    /// The fixture's official → Kaleido names, as the Python script spelt them from torchvision's
    /// swin3d (an account of the mapping independent of `OmnivoreCheckpointNames`).
    static func pythonNames() throws -> [String: String] {
        let file = try SafeTensorsFile(contentsOf: fixtures.appendingPathComponent(omnivoreFixture))
        let json = try #require(file.metadata["kaleido_names"])
        return try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
    }

    /// The official names are recognised, and the Swift translation agrees with the Python one
    /// for every tensor of the file (trunk, depth embedding, heads).
    @Test func officialNamesTranslateAsThePythonScriptSpellsThem() throws {
        let names = try Self.pythonNames()
        #expect(names.count == 106 && OmnivoreCheckpointNames.isOfficial(Array(names.keys)))
        #expect(!OmnivoreCheckpointNames.isOfficial(Array(names.values)))
        let disagreeing = names.keys.sorted().filter { OmnivoreCheckpointNames.kaleidoName($0) != names[$0] }
        #expect(disagreeing.isEmpty, "\(disagreeing.prefix(5).map { "\($0) → \(OmnivoreCheckpointNames.kaleidoName($0)), not \(names[$0]!)" })")
        // A trunk saved alone (tools/pth-to-safetensors.py --key trunk) has the same names without `trunk.`.
        #expect(OmnivoreCheckpointNames.kaleidoName("layers.1.blocks.0.mlp.fc2.weight") == "features.2.0.mlp.3.weight")
        #expect(OmnivoreCheckpointNames.isOfficial(["layers.0.blocks.0.norm1.weight"]))
        #expect(!OmnivoreCheckpointNames.isOfficial(["layer1.0.conv1.weight", "stages.0.blocks.0.gamma", "features.0.0.norm1.weight"]))
    }

    /// An official checkpoint (tiny: omnivore_swin_cifar at width 6) loads into Kaleido's
    /// Omnivore model — the depth embedding too — and exports under Kaleido's names bit for bit.
    @Test func omnivoreOfficialCheckpointLoadsBitForBit() throws {
        let names = try Self.pythonNames()
        let model = try Self.model(Self.omnivoreCIFAR(width: 6))
        // The file's relative position index is the one Kaleido computes for its window, so each
        // bias-table row means the same token offset in both.
        let file = try SafeTensorsFile(contentsOf: Self.fixtures.appendingPathComponent(Self.omnivoreFixture))
        let indices = names.keys.filter { $0.hasSuffix("relative_position_index") }
        #expect(indices.count == 6)
        for official in indices {
            let entry = try #require(model.online.entry(named: names[official]!))
            let fresh = UnsafeBufferPointer(start: model.online.values.pointer + entry.offset, count: entry.count).map { Int64($0) }
            #expect(try file.integers(official).values == fresh, "\(official)")
        }

        let (exported, report) = try loadAndExport(Self.omnivoreFixture, ignoring: ["heads."], into: model)
        #expect(report.isComplete && report.loaded.contains("depth_patch_embed.proj.weight"))
        try expectSameTensors(exported, fixture: Self.omnivoreFixture, skipped: "heads.", count: 100, expectedName: { names[$0]! })
    }

    /// A trunk saved alone (`pth-to-safetensors.py --key trunk`: `layers.…` without `trunk.`)
    /// is recognised as well and loads without skipping anything.
    @Test func anOfficialTrunkWithoutItsPrefixLoads() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-init-trunk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = try SafeTensorsFile(contentsOf: Self.fixtures.appendingPathComponent(Self.omnivoreFixture))
        let trunk = directory.appendingPathComponent("trunk.safetensors")
        try InitialWeightsTests.rewrite(file, to: trunk) { $0.hasPrefix("trunk.") ? String($0.dropFirst("trunk.".count)) : nil }
        let model = try Self.model(Self.omnivoreCIFAR(width: 6))
        let report = try InitialWeights.load(trunk.path, ignoring: [], into: model)
        #expect(report.isComplete && report.loaded.count == 100)
        let entry = try #require(model.online.entry(named: "features.4.1.mlp.3.weight"))
        let loaded = Array(UnsafeBufferPointer(start: model.online.values.pointer + entry.offset, count: entry.count))
        #expect(loaded == (try file.floats("trunk.layers.2.blocks.1.mlp.fc2.weight").values))
    }

    /// With the supervised objective's heads (image, video, rgbd) the official heads load too,
    /// `heads.video.1` (the Linear behind Omnivore's dropout) into `heads.video`.
    @Test func omnivoreOfficialHeadsLoadIntoTheSupervisedHeads() throws {
        let model = try Self.model({
            Self.omnivoreCIFAR(width: 6)(&$0)
            $0.ssl.objective = .relicv2Supervised
            $0.data.mix = ModalityMix(image: 1, video: 1, rgbd: 1)
        }, classes: 10)
        let report = try InitialWeights.load(Self.fixtures.appendingPathComponent(Self.omnivoreFixture).path, ignoring: [], into: model)
        #expect(report.isComplete && report.loaded.count == 106)
        let file = try SafeTensorsFile(contentsOf: Self.fixtures.appendingPathComponent(Self.omnivoreFixture))
        let entry = try #require(model.online.entry(named: "heads.video.weight"))
        let loaded = Array(UnsafeBufferPointer(start: model.online.values.pointer + entry.offset, count: entry.count))
        #expect(loaded == (try file.floats("heads.video.1.weight").values))
    }

    /// The fixture rewritten with relative position tables (and indices) of `window` in its first
    /// `blocks` blocks: how a checkpoint of another attention window looks.
    static func omnivoreFixture(window: [Int], blocks: Int, in directory: URL) throws -> URL {
        let file = try SafeTensorsFile(contentsOf: fixtures.appendingPathComponent(omnivoreFixture))
        let rows = window.map { 2 * $0 - 1 }.reduce(1, *), tokens = window.reduce(1, *)
        let replaced = (0..<blocks).map { "trunk.layers.0.blocks.\($0).attn." }
        var writer = SafeTensorsWriter()
        for name in file.names {
            let block = replaced.first { name.hasPrefix($0) }
            if block != nil, name.hasSuffix("relative_position_bias_table") {
                let heads = try file.entry(name).shape[1]
                try writer.add(name, shape: [rows, heads], values: [Float](repeating: 0.5, count: rows * heads))
            } else if block != nil, name.hasSuffix("relative_position_index") {
                try writer.add(name, shape: [tokens, tokens], int64: [Int64](repeating: 0, count: tokens * tokens))
            } else if file.tensors[name]!.dtype == .i64 {
                let (shape, values) = try file.integers(name)
                try writer.add(name, shape: shape, int64: values)
            } else {
                let (shape, values) = try file.floats(name)
                try writer.add(name, shape: shape, values: values)
            }
        }
        let url = directory.appendingPathComponent("window-\(window.map(String.init).joined(separator: "x")).safetensors")
        try writer.write(to: url)
        return url
    }

    /// Official weights of another attention window fail the shape check on the bias tables,
    /// named in Kaleido's names, with a note giving both windows and the model.arch whose
    /// window is the file's — or saying that none is and no key sets it (Omnivore's Swin-B).
    @Test func anotherWindowNamesTheTablesAndTheMatchingArch() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-init-window-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let model = try Self.model(Self.omnivoreCIFAR(width: 6))
        let untouched = Array(UnsafeBufferPointer(start: model.online.values.pointer, count: model.online.count))

        let tinyWindow = try Self.omnivoreFixture(window: [8, 7, 7], blocks: 2, in: directory)
        #expect { try InitialWeights.load(tinyWindow.path, ignoring: ["heads."], into: model) } throws: { error in
            let message = "\(error)"
            return message.contains("'features.0.0.attn.relative_position_bias_table': shape [2535, 3] in the file, [147, 3] in the model")
                && message.contains("'features.0.1.attn.relative_position_index': shape [392, 392] in the file, [32, 32] in the model")
                && message.contains("note: relative position tables are for an attention window of 8×7×7 in the file, 2×4×4 in the model "
                                    + "('features.0.0.attn.relative_position_bias_table' and 1 more)")
                && message.contains("model.arch: omnivore_swin_tiny / omnivore_swin_small / omnivore_swin_base, or set model.window: [8, 7, 7]")
                && message.contains("note: the file uses Omnivore's official names")
                && !message.contains("'trunk.")
        }

        let swinBWindow = try Self.omnivoreFixture(window: [16, 7, 7], blocks: 1, in: directory)
        #expect { try InitialWeights.load(swinBWindow.path, ignoring: ["heads."], into: model) } throws: { error in
            let message = "\(error)"
            return message.contains("'features.0.0.attn.relative_position_bias_table': shape [5239, 3] in the file, [147, 3] in the model")
                && message.contains("attention window of 16×7×7 in the file, 2×4×4 in the model ('features.0.0.attn.relative_position_bias_table')")
                && message.contains("No model.arch has a 16×7×7 window by default (omnivore_swin_tiny 8×7×7, omnivore_swin_small 8×7×7, "
                                    + "omnivore_swin_base 8×7×7, omnivore_swin_cifar 2×4×4): set model.window: [16, 7, 7]")
        }
        #expect(Array(UnsafeBufferPointer(start: model.online.values.pointer, count: model.online.count)) == untouched)

        // model.window builds the window the message asks for: Swin-B's tables then have the file's rows.
        let swinB = try Self.model { Self.omnivoreCIFAR(width: 6)(&$0); $0.model.window = [16, 7, 7] }
        let table = try #require(swinB.online.entry(named: "features.0.0.attn.relative_position_bias_table"))
        #expect(table.spec.torchShape == [5239, 3])
    }
}
