import Foundation
import Testing
@testable import KaleidoSafeTensors

@Suite struct SafeTensorsTests {
    /// A file written by Python's `safetensors` (tools/fixtures/make_kernel_fixtures.py).
    static let pythonFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/python_safetensors.safetensors")

    func temporaryURL(_ name: String) -> URL {
        FileManager.default.temporaryDirectory
            .appendingPathComponent("kaleido-safetensors-\(ProcessInfo.processInfo.processIdentifier)-\(name)")
    }

    /// A writer holding a few tensors, and its bytes.
    func sampleFile() throws -> [UInt8] {
        var writer = SafeTensorsWriter(metadata: ["format": "pt", "step": "12"])
        try writer.add("b.weight", shape: [2, 3], values: [1, 2, 3, 4, 5, -6.5])
        try writer.add("a.bias", shape: [3], values: [0.25, -1, .greatestFiniteMagnitude])
        try writer.add("bn.num_batches_tracked", shape: [], int64: [42])
        return writer.serialized()
    }

    /// Builds a file by hand from a header string and a data section.
    func rawFile(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        var bytes = Data()
        let json = Array(header.utf8)
        withUnsafeBytes(of: (declaredLength ?? UInt64(json.count)).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: json)
        bytes.append(contentsOf: data)
        return bytes
    }

    /// Parsing `bytes` must fail with `kind`, and the message must name the file (and `key`).
    func expectError(_ bytes: Data, _ kind: SafeTensorsError.Kind, key: String? = nil,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try SafeTensorsFile(bytes: bytes, source: "broken.safetensors")
            Issue.record("expected a \(kind) error", sourceLocation: sourceLocation)
        } catch let error as SafeTensorsError {
            #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
            #expect("\(error)".hasPrefix("broken.safetensors: "), "\(error)", sourceLocation: sourceLocation)
            if let key {
                #expect(error.key == key && "\(error)".contains("'\(key)'"), "\(error)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("unexpected error type: \(error)", sourceLocation: sourceLocation)
        }
    }

    /// The tensor read has `shape` and `values`.
    func expectTensor<T: Equatable>(_ read: (shape: [Int], values: [T]), _ shape: [Int], _ values: [T],
                                    sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(read.shape == shape, sourceLocation: sourceLocation)
        #expect(read.values == values, sourceLocation: sourceLocation)
    }

    // MARK: Round trip and layout

    @Test func roundTripRestoresTensorsAndMetadata() throws {
        let url = temporaryURL("roundtrip.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        var writer = SafeTensorsWriter(metadata: ["format": "pt", "note": "quote \" and\nnewline"])
        let weight: [Float] = (0..<24).map { Float($0) * 0.37 - 4 }
        try writer.add("stages.0.downsample.1.weight", shape: [2, 2, 2, 3], values: weight)
        try writer.add("head.bias", shape: [4], values: [-0.0, .infinity, 0x1p-140, 3])
        try writer.add("bn.num_batches_tracked", shape: [], int64: [1 << 40])
        try writer.add("empty", shape: [0, 5], values: [])
        try writer.write(to: url)

