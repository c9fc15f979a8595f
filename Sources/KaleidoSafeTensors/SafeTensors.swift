import Foundation

// MARK: - Format

// A safetensors file (https://github.com/huggingface/safetensors) is
//
//   u64 little-endian  N, the byte length of the header
//   N bytes            UTF-8 JSON object, padded with spaces to a multiple of 8:
//                        { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] },
//                          …,
//                          "__metadata__": { "<key>": "<string>" } }          (optional)
//   the data section   raw little-endian, row-major tensor bytes; offsets are relative to it
//
// Kaleido reads it to import timm / torchvision weights and PyTorch parity fixtures, and writes
// it to export an encoder. The reader validates everything a hostile or truncated file could get
// wrong before a byte of tensor data is touched; gaps between tensors are tolerated (the
// reference writer never leaves any), overlaps are not.

/// Element type of a tensor in a safetensors file, spelled as in the format.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL"
    case u8 = "U8", i8 = "I8", u16 = "U16", i16 = "I16", u32 = "U32", i32 = "I32", u64 = "U64", i64 = "I64"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"
    case f16 = "F16", bf16 = "BF16", f32 = "F32", f64 = "F64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8e4m3, .f8e5m2: return 1
        case .u16, .i16, .f16, .bf16: return 2
        case .u32, .i32, .f32: return 4
        case .u64, .i64, .f64: return 8
        }
    }
}

/// Why a safetensors file could not be read or written. The description names the file and,
/// where there is one, the tensor or header key at fault.
public struct SafeTensorsError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// Fewer than 8 bytes: not even a header length.
        case truncated
        /// The header length points past the end of the file.
        case headerLengthBeyondFile
        /// The header is not a JSON object of the expected form.
        case badJSON
        /// `data_offsets` malformed or beyond the data section.
        case offsetsOutOfRange
        /// Two tensors claim the same bytes.
        case overlapping
        /// A dtype the format does not define.
        case unknownDType
        /// The shape's element count times the dtype size is not the byte range's length.
        case sizeMismatch
        /// The requested tensor is not in the file.
        case missingTensor
        /// The tensor's dtype cannot be converted to the requested element type.
        case unsupportedConversion
        /// A writer was given an invalid tensor (duplicate name, wrong value count).
        case invalidTensor
        /// The file could not be opened, read or written.
        case io
    }

    public let file: String
    /// The tensor name or header key at fault, if any.
    public let key: String?
    public let kind: Kind
    public let message: String

    public init(file: String, key: String? = nil, kind: Kind, message: String) {
        self.file = file
        self.key = key
        self.kind = kind
        self.message = message
    }

    public var description: String {
        if let key { return "\(file): '\(key)': \(message)" }
        return "\(file): \(message)"
    }
}

// MARK: - Reader

/// A safetensors file loaded into memory (memory-mapped when possible), with its header parsed
/// and validated. Tensor data is converted on request.
public struct SafeTensorsFile: Sendable {
    /// Where one tensor's bytes are and how to read them.
    public struct Entry: Sendable, Equatable {
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        /// Byte range inside the data section (which starts after the header).
        public let dataOffsets: Range<Int>
        public var count: Int { shape.reduce(1, *) }
    }

    /// The file's name in errors (its path, or what the caller called an in-memory buffer).
    public let source: String
    public private(set) var tensors: [String: Entry]
    /// The optional `__metadata__` map (string to string).
    public private(set) var metadata: [String: String]
    /// The header key of that map, which no tensor may be named.
    static let metadataKey = "__metadata__"
    /// Tensor names in sorted order.
    public var names: [String] { tensors.keys.sorted() }

    /// The whole file; `dataStart` is where the data section begins.
    private let bytes: Data
    private let dataStart: Int

