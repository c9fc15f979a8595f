import CZstd
import Foundation

/// The float stream of one shard: the rank's slices of every array, back to back.
struct ShardSegments {
    struct Segment {
        let name: String
        let base: UnsafeMutablePointer<Float>
        let count: Int
        let start: Int   // offset in the stream
    }
    private(set) var segments: [Segment] = []
    private(set) var total = 0

    mutating func append(_ name: String, _ base: UnsafeMutablePointer<Float>, count: Int) {
        segments.append(Segment(name: name, base: base, count: count, start: total))
        total += count
    }

    /// Calls `body(pointer, count, offsetInRange)` for the parts of each segment inside `range`.
    func forEachPiece(in range: Range<Int>, _ body: (UnsafeMutablePointer<Float>, Int, Int) -> Void) {
        for segment in segments where segment.start < range.upperBound && segment.start + segment.count > range.lowerBound {
            let lower = max(range.lowerBound, segment.start), upper = min(range.upperBound, segment.start + segment.count)
            body(segment.base + (lower - segment.start), upper - lower, lower - range.lowerBound)
        }
    }

    /// Names of the arrays a range of the stream belongs to (for error messages).
    func names(in range: Range<Int>) -> [String] {
        var names: [String] = []
        forEachPiece(in: range) { pointer, _, _ in
            if let segment = segments.first(where: { pointer >= $0.base && pointer < $0.base + max($0.count, 1) }) {
                names.append(segment.name)
            }
        }
        return names
    }
}

/// Compresses a shard's float stream into independent zstd frames of `chunkBytes` raw bytes,
/// byte-shuffled, on several threads, and back. Independent frames are what make both directions
/// parallel; a frame per 4 MiB costs nothing measurable in ratio.
struct ShardCodec {
    var level: Int
    var byteShuffle: Bool
    var chunkBytes: Int
    /// zstd's per-frame XXH64 of the raw chunk, verified on decompression.
    var frameChecksum = true
    var threads: Int

    var chunkFloats: Int { chunkBytes / 4 }

    func chunkRanges(total: Int) -> [Range<Int>] {
        stride(from: 0, to: total, by: chunkFloats).map { $0..<min(total, $0 + chunkFloats) }
    }

    /// One compressed shard in memory: frames in order and the CRC-32C of their concatenation.
    final class Encoded: @unchecked Sendable {
        fileprivate(set) var frames: [UnsafeMutableRawBufferPointer]
        fileprivate(set) var crc: UInt32 = 0
        var bytes: Int { frames.reduce(0) { $0 + $1.count } }
        var pieces: [UnsafeRawBufferPointer] { frames.map { UnsafeRawBufferPointer($0) } }
        init(count: Int) { frames = Array(repeating: UnsafeMutableRawBufferPointer(start: nil, count: 0), count: count) }
        deinit { for frame in frames where frame.baseAddress != nil { frame.deallocate() } }
    }

