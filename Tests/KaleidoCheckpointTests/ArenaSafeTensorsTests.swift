import Foundation
import KaleidoNN
import Testing
@testable import KaleidoCheckpoint
import KaleidoSafeTensors

@Suite struct ArenaSafeTensorsTests {
    /// One parameter of every layout and role: conv (OC 3, 2×2, IC 2), depthwise (3×3, C 4),
    /// 3-D patch (OC 2, 1×2×2, IC 3), linear (5, 4) + bias, and a BatchNorm's buffers.
    static func arena(seed: UInt64, withHead: Bool = true) -> ParameterArena {
        let b = ParameterBuilder()
        _ = b.child("conv").parameter("weight", shape: [3, 2, 2, 2], layout: .convolution, role: .weight, initializer: .normal(std: 1))
        _ = b.child("dw").parameter("weight", shape: [3, 3, 4], layout: .depthwise, role: .weight, initializer: .normal(std: 1))
        _ = b.child("patch").parameter("weight", shape: [2, 1, 2, 2, 3], layout: .convolution3D, role: .weight,
                                       initializer: .normal(std: 1))
        let bn = b.child("bn")
        _ = bn.parameter("running_var", shape: [4], role: .buffer, initializer: .uniform(bound: 1))
        _ = bn.parameter("num_batches_tracked", shape: [], role: .integerBuffer, initializer: .constant(Float(7 + seed)))
        if withHead {
            let fc = b.child("fc")
            _ = fc.parameter("weight", shape: [5, 4], role: .weight, initializer: .normal(std: 1))
            _ = fc.parameter("bias", shape: [5], role: .noDecay, initializer: .normal(std: 1))
        }
        return b.makeArena(seed: seed)
    }

    func values(_ arena: ParameterArena) -> [Float] { Array(UnsafeBufferPointer(start: arena.values.pointer, count: arena.count)) }

    func file(_ writer: SafeTensorsWriter, _ name: String = "model.safetensors") throws -> SafeTensorsFile {
        try SafeTensorsFile(bytes: Data(writer.serialized()), source: name)
    }

