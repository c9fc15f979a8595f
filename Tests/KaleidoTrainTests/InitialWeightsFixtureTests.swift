import Foundation
import Testing
import KaleidoCheckpoint
import KaleidoDist
import KaleidoSSL
import KaleidoSafeTensors
@testable import KaleidoTrain

/// `model.init` with state dicts PyTorch wrote (tools/fixtures/make_init_fixtures.py): torchvision's
/// ResNet and timm's ConvNeXt load into the Kaleido model of the same shape, and the encoder
/// exported before any step is the file, bit for bit.
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
}