    func encode(_ stream: ShardSegments, what: String) throws -> Encoded {
        let chunks = chunkRanges(total: stream.total)
        let encoded = Encoded(count: chunks.count)
        let workers = max(1, min(threads, chunks.count))
        let contexts = (0..<workers).map { _ -> OpaquePointer in
            let context = ZSTD_createCCtx()!
            ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level))
            ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, frameChecksum ? 1 : 0)
            return context
        }
        let scratch = (0..<workers).map { _ in UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64) }
        let crcs = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: max(1, chunks.count))
        let frames = UnsafeMutableBufferPointer<UnsafeMutableRawBufferPointer>.allocate(capacity: max(1, chunks.count))
        frames.initialize(repeating: UnsafeMutableRawBufferPointer(start: nil, count: 0))
        var handedOver = false
        defer {
            for context in contexts { ZSTD_freeCCtx(context) }
            for buffer in scratch { buffer.deallocate() }
            crcs.deallocate()
            // Frames were moved into `encoded` (or are freed here after a failure).
            if !handedOver { for frame in frames where frame.baseAddress != nil { frame.deallocate() } }
            frames.deallocate()
        }
        try Parallel.forEach(chunks.count, workers: workers) { worker, index in
            let range = chunks[index], raw = range.count * 4, buffer = scratch[worker]
            if byteShuffle {
                let planes = buffer.assumingMemoryBound(to: UInt8.self), n = range.count
                stream.forEachPiece(in: range) { source, count, at in
                    Self.shuffle(source, count: count, into: planes + at, planeStride: n)
                }
            } else {
                stream.forEachPiece(in: range) { source, count, at in
                    (buffer + at * 4).copyMemory(from: source, byteCount: count * 4)
                }
            }
            let bound = ZSTD_compressBound(raw)
            let output = UnsafeMutableRawBufferPointer.allocate(byteCount: bound, alignment: 16)
            let written = ZSTD_compress2(contexts[worker], output.baseAddress, bound, buffer, raw)
            if ZSTD_isError(written) != 0 {
                output.deallocate()
                throw CheckpointError.io(path: what, operation: "zstd compress", message: String(cString: ZSTD_getErrorName(written)))
            }
            // Keep the frame in its (larger) allocation; deallocating the rebased buffer frees it.
            let frame = UnsafeMutableRawBufferPointer(start: output.baseAddress, count: written)
            crcs[index] = CRC32C.checksum(UnsafeRawBufferPointer(frame))
            frames[index] = frame
        }
        encoded.frames = Array(frames.prefix(chunks.count))
        handedOver = true
        var crc: UInt32 = 0
        for index in 0..<chunks.count { crc = CRC32C.combine(crc, crcs[index], lengthB: frames[index].count) }
        encoded.crc = crc
        return encoded
    }

    /// Decodes the shard file `bytes` into the segments of `stream`; `path` names it in errors.
    func decode(_ bytes: UnsafeRawBufferPointer, into stream: ShardSegments, path: String) throws {
        let chunks = chunkRanges(total: stream.total)
        // Frame boundaries, walked from the frame headers (cheap: no decompression).
        var frames: [Range<Int>] = []
        var offset = 0
        while offset < bytes.count {
            let size = ZSTD_findFrameCompressedSize(bytes.baseAddress! + offset, bytes.count - offset)
            if ZSTD_isError(size) != 0 {
                let chunk = frames.count
                throw CheckpointError.corruptShard(path: path, chunk: chunk,
                                                   arrays: chunk < chunks.count ? stream.names(in: chunks[chunk]) : [],
                                                   message: String(cString: ZSTD_getErrorName(size)))
            }
            frames.append(offset..<(offset + size))
            offset += size
        }
        guard frames.count == chunks.count else {
            throw CheckpointError.corruptShard(path: path, chunk: min(frames.count, chunks.count),
                                               arrays: [], message: "\(frames.count) zstd frames, expected \(chunks.count)")
        }
        let workers = max(1, min(threads, chunks.count))
        let contexts = (0..<workers).map { _ in ZSTD_createDCtx()! }
        let scratch = (0..<workers).map { _ in UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64) }
        defer {
            for context in contexts { ZSTD_freeDCtx(context) }
            for buffer in scratch { buffer.deallocate() }
        }
        try Parallel.forEach(chunks.count, workers: workers) { worker, index in
            let range = chunks[index], raw = range.count * 4, frame = frames[index], buffer = scratch[worker]
            let source = bytes.baseAddress! + frame.lowerBound
            func fail(_ message: String) -> CheckpointError {
                .corruptShard(path: path, chunk: index, arrays: stream.names(in: range), message: message)
            }
            let declared = ZSTD_getFrameContentSize(source, frame.count)
            guard declared == UInt64(raw) else {
                throw fail("frame declares \(declared == ZSTD_CONTENTSIZE_ERROR ? "no valid" : String(declared)) bytes, expected \(raw)")
            }
            let produced = ZSTD_decompressDCtx(contexts[worker], buffer, raw, source, frame.count)
            if ZSTD_isError(produced) != 0 { throw fail(String(cString: ZSTD_getErrorName(produced))) }
            guard produced == raw else { throw fail("decoded \(produced) bytes, expected \(raw)") }
            if byteShuffle {
                let planes = UnsafePointer(buffer.assumingMemoryBound(to: UInt8.self)), n = range.count
                stream.forEachPiece(in: range) { target, count, at in
                    Self.unshuffle(planes + at, planeStride: n, count: count, into: target)
                }
            } else {
                stream.forEachPiece(in: range) { target, count, at in
                    UnsafeMutableRawPointer(target).copyMemory(from: buffer + at * 4, byteCount: count * 4)
                }
            }
        }
    }

    /// CRC-32C of a whole file's bytes, computed in 8 MiB pieces on `threads` threads.
    static func checksum(_ bytes: UnsafeRawBufferPointer, threads: Int) -> UInt32 {
        let piece = 8 << 20
        let ranges = stride(from: 0, to: bytes.count, by: piece).map { $0..<min(bytes.count, $0 + piece) }
        let crcs = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: max(1, ranges.count))
        defer { crcs.deallocate() }
        try? Parallel.forEach(ranges.count, workers: max(1, min(threads, ranges.count))) { _, index in
            crcs[index] = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[ranges[index]]))
        }
        var crc: UInt32 = 0
        for (index, range) in ranges.enumerated() { crc = CRC32C.combine(crc, crcs[index], lengthB: range.count) }
        return crc
    }

    // MARK: - Byte shuffle

    // Plane b holds byte b of every float: the sign/exponent bytes (plane 3, most of plane 2)
    // repeat and compress, the low mantissa bytes are noise and are stored nearly as they are.
    // Same transform as `ByteShuffle`, written over 32-bit words into caller-owned memory.

    @inline(__always)
    static func shuffle(_ source: UnsafePointer<Float>, count: Int, into planes: UnsafeMutablePointer<UInt8>, planeStride: Int) {
        let words = UnsafeRawPointer(source).assumingMemoryBound(to: UInt32.self)
        let p0 = planes, p1 = planes + planeStride, p2 = planes + 2 * planeStride, p3 = planes + 3 * planeStride
        for i in 0..<count {
            let w = UInt32(littleEndian: words[i])
            p0[i] = UInt8(truncatingIfNeeded: w)
            p1[i] = UInt8(truncatingIfNeeded: w >> 8)
            p2[i] = UInt8(truncatingIfNeeded: w >> 16)
            p3[i] = UInt8(truncatingIfNeeded: w >> 24)
        }
    }

    @inline(__always)
    static func unshuffle(_ planes: UnsafePointer<UInt8>, planeStride: Int, count: Int, into target: UnsafeMutablePointer<Float>) {
        let words = UnsafeMutableRawPointer(target).assumingMemoryBound(to: UInt32.self)
        let p0 = planes, p1 = planes + planeStride, p2 = planes + 2 * planeStride, p3 = planes + 3 * planeStride
        for i in 0..<count {
            let w = UInt32(p0[i]) | UInt32(p1[i]) << 8 | UInt32(p2[i]) << 16 | UInt32(p3[i]) << 24
            words[i] = UInt32(littleEndian: w)
        }
    }
}

