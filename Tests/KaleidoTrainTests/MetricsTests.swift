import Foundation
import Testing
@testable import KaleidoTrain

@Suite struct MetricsTests {
    /// Known answers from TensorBoard's own `masked_crc32c`.
    @Test func tfrecordChecksumsMatchTensorBoards() {
        #expect(TFRecordChecksum.masked(Array("123456789".utf8)) == 0xC78A_B0E5)
        #expect(TFRecordChecksum.masked([UInt8](repeating: 0, count: 8)) == 0x0798_0329)
    }

    @Test func metricsGoToJSONLinesAndATensorBoardEventFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-metrics-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = try MetricsLog(directory: directory)
        try log.record(step: 1, kind: "train", values: ["loss": 2.5, "lr": 0.1])
        try log.record(step: 2, kind: "train", values: ["loss": 2.25, "lr": 0.2])
        try log.flush()
        let text = try String(contentsOf: directory.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        let rows = text.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(rows.count == 2 && rows[1]["loss"] as? Double == 2.25 && rows[1]["step"] as? Int == 2)

        // The event file: three framed records whose CRCs check out.
        let events = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("events.out.tfevents.") }
        #expect(events.count == 1)
        var bytes = [UInt8](try Data(contentsOf: directory.appendingPathComponent(events[0])))
        var records = 0
        while !bytes.isEmpty {
            let length = (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
            let lengthCRC = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[8 + $1]) << (8 * UInt32($1)) }
            #expect(lengthCRC == TFRecordChecksum.masked(Array(bytes[0..<8])))
            let payload = Array(bytes[12..<(12 + length)])
            let payloadCRC = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[12 + length + $1]) << (8 * UInt32($1)) }
            #expect(payloadCRC == TFRecordChecksum.masked(payload))
            if records == 2 { #expect(String(decoding: payload, as: UTF8.self).contains("train/loss")) }
            bytes.removeFirst(16 + length)
            records += 1
        }
        #expect(records == 3)
    }
}
