import Foundation
import KaleidoCheckpoint

/// Writes scalars as a TensorBoard event file (`events.out.tfevents.<time>.<host>`), readable by
/// `tensorboard --logdir RUN_DIR`.
///
/// The format is small and stable: TFRecord framing (length, masked CRC-32C of the length,
/// payload, masked CRC-32C of the payload) around `Event` protocol buffers holding a wall time,
/// a step and a `Summary` of (tag, simple_value) pairs. We encode those three messages by hand
/// rather than pull in swift-protobuf and generated code for them.
public final class TensorBoardWriter {
    public let url: URL
    private let handle: FileHandle

    public init(directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let host = ProcessInfo.processInfo.hostName
        url = directory.appendingPathComponent("events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(host)")
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        handle = try FileHandle(forWritingTo: url)
        var version = Protobuf()
        version.double(field: 1, Date().timeIntervalSince1970)
        version.string(field: 3, "brain.Event:2")
        try write(record: version.bytes)
    }

    deinit { try? handle.close() }

    /// One event with every scalar of `values` at `step`.
    public func add(step: Int, values: [String: Double]) throws {
        var summary = Protobuf()
        for (tag, value) in values.sorted(by: { $0.key < $1.key }) {
            var entry = Protobuf()
            entry.string(field: 1, tag)
            entry.float(field: 2, Float(value))
            summary.message(field: 1, entry)
        }
        var event = Protobuf()
        event.double(field: 1, Date().timeIntervalSince1970)
        event.varint(field: 2, UInt64(step))
        event.message(field: 5, summary)
        try write(record: event.bytes)
    }

    public func flush() throws { try handle.synchronize() }

    private func write(record payload: [UInt8]) throws {
        var length = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { length[i] = UInt8(truncatingIfNeeded: UInt64(payload.count) >> (8 * UInt64(i))) }
        var frame = length
        frame += Self.littleEndian(TFRecordChecksum.masked(length))
        frame += payload
        frame += Self.littleEndian(TFRecordChecksum.masked(payload))
        try handle.write(contentsOf: frame)
    }

    static func littleEndian(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
}

/// The protocol-buffer wire format, only the field kinds an event needs.
struct Protobuf {
    private(set) var bytes: [UInt8] = []

    private mutating func key(_ field: Int, _ wireType: UInt64) { appendVarint(UInt64(field) << 3 | wireType) }

    private mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func varint(field: Int, _ value: UInt64) { key(field, 0); appendVarint(value) }

    mutating func double(field: Int, _ value: Double) {
        key(field, 1)
        bytes += (0..<8).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * UInt64($0))) }
    }

    mutating func float(field: Int, _ value: Float) {
        key(field, 5)
        bytes += (0..<4).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * UInt32($0))) }
    }

    mutating func string(field: Int, _ value: String) { data(field: field, Array(value.utf8)) }

    mutating func message(field: Int, _ value: Protobuf) { data(field: field, value.bytes) }

    private mutating func data(field: Int, _ value: [UInt8]) {
        key(field, 2)
        appendVarint(UInt64(value.count))
        bytes += value
    }
}

/// TFRecord's masked CRC-32C (the checksum itself is the checkpoint shards' one).
enum TFRecordChecksum {
    static func masked(_ bytes: [UInt8]) -> UInt32 {
        let crc = CRC32C.checksum(bytes)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}