    /// A file of tensors given as raw little-endian bytes, for dtypes the writer does not produce.
    func rawFile(_ tensors: [(name: String, dtype: SafeTensorsDType, shape: [Int], bytes: [UInt8])]) throws -> SafeTensorsFile {
        var fields: [String] = [], data: [UInt8] = []
        for t in tensors {
            fields.append("\"\(t.name)\":{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":\(t.shape),\"data_offsets\":[\(data.count),\(data.count + t.bytes.count)]}")
            data += t.bytes
        }
        let header = Array("{\(fields.joined(separator: ","))}".utf8)
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init)
        bytes += header + data
        return try SafeTensorsFile(bytes: Data(bytes), source: "raw.safetensors")
    }

    @Test func exportUsesTorchNamesShapesAndDtypes() throws {
        let arena = Self.arena(seed: 1)
        let f = try file(ArenaSafeTensors.writer(for: arena, metadata: ["model": "test"]))
        #expect(f.names == arena.entries.map(\.spec.name).sorted())
        #expect(f.metadata == ["model": "test"])
        #expect(try f.entry("conv.weight").shape == [3, 2, 2, 2])
        #expect(try f.entry("dw.weight").shape == [4, 1, 3, 3])
        #expect(try f.entry("patch.weight").shape == [2, 3, 1, 2, 2])
        #expect(try f.entry("fc.weight").shape == [5, 4])
        #expect(try f.entry("bn.num_batches_tracked").shape == [])
        #expect(try f.entry("bn.num_batches_tracked").dtype == .i64)
        #expect(try f.integers("bn.num_batches_tracked").values == [8])
        #expect(try f.entry("bn.running_var").dtype == .f32)
    }

    @Test func exportPermutesChannelsLastToChannelsFirst() throws {
        let arena = Self.arena(seed: 2)
        let f = try file(ArenaSafeTensors.writer(for: arena))
        // conv: Kaleido (OC, KH, KW, IC) [o, h, w, i] = PyTorch (OC, IC, KH, KW) [o, i, h, w].
        let conv = arena.tensor(named: "conv.weight")!.array, torchConv = try f.floats("conv.weight").values
        for o in 0..<3 { for h in 0..<2 { for w in 0..<2 { for i in 0..<2 {
            #expect(conv[((o * 2 + h) * 2 + w) * 2 + i] == torchConv[((o * 2 + i) * 2 + h) * 2 + w])
        } } } }
        // depthwise: Kaleido (KH, KW, C) [h, w, c] = PyTorch (C, 1, KH, KW) [c, 0, h, w].
        let dw = arena.tensor(named: "dw.weight")!.array, torchDW = try f.floats("dw.weight").values
        for h in 0..<3 { for w in 0..<3 { for c in 0..<4 {
            #expect(dw[(h * 3 + w) * 4 + c] == torchDW[(c * 3 + h) * 3 + w])
        } } }
        // 3-D: Kaleido (OC, KT, KH, KW, IC) [o, t, h, w, i] = PyTorch (OC, IC, KT, KH, KW) [o, i, t, h, w].
        let patch = arena.tensor(named: "patch.weight")!.array, torchPatch = try f.floats("patch.weight").values
        for o in 0..<2 { for h in 0..<2 { for w in 0..<2 { for i in 0..<3 {
            #expect(patch[((o * 2 + h) * 2 + w) * 3 + i] == torchPatch[((o * 3 + i) * 2 + h) * 2 + w])
        } } } }
        #expect(try f.floats("fc.weight").values == arena.tensor(named: "fc.weight")!.array)
    }

    @Test func importRestoresAnExportBitForBit() throws {
        let source = Self.arena(seed: 3), target = Self.arena(seed: 4)
        #expect(values(source) != values(target))
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("kaleido-arena-\(ProcessInfo.processInfo.processIdentifier).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try ArenaSafeTensors.export(source, to: url)
        let report = try ArenaSafeTensors.load(contentsOf: url, into: target)
        #expect(report.isComplete && report.converted.isEmpty)
        #expect(report.loaded == source.entries.map(\.spec.name))
        #expect(values(source).map(\.bitPattern) == values(target).map(\.bitPattern))
        // And exporting the imported arena gives the same bytes.
        #expect(try ArenaSafeTensors.writer(for: target).serialized() == ArenaSafeTensors.writer(for: source).serialized())
    }

    @Test func strictImportNamesTheFileAndEveryBadKeyAndLeavesTheArenaAlone() throws {
        var writer = try ArenaSafeTensors.writer(for: Self.arena(seed: 5, withHead: false))
        try writer.add("head.weight", shape: [5, 4], values: Array(repeating: 0, count: 20))
        let target = Self.arena(seed: 6)
        let before = values(target)
        do {
            try ArenaSafeTensors.load(file(writer, "backbone.safetensors"), into: target)
            Issue.record("a strict import of a file without the head must fail")
        } catch let error as ArenaImportError {
            #expect(error.file == "backbone.safetensors")
            #expect(Set(error.problems) == [.missing(key: "fc.weight", shape: [5, 4]), .missing(key: "fc.bias", shape: [5]),
                                            .unexpected(key: "head.weight", shape: [5, 4])])
            for needle in ["backbone.safetensors", "'fc.weight'", "'fc.bias'", "'head.weight'"] {
                #expect(error.description.contains(needle), "\(error.description) should name \(needle)")
            }
        }
        #expect(values(target) == before)
    }

    @Test func shapeMismatchNamesBothShapesEvenWhenNotStrict() throws {
        var writer = SafeTensorsWriter()
        let source = Self.arena(seed: 7)
        for entry in source.entries where entry.spec.name != "fc.weight" {
            if entry.spec.role == .integerBuffer {
                try writer.add(entry.spec.name, shape: [], int64: [1])
            } else {
                try writer.add(entry.spec.name, shape: entry.spec.torchShape, values: Array(repeating: 0, count: entry.count))
            }
        }
        try writer.add("fc.weight", shape: [4, 5], values: Array(repeating: 0, count: 20))
        do {
            try ArenaSafeTensors.load(file(writer), into: Self.arena(seed: 8), allowMissing: true, allowUnexpected: true)
            Issue.record("a transposed weight must not load")
        } catch let error as ArenaImportError {
            #expect(error.problems == [.shapeMismatch(key: "fc.weight", model: [5, 4], file: [4, 5])])
            #expect(error.description.contains("'fc.weight': shape [4, 5] in the file, [5, 4] in the model"))
        }
    }

    @Test func relaxedImportLoadsABackboneAndReportsWhatItSkipped() throws {
        var writer = try ArenaSafeTensors.writer(for: Self.arena(seed: 9, withHead: false))
        try writer.add("head.weight", shape: [5, 4], values: Array(repeating: 0, count: 20))
        let target = Self.arena(seed: 10)
        let head = target.tensor(named: "fc.weight")!.array
        let report = try ArenaSafeTensors.load(file(writer), into: target, allowMissing: true, allowUnexpected: true)
        #expect(report.missing == ["fc.weight", "fc.bias"])
        #expect(report.unexpected == ["head.weight"])
        #expect(!report.isComplete)
        #expect(target.tensor(named: "fc.weight")!.array == head)
        #expect(target.tensor(named: "conv.weight")!.array == Self.arena(seed: 9).tensor(named: "conv.weight")!.array)
        #expect(target.tensor(named: "bn.num_batches_tracked")!.array == [16])
        // Allowing only one kind still rejects the other.
        #expect(throws: ArenaImportError.self) { try ArenaSafeTensors.load(file(writer), into: target, allowMissing: true) }
    }

    @Test func halfBFloatAndDoubleWeightsConvertAndIntegerBuffersMustBeIntegers() throws {
        let b = ParameterBuilder()
        _ = b.parameter("h", shape: [2], role: .weight, initializer: .zeros)
        _ = b.parameter("bf", shape: [2], role: .weight, initializer: .zeros)
        _ = b.parameter("d", shape: [2], role: .noDecay, initializer: .zeros)
        _ = b.parameter("n", shape: [], role: .integerBuffer, initializer: .zeros)
        let arena = b.makeArena(seed: 0)
        let f = try rawFile([
            ("h", .f16, [2], [0x00, 0x3C, 0x00, 0xC1]),                  // 1.0, −2.5
            ("bf", .bf16, [2], [0x80, 0x3F, 0x40, 0x40]),                // 1.0, 3.0
            ("d", .f64, [2], withUnsafeBytes(of: 0.25.bitPattern.littleEndian, Array.init)
                + withUnsafeBytes(of: (-8.0).bitPattern.littleEndian, Array.init)),
            ("n", .i64, [], withUnsafeBytes(of: Int64(12345).littleEndian, Array.init)),
        ])
        let report = try ArenaSafeTensors.load(f, into: arena)
        #expect(report.converted == ["h", "bf", "d"])
        #expect(values(arena) == [1, -2.5, 1, 3, 0.25, -8, 12345])

        let wrong = try rawFile([("h", .i32, [2], [1, 0, 0, 0, 2, 0, 0, 0]), ("bf", .bf16, [2], [0, 0, 0, 0]),
                                 ("d", .f32, [2], [0, 0, 0, 0, 0, 0, 0, 0]), ("n", .f32, [], [0, 0, 0, 0])])
        do {
            try ArenaSafeTensors.load(wrong, into: arena)
            Issue.record("integer weights and a float counter must not load")
        } catch let error as ArenaImportError {
            #expect(error.problems.map(\.key) == ["h", "n"])
            #expect(error.description.contains("'n': stored as F32, expected an integer type"))
        }
    }
}
