import Foundation
import KaleidoNN
import KaleidoSafeTensors

// MARK: - Layout permutations

// A parameter arena holds convolution weights channels-last; PyTorch holds them channels-first.
// `ParameterSpec.layout` says which, and export and import permute:
//
//   .same           identical
//   .convolution    Kaleido (OC, KH, KW, IC)      ↔ PyTorch (OC, IC, KH, KW)
//   .depthwise      Kaleido (KH, KW, C)           ↔ PyTorch (C, 1, KH, KW)
//   .convolution3D  Kaleido (OC, KT, KH, KW, IC)  ↔ PyTorch (OC, IC, KT, KH, KW)
//
// Every case is a transpose of the Kaleido axes (the depthwise singleton adds no data), so one
// strided copy serves all of them in both directions.

extension TorchLayout {
    /// `axes[i]` is the Kaleido axis that becomes PyTorch axis i (singletons dropped).
    var torchAxes: [Int]? {
        switch self {
        case .same: return nil
        case .convolution: return [0, 3, 1, 2]
        case .depthwise: return [2, 0, 1]
        case .convolution3D: return [0, 4, 1, 2, 3]
        }
    }
}

enum LayoutPermutation {
    /// out = source transposed so that out axis i is source axis `axes[i]`; `shape` is the source's.
    static func transpose(_ source: UnsafePointer<Float>, shape: [Int], axes: [Int], into out: UnsafeMutablePointer<Float>) {
        let rank = shape.count
        var strides = [Int](repeating: 1, count: rank)
        for axis in stride(from: rank - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * shape[axis + 1] }
        let outShape = axes.map { shape[$0] }, outStrides = axes.map { strides[$0] }
        let count = shape.reduce(1, *)
        guard count > 0 else { return }
        // Odometer over the output index; `offset` follows it through the source.
        var index = [Int](repeating: 0, count: rank), offset = 0
        for i in 0..<count {
            out[i] = source[offset]
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                offset += outStrides[axis]
                if index[axis] < outShape[axis] { break }
                offset -= outStrides[axis] * outShape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// The values of `spec` (Kaleido layout) in PyTorch's layout.
    static func toTorch(_ values: UnsafePointer<Float>, _ spec: ParameterSpec) -> [Float] {
        guard let axes = spec.layout.torchAxes else { return Array(UnsafeBufferPointer(start: values, count: spec.count)) }
        return [Float](unsafeUninitializedCapacity: spec.count) { buffer, initialized in
            transpose(values, shape: spec.shape, axes: axes, into: buffer.baseAddress!)
            initialized = spec.count
        }
    }

    /// Writes PyTorch-layout `values` of `spec` into the arena at `target` in Kaleido's layout.
    static func fromTorch(_ values: [Float], _ spec: ParameterSpec, into target: UnsafeMutablePointer<Float>) {
        guard let axes = spec.layout.torchAxes else {
            target.update(from: values, count: spec.count)
            return
        }
        // The inverse transpose: PyTorch axis j comes from Kaleido axis axes[j], so Kaleido axis
        // axes[j] is PyTorch axis j.
        var inverse = [Int](repeating: 0, count: axes.count)
        for (j, axis) in axes.enumerated() { inverse[axis] = j }
        let torchShape = axes.map { spec.shape[$0] }
        values.withUnsafeBufferPointer { transpose($0.baseAddress!, shape: torchShape, axes: inverse, into: target) }
    }
}

// MARK: - Errors and reports

/// Why a safetensors file does not fit a model's arena. Collects every problem of the file at
/// once, as PyTorch's `load_state_dict(strict=True)` does, and names the file and each key.
public struct ArenaImportError: Error, CustomStringConvertible, Sendable {
    public enum Problem: Sendable, Hashable, CustomStringConvertible {
        /// The model has `key` (PyTorch shape given) and the file does not.
        case missing(key: String, shape: [Int])
        /// The file has `key` and the model does not.
        case unexpected(key: String, shape: [Int])
        /// Both have `key`, with different PyTorch shapes.
        case shapeMismatch(key: String, model: [Int], file: [Int])
        /// The file stores `key` in a type that cannot stand for the parameter (e.g. an integer
        /// buffer as floats, or weights as integers).
        case dtype(key: String, dtype: SafeTensorsDType, expected: String)

        public var key: String {
            switch self {
            case .missing(let key, _), .unexpected(let key, _), .shapeMismatch(let key, _, _), .dtype(let key, _, _): return key
            }
        }

        public var description: String {
            switch self {
            case .missing(let key, let shape): return "missing '\(key)' (model shape \(shape))"
            case .unexpected(let key, let shape): return "unexpected '\(key)' (file shape \(shape))"
            case .shapeMismatch(let key, let model, let file): return "'\(key)': shape \(file) in the file, \(model) in the model"
            case .dtype(let key, let dtype, let expected): return "'\(key)': stored as \(dtype.rawValue), expected \(expected)"
            }
        }
    }

    public let file: String
    public let problems: [Problem]

    public init(file: String, problems: [Problem]) {
        self.file = file
        self.problems = problems
    }

    /// How the caller lets a user skip tensors, for the hint after missing/unexpected names.
    public var skipHint = "allow missing/unexpected keys"
    /// What the caller knows about the problems that their names alone do not say (which
    /// setting a mis-shaped tensor points to, how the file's names were translated), one line each.
    public var notes: [String] = []

    /// The problems by kind, each kind's first ten listed and the rest counted.
    public var description: String {
        let kinds: [(String, (Problem) -> Bool)] = [
            ("missing from the file", { if case .missing = $0 { return true } else { return false } }),
            ("unexpected in the file", { if case .unexpected = $0 { return true } else { return false } }),
            ("of another shape", { if case .shapeMismatch = $0 { return true } else { return false } }),
            ("of an unusable type", { if case .dtype = $0 { return true } else { return false } }),
        ]
        var lines: [String] = []
        for (title, matches) in kinds {
            let found = problems.filter(matches)
            guard !found.isEmpty else { continue }
            lines.append("\(found.count) tensor\(found.count == 1 ? "" : "s") \(title):")
            lines += found.prefix(10).map { "  \($0)" }
            if found.count > 10 { lines.append("  … and \(found.count - 10) more") }
        }
        let onlyNames = problems.allSatisfy { if case .missing = $0 { return true }; if case .unexpected = $0 { return true }; return false }
        let hint = onlyNames && !problems.isEmpty ? " (to load a subset, e.g. a backbone without its head, \(skipHint))" : ""
        lines += notes.map { "note: \($0)" }
        return "\(file): does not match the model's parameters\(hint):\n  " + lines.joined(separator: "\n  ")
    }
}

/// What an import did.
public struct ArenaImportReport: Sendable, Equatable {
    /// Arena entries filled from the file, in arena order.
    public var loaded: [String] = []
    /// Arena entries the file lacks, left as they were (only when allowed).
    public var missing: [String] = []
    /// File tensors the arena has no place for, ignored (only when allowed).
    public var unexpected: [String] = []
    /// Entries converted from a narrower or wider float type (F16, BF16, F64) to Float32.
    public var converted: [String] = []

    /// Whether every arena entry was filled and every file tensor used.
    public var isComplete: Bool { missing.isEmpty && unexpected.isEmpty }
}

// MARK: - Export and import

/// A parameter arena as a PyTorch state dict in safetensors form: the torch names (the arena's
/// dotted names), torch shapes and layouts, F32 values, and I64 for integer buffers
/// (`num_batches_tracked`, `relative_position_index`). Exported files load in timm/torchvision
/// with `load_state_dict(strict=True)`; their state dicts saved with `safetensors.torch.save_file`
/// load back here.
///
///     try ArenaSafeTensors.export(arena, to: url, metadata: ["model": "resnet50"])
///     let report = try ArenaSafeTensors.load(contentsOf: url, into: arena)            // strict
///     let report = try ArenaSafeTensors.load(contentsOf: url, into: arena, allowMissing: true,
///                                            allowUnexpected: true)                      // backbone only
public enum ArenaSafeTensors {
    /// A writer holding every entry of `arena` in PyTorch's layout.
    public static func writer(for arena: ParameterArena, metadata: [String: String] = [:]) throws -> SafeTensorsWriter {
        var writer = SafeTensorsWriter(metadata: metadata)
        for entry in arena.entries {
            let spec = entry.spec, values = arena.values.pointer + entry.offset
            if spec.role == .integerBuffer {
                // Held as floats, exact below 2²⁴; rounding is the identity for values written here.
                let integers = (0..<spec.count).map { Int64(values[$0].rounded()) }
                try writer.add(spec.name, shape: spec.torchShape, int64: integers)
            } else {
                try writer.add(spec.name, shape: spec.torchShape, values: LayoutPermutation.toTorch(values, spec))
            }
        }
        return writer
    }

    /// Writes `arena` to `url` (atomically) as a safetensors state dict.
    public static func export(_ arena: ParameterArena, to url: URL, metadata: [String: String] = [:]) throws {
        try writer(for: arena, metadata: metadata).write(to: url)
    }

    /// Reads the safetensors file at `url` into `arena`; see `load(_:into:allowMissing:allowUnexpected:)`.
    @discardableResult
    public static func load(contentsOf url: URL, into arena: ParameterArena, allowMissing: Bool = false,
                            allowUnexpected: Bool = false) throws -> ArenaImportReport {
        try load(SafeTensorsFile(contentsOf: url), into: arena, allowMissing: allowMissing, allowUnexpected: allowUnexpected)
    }

    /// Copies the tensors of `file` into `arena`, permuting PyTorch layouts to Kaleido's.
    ///
    /// Strict by default: any arena entry absent from the file, any file tensor the arena lacks,
    /// any shape difference or unusable dtype throws an `ArenaImportError` listing all of them,
    /// and the arena is left untouched. `allowMissing` / `allowUnexpected` relax the first two
    /// (a backbone without its classifier, a checkpoint with an extra head); what was skipped is
    /// in the report. Shape and dtype problems are errors either way, as in PyTorch.
    ///
    /// Float parameters accept F32, F16, BF16 and F64; integer buffers accept the integer types
    /// (I64 as PyTorch writes them), held as floats — exact up to 2²⁴, which counters and
    /// position indices stay far below.
    @discardableResult
    public static func load(_ file: SafeTensorsFile, into arena: ParameterArena, allowMissing: Bool = false,
                            allowUnexpected: Bool = false) throws -> ArenaImportReport {
        try load(file, into: arena, entries: { _ in true }, ignoring: [], allowMissing: allowMissing, allowUnexpected: allowUnexpected)
    }

    /// As `load(_:into:allowMissing:allowUnexpected:)`, for the arena entries `entries` selects
    /// (others are neither required nor touched), skipping every name, in the file or the arena,
    /// that starts with one of `ignoring` (e.g. `fc.`, a classifier the arena does not have).
    /// Entries starting with one of `optional` are loaded when the file has them and otherwise
    /// keep their values (reported as missing, not an error).
    @discardableResult
    public static func load(_ file: SafeTensorsFile, into arena: ParameterArena, entries select: (ParameterArena.Entry) -> Bool,
                            ignoring prefixes: [String], optional: [String] = [], allowMissing: Bool = false,
                            allowUnexpected: Bool = false) throws -> ArenaImportReport {
        var report = ArenaImportReport()
        var problems: [ArenaImportError.Problem] = []
        var pending: [(entry: ParameterArena.Entry, values: [Float])] = []
        func ignored(_ name: String) -> Bool { prefixes.contains { name.hasPrefix($0) } }

        for entry in arena.entries where select(entry) && !ignored(entry.spec.name) {
            let spec = entry.spec
            guard let stored = file.tensors[spec.name] else {
                report.missing.append(spec.name)
                if !allowMissing && !optional.contains(where: { spec.name.hasPrefix($0) }) {
                    problems.append(.missing(key: spec.name, shape: spec.torchShape))
                }
                continue
            }
            guard stored.shape == spec.torchShape else {
                problems.append(.shapeMismatch(key: spec.name, model: spec.torchShape, file: stored.shape))
                continue
            }
            if spec.role == .integerBuffer {
                guard [.i64, .i32, .i16, .i8, .u8].contains(stored.dtype) else {
                    problems.append(.dtype(key: spec.name, dtype: stored.dtype, expected: "an integer type (I64)"))
                    continue
                }
                pending.append((entry, try file.integers(spec.name).values.map { Float($0) }))
            } else {
                guard [.f32, .f16, .bf16, .f64].contains(stored.dtype) else {
                    problems.append(.dtype(key: spec.name, dtype: stored.dtype, expected: "a float type (F32, F16, BF16, F64)"))
                    continue
                }
                if stored.dtype != .f32 { report.converted.append(spec.name) }
                pending.append((entry, try file.floats(spec.name).values))
            }
        }
        for name in file.names where !ignored(name) && !(arena.entry(named: name).map(select) ?? false) {
            report.unexpected.append(name)
            if !allowUnexpected { problems.append(.unexpected(key: name, shape: file.tensors[name]!.shape)) }
        }
        guard problems.isEmpty else { throw ArenaImportError(file: file.source, problems: problems) }

        // Only now, with the whole file known to fit, touch the arena.
        for (entry, values) in pending {
            LayoutPermutation.fromTorch(values, entry.spec, into: arena.values.pointer + entry.offset)
            report.loaded.append(entry.spec.name)
        }
        return report
    }
}