        let file = try SafeTensorsFile(contentsOf: url)
        #expect(file.names == ["bn.num_batches_tracked", "empty", "head.bias", "stages.0.downsample.1.weight"])
        #expect(file.metadata == ["format": "pt", "note": "quote \" and\nnewline"])
        let read = try file.floats("stages.0.downsample.1.weight")
        #expect(read.shape == [2, 2, 2, 3])
        #expect(read.values == weight)
        let bias = try file.floats("head.bias").values
        #expect(bias.map(\.bitPattern) == ([-0.0, .infinity, 0x1p-140, 3] as [Float]).map(\.bitPattern))
        expectTensor(try file.integers("bn.num_batches_tracked"), [], [1 << 40])
        expectTensor(try file.floats("empty"), [0, 5], [])
        #expect(file.tensors["bn.num_batches_tracked"]?.dtype == .i64)
    }

    @Test func writerSortsNamesPadsTheHeaderAndPacksDataInOrder() throws {
        let bytes = try sampleFile()
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0)
        #expect(bytes.count == 8 + headerLength + 3 * 4 + 6 * 4 + 8)
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        let positions = ["__metadata__", "\"a.bias\"", "\"b.weight\"", "\"bn.num_batches_tracked\""]
            .map { header.range(of: $0)!.lowerBound }
        #expect(positions == positions.sorted())

        let file = try SafeTensorsFile(bytes: Data(bytes))
        #expect(file.tensors["a.bias"]?.dataOffsets == 0..<12)
        #expect(file.tensors["b.weight"]?.dataOffsets == 12..<36)
        #expect(file.tensors["bn.num_batches_tracked"]?.dataOffsets == 36..<44)
    }

    @Test func writerRejectsDuplicateAndMisshapenTensors() throws {
        var writer = SafeTensorsWriter()
        try writer.add("w", shape: [2], values: [1, 2])
        #expect(throws: SafeTensorsError.self) { try writer.add("w", shape: [2], values: [1, 2]) }
        #expect(throws: SafeTensorsError.self) { try writer.add("v", shape: [3], values: [1, 2]) }
        #expect(throws: SafeTensorsError.self) { try writer.add("__metadata__", shape: [1], values: [1]) }
    }

    @Test func missingTensorAndWrongConversionAreErrorsNamingTheTensor() throws {
        let file = try SafeTensorsFile(bytes: Data(try sampleFile()), source: "sample.safetensors")
        #expect { _ = try file.floats("nope") } throws: { error in
            "\(error)" == "sample.safetensors: 'nope': no such tensor in the file"
        }
        #expect { _ = try file.integers("a.bias") } throws: { error in
            (error as? SafeTensorsError)?.kind == .unsupportedConversion && "\(error)".contains("'a.bias'")
        }
    }

    /// Renaming keeps each tensor's shape and values under its new name; two names made one,
    /// or a tensor named like the metadata key, are errors naming the tensor.
    @Test func renamingMovesTensorsAndRefusesCollisions() throws {
        let file = try SafeTensorsFile(bytes: Data(try sampleFile()), source: "sample.safetensors")
        let renamed = try file.renamingTensors { $0.replacingOccurrences(of: "b.", with: "trunk.b.") }
        #expect(renamed.names == ["a.bias", "bn.num_batches_tracked", "trunk.b.weight"])
        #expect(try renamed.floats("trunk.b.weight").values == file.floats("b.weight").values)
        #expect(try renamed.floats("trunk.b.weight").shape == [2, 3])
        #expect(try renamed.integers("bn.num_batches_tracked").values == [42])
        #expect(renamed.metadata == file.metadata)

        #expect { _ = try file.renamingTensors { $0.hasSuffix("weight") || $0.hasSuffix("bias") ? "x" : $0 } } throws: { error in
            "\(error)" == "sample.safetensors: 'b.weight': renamed to 'x', which 'a.bias' is renamed to as well"
        }
        #expect(throws: SafeTensorsError.self) { _ = try file.renamingTensors { $0 == "a.bias" ? "__metadata__" : $0 } }
    }

    // MARK: Files written by Python's safetensors

    @Test func readsAFileWrittenByThePythonLibrary() throws {
        let file = try SafeTensorsFile(contentsOf: Self.pythonFile)
        #expect(file.metadata == ["format": "pt"])
        #expect(Set(file.names) == ["bf16", "empty", "f16", "f32", "f64", "i32", "i64", "scalar",
                                    "stages.0.blocks.1.conv_dw.weight"])
        expectTensor(try file.floats("f32"), [2, 3], [0, 1.5, -2, 3.25, -0.125, 1e-3])
        expectTensor(try file.floats("f64"), [2], [Float(1.0 / 3.0), -2.5e10])
        expectTensor(try file.floats("f16"), [5], [1, -0.5, 65504, 0x1p-24, 0])
        expectTensor(try file.floats("bf16"), [2, 2], [1, -3, 0.15625, 0x1p100])
        expectTensor(try file.integers("i64"), [3], [0, -1, (1 << 40) + 3])
        expectTensor(try file.integers("i32"), [2, 1], [7, -2_000_000_000])
        #expect(try file.floats("i32").values == [7, -2e9])
        expectTensor(try file.floats("scalar"), [], [7.5])
        expectTensor(try file.floats("empty"), [0, 3], [])
        expectTensor(try file.floats("stages.0.blocks.1.conv_dw.weight"), [1, 2, 3], [0, 1, 2, 3, 4, 5])
        #expect(file.tensors["f16"]?.dtype == .f16 && file.tensors["bf16"]?.dtype == .bf16)
    }

    @Test func halfPrecisionConversionCoversSpecialValues() {
        #expect(SafeTensorsFile.halfToFloat(0x3C00) == 1)
        #expect(SafeTensorsFile.halfToFloat(0xC000) == -2)
        #expect(SafeTensorsFile.halfToFloat(0x0001) == 0x1p-24)          // smallest subnormal
        #expect(SafeTensorsFile.halfToFloat(0x03FF) == 1023 * 0x1p-24)   // largest subnormal
        #expect(SafeTensorsFile.halfToFloat(0x7C00) == .infinity)
        #expect(SafeTensorsFile.halfToFloat(0xFC00) == -.infinity)
        #expect(SafeTensorsFile.halfToFloat(0x7E00).isNaN)
        #expect(SafeTensorsFile.halfToFloat(0x8000).sign == .minus)
    }

    // MARK: Corrupt input

    @Test func fileShorterThanTheLengthFieldIsTruncated() {
        expectError(Data([1, 0, 0]), .truncated)
    }

    @Test func headerLengthBeyondTheFileIsAnError() {
        expectError(rawFile(header: "{}", declaredLength: 1000), .headerLengthBeyondFile)
        expectError(rawFile(header: "{}", declaredLength: .max), .headerLengthBeyondFile)
    }

    @Test func truncatedDataSectionIsAnErrorNamingTheTensor() throws {
        let bytes = try sampleFile()
        expectError(Data(bytes.dropLast(3)), .offsetsOutOfRange, key: "bn.num_batches_tracked")
    }

    @Test func malformedJSONIsAnError() {
        expectError(rawFile(header: "{\"a\": {\"dtype\": "), .badJSON)
        expectError(rawFile(header: "[1, 2]"), .badJSON)
        expectError(rawFile(header: "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", data: [0, 0, 0, 0]), .badJSON, key: "a")
        expectError(rawFile(header: "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}",
                            data: [0, 0, 0, 0]), .badJSON, key: "a")
        expectError(rawFile(header: "{\"__metadata__\": {\"n\": 3}}"), .badJSON, key: "__metadata__")
    }

    @Test func offsetsOutOfRangeAreAnError() {
        expectError(rawFile(header: "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                            data: [UInt8](repeating: 0, count: 8)), .offsetsOutOfRange, key: "w")
        expectError(rawFile(header: "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}",
                            data: [UInt8](repeating: 0, count: 8)), .offsetsOutOfRange, key: "w")
        expectError(rawFile(header: "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}",
                            data: [UInt8](repeating: 0, count: 8)), .offsetsOutOfRange, key: "w")
    }

    @Test func overlappingTensorsAreAnError() {
        let header = """
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
            """
        expectError(rawFile(header: header, data: [UInt8](repeating: 0, count: 12)), .overlapping, key: "b")
    }

    @Test func unknownDTypeIsAnErrorNamingTheTensor() {
        expectError(rawFile(header: "{\"w\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                            data: [0, 0, 0, 0]), .unknownDType, key: "w")
    }

    @Test func shapeThatDisagreesWithTheByteCountIsAnError() {
        expectError(rawFile(header: "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
                            data: [UInt8](repeating: 0, count: 8)), .sizeMismatch, key: "w")
        expectError(rawFile(header: "{\"w\": {\"dtype\": \"F16\", \"shape\": [-1, -4], \"data_offsets\": [0, 8]}}",
                            data: [UInt8](repeating: 0, count: 8)), .sizeMismatch, key: "w")
        expectError(rawFile(header: "{\"w\": {\"dtype\": \"F64\", \"shape\": [4611686018427387904, 4], \"data_offsets\": [0, 8]}}",
                            data: [UInt8](repeating: 0, count: 8)), .sizeMismatch, key: "w")
    }

    @Test func missingFileIsAnIOErrorNamingThePath() {
        let url = temporaryURL("does-not-exist.safetensors")
        #expect { _ = try SafeTensorsFile(contentsOf: url) } throws: { error in
            (error as? SafeTensorsError)?.kind == .io && "\(error)".hasPrefix(url.path)
        }
    }
}