    /// Reads and validates the file at `url`.
    public init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw SafeTensorsError(file: url.path, kind: .io, message: "cannot read: \(error.localizedDescription)")
        }
        try self.init(bytes: data, source: url.path)
    }

    /// Parses and validates an in-memory file; `source` names it in errors.
    public init(bytes: Data, source: String = "<memory>") throws {
        // Data may be a slice with a non-zero start index; work with a zero-based copy of the view.
        let bytes = bytes.startIndex == 0 ? bytes : Data(bytes)
        self.source = source
        self.bytes = bytes
        func fail(_ kind: SafeTensorsError.Kind, _ key: String? = nil, _ message: String) -> SafeTensorsError {
            SafeTensorsError(file: source, key: key, kind: kind, message: message)
        }

        guard bytes.count >= 8 else {
            throw fail(.truncated, nil, "truncated: \(bytes.count) bytes, a safetensors file starts with an 8-byte header length")
        }
        let declared = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard declared <= UInt64(bytes.count - 8) else {
            throw fail(.headerLengthBeyondFile, nil,
                       "header length \(declared) goes beyond the end of the file (\(bytes.count) bytes); truncated or not safetensors")
        }
        let headerLength = Int(declared)
        dataStart = 8 + headerLength
        let dataLength = bytes.count - dataStart

        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: bytes.subdata(in: 8..<dataStart))
        } catch let error as HeaderKeyError {
            throw fail(.badJSON, error.key, "bad header entry: \(error.message)")
        } catch {
            throw fail(.badJSON, nil, "header is not a JSON object of tensors: \(Self.describe(error))")
        }
        metadata = header.metadata

        var entries: [String: Entry] = [:]
        for (name, raw) in header.tensors {
            guard let dtype = SafeTensorsDType(rawValue: raw.dtype) else {
                throw fail(.unknownDType, name, "unknown dtype \"\(raw.dtype)\"")
            }
            guard raw.shape.allSatisfy({ $0 >= 0 }) else {
                throw fail(.sizeMismatch, name, "negative dimension in shape \(raw.shape)")
            }
            guard raw.dataOffsets.count == 2 else {
                throw fail(.offsetsOutOfRange, name, "data_offsets must be [begin, end], got \(raw.dataOffsets)")
            }
            let begin = raw.dataOffsets[0], end = raw.dataOffsets[1]
            guard begin >= 0, begin <= end, end <= dataLength else {
                throw fail(.offsetsOutOfRange, name,
                           "data_offsets [\(begin), \(end)] outside the data section of \(dataLength) bytes")
            }
            var expected = dtype.byteSize
            for dimension in raw.shape {
                let (product, overflow) = expected.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw fail(.sizeMismatch, name, "shape \(raw.shape) overflows") }
                expected = product
            }
            guard expected == end - begin else {
                throw fail(.sizeMismatch, name,
                           "shape \(raw.shape) of \(dtype.rawValue) needs \(expected) bytes, data_offsets give \(end - begin)")
            }
            entries[name] = Entry(dtype: dtype, shape: raw.shape, dataOffsets: begin..<end)
        }

        // Overlap check: sorted by start, each range must begin at or after the previous end.
        // Empty tensors occupy no bytes and cannot overlap anything.
        let ordered = entries.filter { !$0.value.dataOffsets.isEmpty }
            .sorted { ($0.value.dataOffsets.lowerBound, $0.key) < ($1.value.dataOffsets.lowerBound, $1.key) }
        for (previous, next) in zip(ordered, ordered.dropFirst())
        where next.value.dataOffsets.lowerBound < previous.value.dataOffsets.upperBound {
            throw fail(.overlapping, next.key,
                       "data_offsets \(next.value.dataOffsets) overlap '\(previous.key)' at \(previous.value.dataOffsets)")
        }
        tensors = entries
    }

    private static func describe(_ error: Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error { return context.debugDescription }
        if case DecodingError.typeMismatch(_, let context) = error { return context.debugDescription }
        return "\(error)"
    }

    /// The entry for `name`, or an error naming it.
    public func entry(_ name: String) throws -> Entry {
        guard let entry = tensors[name] else {
            throw SafeTensorsError(file: source, key: name, kind: .missingTensor, message: "no such tensor in the file")
        }
        return entry
    }

    /// The same file with each tensor under `rename(name)`: a view sharing the bytes, for a
    /// checkpoint that spells a model's names another way. Two tensors given one name are an
    /// error naming both (either would otherwise be silently lost).
    public func renamingTensors(_ rename: (String) -> String) throws -> SafeTensorsFile {
        var renamed: [String: Entry] = [:], origins: [String: String] = [:]
        for name in names {
            let newName = rename(name)
            if let other = origins[newName] {
                throw SafeTensorsError(file: source, key: name, kind: .invalidTensor,
                                       message: "renamed to '\(newName)', which '\(other)' is renamed to as well")
            }
            guard newName != Self.metadataKey else {
                throw SafeTensorsError(file: source, key: name, kind: .invalidTensor, message: "cannot be renamed to '\(newName)'")
            }
            origins[newName] = name
            renamed[newName] = tensors[name]
        }
        var copy = self
        copy.tensors = renamed
        return copy
    }

    /// The raw little-endian bytes of tensor `name`.
    public func rawBytes(_ name: String) throws -> Data {
        let entry = try entry(name)
        return bytes.subdata(in: (dataStart + entry.dataOffsets.lowerBound)..<(dataStart + entry.dataOffsets.upperBound))
    }

    /// Tensor `name` as Float32 values in row-major order. F32 is read exactly; F64, F16, BF16
    /// and the integer types are converted (F64 and 64-bit integers round to nearest).
    public func floats(_ name: String) throws -> (shape: [Int], values: [Float]) {
        let entry = try entry(name)
        let count = entry.count
        let start = dataStart + entry.dataOffsets.lowerBound
        let values: [Float]? = bytes.withUnsafeBytes { raw in
            let base = UnsafeRawBufferPointer(rebasing: raw[start..<(start + count * entry.dtype.byteSize)])
            func load<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> T {
                T(littleEndian: base.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self))
            }
            switch entry.dtype {
            case .f32 where UInt32(littleEndian: 1) == 1:
                // Little-endian host: the bytes already are the Floats (weights import goes this way).
                return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(from: base)
                    initialized = count
                }
            case .f32: return (0..<count).map { Float(bitPattern: load(UInt32.self, $0)) }
            case .f64: return (0..<count).map { Float(Double(bitPattern: load(UInt64.self, $0))) }
            case .f16: return (0..<count).map { Self.halfToFloat(load(UInt16.self, $0)) }
            // bfloat16 is the top half of a Float32.
            case .bf16: return (0..<count).map { Float(bitPattern: UInt32(load(UInt16.self, $0)) << 16) }
            case .i64: return (0..<count).map { Float(load(Int64.self, $0)) }
            case .i32: return (0..<count).map { Float(load(Int32.self, $0)) }
            case .i16: return (0..<count).map { Float(load(Int16.self, $0)) }
            case .i8: return (0..<count).map { Float(load(Int8.self, $0)) }
            case .u8: return (0..<count).map { Float(load(UInt8.self, $0)) }
            case .bool: return (0..<count).map { load(UInt8.self, $0) != 0 ? 1 : 0 }
            case .u16, .u32, .u64, .f8e4m3, .f8e5m2: return nil
            }
        }
        guard let values else {
            throw SafeTensorsError(file: source, key: name, kind: .unsupportedConversion,
                                   message: "cannot read \(entry.dtype.rawValue) as Float")
        }
        return (entry.shape, values)
    }

    /// Tensor `name` as integers (I64, I32, I16, I8, U8, BOOL), e.g. BatchNorm's `num_batches_tracked`
    /// or class labels.
    public func integers(_ name: String) throws -> (shape: [Int], values: [Int64]) {
        let entry = try entry(name)
        let count = entry.count
        let start = dataStart + entry.dataOffsets.lowerBound
        let values: [Int64]? = bytes.withUnsafeBytes { raw in
            let base = UnsafeRawBufferPointer(rebasing: raw[start..<(start + count * entry.dtype.byteSize)])
            func load<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> Int64 {
                Int64(T(littleEndian: base.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)))
            }
            switch entry.dtype {
            case .i64: return (0..<count).map { load(Int64.self, $0) }
            case .i32: return (0..<count).map { load(Int32.self, $0) }
            case .i16: return (0..<count).map { load(Int16.self, $0) }
            case .i8: return (0..<count).map { load(Int8.self, $0) }
            case .u8, .bool: return (0..<count).map { load(UInt8.self, $0) }
            default: return nil
            }
        }
        guard let values else {
            throw SafeTensorsError(file: source, key: name, kind: .unsupportedConversion,
                                   message: "cannot read \(entry.dtype.rawValue) as integers")
        }
        return (entry.shape, values)
    }

    /// IEEE binary16 → binary32, including subnormals, infinities and NaN. Written out rather
    /// than using `Float16` so it behaves the same on every platform.
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int(h >> 10) & 0x1F
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
        if exponent == 0 {
            // Subnormal (or zero): value = mantissa · 2⁻²⁴.
            let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
            return sign != 0 ? -magnitude : magnitude
        }
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
    }
}

