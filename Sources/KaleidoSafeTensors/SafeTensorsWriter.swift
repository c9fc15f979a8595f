import Foundation

/// Builds a safetensors file. Tensors are written in sorted name order, their data in that same
/// order with no gaps, and the header is padded with spaces to a multiple of 8 bytes so the data
/// section stays aligned, as the reference implementation does.
public struct SafeTensorsWriter: Sendable {
    private struct Pending: Sendable {
        let dtype: SafeTensorsDType
        let shape: [Int]
        let bytes: [UInt8]
    }

    /// Written as `__metadata__` when not empty.
    public var metadata: [String: String]
    private var pending: [String: Pending] = [:]

    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    /// Names added so far, sorted.
    public var names: [String] { pending.keys.sorted() }

    /// Adds a Float32 tensor. `values` are row-major and must number the shape's product.
    public mutating func add(_ name: String, shape: [Int], values: [Float]) throws {
        try add(name, dtype: .f32, shape: shape, count: values.count) {
            values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        }
    }

    /// Adds a Float32 tensor from raw memory (e.g. a slice of a parameter arena).
    public mutating func add(_ name: String, shape: [Int], values: UnsafeBufferPointer<Float>) throws {
        try add(name, shape: shape, values: Array(values))
    }

    /// Adds an I64 tensor (e.g. BatchNorm's `num_batches_tracked`).
    public mutating func add(_ name: String, shape: [Int], int64 values: [Int64]) throws {
        try add(name, dtype: .i64, shape: shape, count: values.count) {
            values.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
        }
    }

    private mutating func add(_ name: String, dtype: SafeTensorsDType, shape: [Int], count: Int,
                              bytes: () -> [UInt8]) throws {
        func fail(_ message: String) -> SafeTensorsError {
            SafeTensorsError(file: "<writer>", key: name, kind: .invalidTensor, message: message)
        }
        guard name != SafeTensorsFile.metadataKey else { throw fail("the name is reserved for metadata") }
        guard pending[name] == nil else { throw fail("added twice") }
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == count else {
            throw fail("shape \(shape) needs \(shape.reduce(1, *)) values, got \(count)")
        }
        pending[name] = Pending(dtype: dtype, shape: shape, bytes: bytes())
    }

    /// The complete file as bytes.
    public func serialized() -> [UInt8] {
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }
                .map { "\(Self.quote($0.key)):\(Self.quote($0.value))" }
            fields.append("\(Self.quote(SafeTensorsFile.metadataKey)):{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for name in names {
            let tensor = pending[name]!
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append("\(Self.quote(name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],"
                + "\"data_offsets\":[\(offset),\(offset + tensor.bytes.count)]}")
            offset += tensor.bytes.count
        }
        var header = Array("{\(fields.joined(separator: ","))}".utf8)
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))

        var file: [UInt8] = []
        file.reserveCapacity(8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: header)
        for name in names { file.append(contentsOf: pending[name]!.bytes) }
        return file
    }

    /// Writes the file to `url` atomically (a temporary file renamed into place).
    public func write(to url: URL) throws {
        do {
            try Data(serialized()).write(to: url, options: .atomic)
        } catch {
            throw SafeTensorsError(file: url.path, kind: .io, message: "cannot write: \(error.localizedDescription)")
        }
    }

    /// A JSON string literal.
    private static func quote(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