/// Items `0..<count` split over `workers` threads that pull indices from a shared counter, so
/// uneven items (a last short chunk) balance. `body(worker, item)`: `worker < workers` indexes
/// per-thread state (a zstd context, a scratch buffer). The first error stops the remaining
/// items and is rethrown.
enum Parallel {
    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var next = 0
        var failure: Error?
    }

    private struct Body: @unchecked Sendable {
        let call: (Int, Int) throws -> Void
    }

    static func forEach(_ count: Int, workers: Int, _ body: (_ worker: Int, _ item: Int) throws -> Void) throws {
        guard count > 0 else { return }
        let state = State()
        try withoutActuallyEscaping(body) { body in
            // Items touch disjoint memory; the guarantee Sendable cannot express.
            let shared = Body(call: body)
            DispatchQueue.concurrentPerform(iterations: max(1, min(workers, count))) { worker in
                while true {
                    state.lock.lock()
                    let index = state.next
                    state.next += 1
                    let stop = state.failure != nil
                    state.lock.unlock()
                    if stop || index >= count { return }
                    do {
                        try shared.call(worker, index)
                    } catch {
                        state.lock.lock()
                        if state.failure == nil { state.failure = error }
                        state.lock.unlock()
                    }
                }
            }
            if let failure = state.failure { throw failure }
        }
    }
}