// MARK: Header decoding

/// A decoding failure inside one header key, so the error can name it.
private struct HeaderKeyError: Error {
    let key: String
    let message: String
}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

private struct RawEntry: Decodable {
    let dtype: String
    let shape: [Int]
    let dataOffsets: [Int]
    enum CodingKeys: String, CodingKey {
        case dtype, shape
        case dataOffsets = "data_offsets"
    }
}

/// The header object: every key but `__metadata__` is a tensor.
private struct Header: Decodable {
    var tensors: [String: RawEntry] = [:]
    var metadata: [String: String] = [:]

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys {
            do {
                if key.stringValue == SafeTensorsFile.metadataKey {
                    metadata = try container.decode([String: String].self, forKey: key)
                } else {
                    tensors[key.stringValue] = try container.decode(RawEntry.self, forKey: key)
                }
            } catch {
                let detail: String
                switch error {
                case DecodingError.keyNotFound(let missing, _): detail = "missing \"\(missing.stringValue)\""
                case DecodingError.typeMismatch(_, let context), DecodingError.dataCorrupted(let context),
                     DecodingError.valueNotFound(_, let context):
                    let path = context.codingPath.dropFirst().map(\.stringValue).joined(separator: ".")
                    detail = path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
                default: detail = "\(error)"
                }
                throw HeaderKeyError(key: key.stringValue, message: detail)
            }
        }
    }
}
