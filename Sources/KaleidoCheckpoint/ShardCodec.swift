import CCheckpoint
import CZstd
import Foundation
import KaleidoTensor

/// The float stream of one shard: the rank's slices of every array, back to back.
@_spi(Bench) public struct ShardSegments {
    struct Segment {
        let name: String
        let base: UnsafeMutablePointer<Float>
        let count: Int
        let start: Int   // offset in the stream
    }
    private(set) var segments: [Segment] = []
    @_spi(Bench) public private(set) var total = 0

    @_spi(Bench) public init() {}

    @_spi(Bench) public mutating func append(_ name: String, _ base: UnsafeMutablePointer<Float>, count: Int) {
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

/// Compresses a shard's float stream in independent chunks of `chunkBytes` raw bytes,
/// byte-shuffled, each one or two zstd frames, on several threads, and back. Independent chunks
/// are what make both directions parallel; a chunk per 4 MiB costs nothing measurable in ratio.
@_spi(Bench) public struct ShardCodec {
    var level: Int
    var byteShuffle: Bool
    var chunkBytes: Int
    /// zstd's XXH64 of each coded frame's raw bytes, verified on decompression (stored frames
    /// have none: the shard's CRC-32C covers their bytes as they are).
    var frameChecksum = true
    var threads: Int
    /// Compress on threads of their own at idle priority (a background save yielding to
    /// training); false: GCD's pool at normal priority.
    var idlePriority = false
    /// Frames per chunk: 1, or 2 with byte shuffle from format version 2 on — the three
    /// mantissa planes, then the sign/exponent plane (see `FrameCoding`).
    var framesPerChunk: Int

    @_spi(Bench) public init(level: Int, byteShuffle: Bool, chunkBytes: Int, threads: Int, framesPerChunk: Int? = nil) {
        self.level = level
        self.byteShuffle = byteShuffle
        self.chunkBytes = chunkBytes
        self.threads = threads
        self.framesPerChunk = framesPerChunk ?? (byteShuffle ? 2 : 1)
        precondition(self.framesPerChunk == 1 || (self.framesPerChunk == 2 && byteShuffle),
                     "two frames per chunk split shuffled planes; got \(self.framesPerChunk) frames, shuffle \(byteShuffle)")
    }

    var chunkFloats: Int { chunkBytes / 4 }

    /// How a frame's bytes go through zstd. Every choice writes standard zstd frames: the
    /// decoder (and `zstd -d`) needs no parameter.
    enum FrameCoding: Equatable {
        /// The three low planes of shuffled fp32 (mantissa bytes) are noise: on ResNet-50's state
        /// after AdamW steps zstd stores them at ratio 1.000 even at its fastest setting, whose
        /// match finder still read every byte (3.4 GB/s). They are copied into a frame of raw
        /// blocks instead, a block whose bytes are all equal as one RLE byte
        /// (`kaleido_zstd_stored_frame`); no frame checksum, since the shard's CRC-32C covers
        /// the stored bytes as they are.
        case stored
        /// The sign/exponent plane's gain is the skew of its byte histogram, not repeats: on the
        /// same state, Huffman-coded literals with the match finder at its fastest gave ratio 3.06
        /// at 790 MB/s, level 1 with a 2^8-entry hash table 3.03 at 440 MB/s, and level 1 as
        /// shipped 2.82 at 230 MB/s. This is level 1's coding of that plane.
        case entropyOnly
        /// zstd's own level (`checkpoint.zstd_level` above 1, or an unshuffled chunk).
        case level(Int32)
    }

    /// The codings of a chunk's frames, in order (see `frameParts`).
    var frameCodings: [FrameCoding] {
        let main: FrameCoding = byteShuffle && level == 1 ? .entropyOnly : .level(Int32(level))
        return framesPerChunk == 2 ? [.stored, main] : [main]
    }

    /// A compression context for one kind of frame (nil for `.stored`, which zstd does not
    /// write). The literal-coding parameter is zstd's experimental one; a libzstd that refused it
    /// would get plain level 1: slower, same format.
    func compressionContext(_ coding: FrameCoding) -> OpaquePointer? {
        let level: Int32
        switch coding {
        case .stored: return nil
        case .entropyOnly: level = ZSTD_minCLevel()
        case .level(let chosen): level = chosen
        }
        let context = ZSTD_createCCtx()!
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, frameChecksum ? 1 : 0)
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        // ZSTD_c_literalCompressionMode, ZSTD_ps_enable = 1 (zstd.h's static-linking section,
        // which the system-library module does not define)
        if coding == .entropyOnly && ZSTD_isError(ZSTD_CCtx_setParameter(context, ZSTD_c_experimentalParam5, 1)) != 0 {
            ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, 1)
        }
        return context
    }

    /// Bytes a frame of `coding` may take for `count` raw bytes.
    static func frameBound(_ coding: FrameCoding, count: Int) -> Int {
        coding == .stored ? kaleido_zstd_stored_frame_bound(count) : ZSTD_compressBound(count)
    }

    /// Writes `count` bytes of `source` as one frame at `output` (room for `capacity`); returns
    /// its size. `what` names the shard in errors.
    static func writeFrame(_ coding: FrameCoding, context: OpaquePointer?, source: UnsafeRawPointer, count: Int,
                           output: UnsafeMutableRawPointer, capacity: Int, what: String) throws -> Int {
        guard let context else {
            let size = kaleido_zstd_stored_frame(source.assumingMemoryBound(to: UInt8.self), count,
                                                 output.assumingMemoryBound(to: UInt8.self), capacity)
            guard size > 0 else {
                throw CheckpointError.io(path: what, operation: "store frame", message: "\(capacity) bytes of room for \(count)")
            }
            return size
        }
        let size = ZSTD_compress2(context, output, capacity, source, count)
        if ZSTD_isError(size) != 0 {
            throw CheckpointError.io(path: what, operation: "zstd compress", message: String(cString: ZSTD_getErrorName(size)))
        }
        return size
    }

    /// Byte ranges of the frames of a chunk of `n` floats, in its (shuffled) raw bytes.
    func frameParts(floats n: Int) -> [Range<Int>] {
        framesPerChunk == 2 ? [0..<(3 * n), (3 * n)..<(4 * n)] : [0..<(4 * n)]
    }

    /// The most bytes the frames of a chunk of `n` floats take.
    func chunkBound(floats n: Int) -> Int {
        zip(frameCodings, frameParts(floats: n)).reduce(0) { $0 + Self.frameBound($1.0, count: $1.1.count) }
    }

    /// The most bytes `encode` writes for a stream of `total` floats.
    func encodedBound(floats total: Int) -> Int {
        chunkRanges(total: total).reduce(0) { $0 + chunkBound(floats: $1.count) }
    }

    func chunkRanges(total: Int) -> [Range<Int>] {
        stride(from: 0, to: total, by: chunkFloats).map { $0..<min(total, $0 + chunkFloats) }
    }

    /// One compressed shard: its size and the CRC-32C of its bytes, and its frames in order
    /// when they were kept in memory (no sink).
    @_spi(Bench) public final class Encoded: @unchecked Sendable {
        @_spi(Bench) public fileprivate(set) var frames: [UnsafeMutableRawBufferPointer] = []
        @_spi(Bench) public fileprivate(set) var crc: UInt32 = 0
        @_spi(Bench) public fileprivate(set) var bytes = 0
        var pieces: [UnsafeRawBufferPointer] { frames.map { UnsafeRawBufferPointer($0) } }
        deinit { for frame in frames where frame.baseAddress != nil { frame.deallocate() } }
    }

    /// Frames finished out of order wait here until every frame before them is done, then go to
    /// the sink from whichever worker completed the run. With a sink, a written frame's buffer
    /// goes back to a pool: fresh multi-megabyte allocations are fresh pages, and faulting them
    /// in cost more than the CRC did.
    private final class FrameQueue: @unchecked Sendable {
        let lock = NSLock()
        var ready: [UnsafeMutableRawBufferPointer?]
        var next = 0
        var writing = false
        var failed = false
        var pool: [UnsafeMutableRawPointer] = []
        let capacity: Int
        let keep: Bool

        init(count: Int, capacity: Int, keep: Bool) {
            ready = Array(repeating: nil, count: count)
            self.capacity = capacity
            self.keep = keep
        }

        func buffer() -> UnsafeMutableRawPointer {
            lock.lock()
            defer { lock.unlock() }
            return pool.popLast() ?? UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }

        /// Frame `index` is done; hands every frame now in order to `sink` unless another worker
        /// is already doing so (it will pick this one up).
        func finished(_ index: Int, _ frame: UnsafeMutableRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
            lock.lock()
            ready[index] = frame
            guard !writing && !failed else { lock.unlock(); return }
            writing = true
            defer { writing = false; lock.unlock() }
            while next < ready.count, let frame = ready[next] {
                lock.unlock()
                do {
                    try sink(UnsafeRawBufferPointer(frame))
                } catch {
                    lock.lock()
                    failed = true
                    throw error
                }
                lock.lock()
                if !keep {
                    pool.append(frame.baseAddress!)
                    ready[next] = nil
                }
                next += 1
            }
        }

        deinit {
            for buffer in pool { buffer.deallocate() }
            for case let frame? in ready { frame.deallocate() }
        }
    }

    /// Compresses `stream` into independent frames on `threads` threads. With `sink`, each frame
    /// is handed over in stream order as soon as it and all before it are done — the caller
    /// writes the file while later chunks are still being compressed, and only a few frames are
    /// in memory at once; without, the frames are kept in the result. `what` names the shard in
    /// errors.
    @_spi(Bench) public func encode(_ stream: ShardSegments, what: String, sink: ((UnsafeRawBufferPointer) throws -> Void)? = nil) throws -> Encoded {
        let chunks = chunkRanges(total: stream.total)
        let encoded = Encoded()
        let workers = max(1, min(threads, chunks.count))
        // Per worker: a context per frame of a chunk.
        let codings = frameCodings
        let contexts = (0..<workers).map { _ in codings.map(compressionContext) }
        let capacity = chunkBound(floats: chunkFloats)
        let scratch = (0..<workers).map { _ in UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64) }
        let crcs = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: max(1, chunks.count))
        let sizes = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(1, chunks.count))
        let queue = FrameQueue(count: chunks.count, capacity: capacity, keep: sink == nil)
        defer {
            for case let context? in contexts.joined() { ZSTD_freeCCtx(context) }
            for buffer in scratch { buffer.deallocate() }
            crcs.deallocate()
            sizes.deallocate()
        }
        try Parallel.forEach(chunks.count, workers: workers, idlePriority: idlePriority) { worker, index in
            let range = chunks[index], buffer = scratch[worker]
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
            let output = queue.buffer()
            // The chunk's frames back to back in one buffer: to the file they are one piece.
            var written = 0
            for (number, part) in frameParts(floats: range.count).enumerated() {
                do {
                    written += try Self.writeFrame(codings[number], context: contexts[worker][number], source: buffer + part.lowerBound,
                                                   count: part.count, output: output + written, capacity: queue.capacity - written, what: what)
                } catch {
                    output.deallocate()
                    throw error
                }
            }
            // The frames stay in their (larger) allocation; deallocating the rebased buffer frees it.
            let frame = UnsafeMutableRawBufferPointer(start: output, count: written)
            crcs[index] = CRC32C.checksum(UnsafeRawBufferPointer(frame))
            sizes[index] = written
            try queue.finished(index, frame, sink: sink ?? { _ in })
        }
        if sink == nil {
            encoded.frames = queue.ready.map { $0! }
            queue.ready = []
        }
        var crc: UInt32 = 0
        for index in 0..<chunks.count {
            crc = CRC32C.combine(crc, crcs[index], lengthB: sizes[index])
            encoded.bytes += sizes[index]
        }
        encoded.crc = crc
        return encoded
    }

    /// Decodes the shard file `bytes` into the segments of `stream`; `path` names it in errors.
    @_spi(Bench) public func decode(_ bytes: UnsafeRawBufferPointer, into stream: ShardSegments, path: String) throws {
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
        guard frames.count == chunks.count * framesPerChunk else {
            throw CheckpointError.corruptShard(path: path, chunk: min(frames.count / framesPerChunk, chunks.count), arrays: [],
                                               message: "\(frames.count) zstd frames, expected \(chunks.count * framesPerChunk)")
        }
        let workers = max(1, min(threads, chunks.count))
        let contexts = (0..<workers).map { _ in ZSTD_createDCtx()! }
        let scratch = (0..<workers).map { _ in UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64) }
        defer {
            for context in contexts { ZSTD_freeDCtx(context) }
            for buffer in scratch { buffer.deallocate() }
        }
        try Parallel.forEach(chunks.count, workers: workers) { worker, index in
            let range = chunks[index], buffer = scratch[worker]
            func fail(_ message: String) -> CheckpointError {
                .corruptShard(path: path, chunk: index, arrays: stream.names(in: range), message: message)
            }
            for (number, part) in frameParts(floats: range.count).enumerated() {
                let frame = frames[index * framesPerChunk + number], source = bytes.baseAddress! + frame.lowerBound
                let declared = ZSTD_getFrameContentSize(source, frame.count)
                guard declared == UInt64(part.count) else {
                    throw fail("frame declares \(declared == ZSTD_CONTENTSIZE_ERROR ? "no valid" : String(declared)) bytes, expected \(part.count)")
                }
                let produced = ZSTD_decompressDCtx(contexts[worker], buffer + part.lowerBound, part.count, source, frame.count)
                if ZSTD_isError(produced) != 0 { throw fail(String(cString: ZSTD_getErrorName(produced))) }
                guard produced == part.count else { throw fail("decoded \(produced) bytes, expected \(part.count)") }
            }
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
    @_spi(Bench) public static func checksum(_ bytes: UnsafeRawBufferPointer, threads: Int) -> UInt32 {
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

    // Plane b holds byte b of every float: the sign/exponent bytes (plane 3) repeat and
    // compress, the mantissa bytes are noise and are stored nearly as they are.
    // Same transform as `ByteShuffle`, in C (AVX2 where the CPU has it) into caller-owned memory.

    @inline(__always)
    static func shuffle(_ source: UnsafePointer<Float>, count: Int, into planes: UnsafeMutablePointer<UInt8>, planeStride: Int) {
        kaleido_shuffle_planes4(UnsafeRawPointer(source).assumingMemoryBound(to: UInt32.self), count, planes, planeStride)
    }

    @inline(__always)
    static func unshuffle(_ planes: UnsafePointer<UInt8>, planeStride: Int, count: Int, into target: UnsafeMutablePointer<Float>) {
        kaleido_unshuffle_planes4(planes, planeStride, count, UnsafeMutableRawPointer(target).assumingMemoryBound(to: UInt32.self))
    }
}

/// A save's own threads: named, at idle scheduling priority when they yield to training
/// (SCHED_IDLE: they run only on a core no training thread wants), and kept to `cores` when
/// given (threads they start inherit it).
enum SaveThread {
    static func start(_ name: String, idlePriority: Bool, cores: [Int]? = nil, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread {
            if idlePriority { _ = kaleido_make_thread_idle_priority() }
            if let cores { ThreadAffinity.restrictCurrentThread(to: cores) }
            body()
        }
        thread.name = name
        thread.start()
    }
}

/// Items `0..<count` split over `workers` threads that pull indices from a shared counter, so
/// uneven items (a last short chunk) balance. `body(worker, item)`: `worker < workers` indexes
/// per-thread state (a zstd context, a scratch buffer). The first error stops the remaining
/// items and is rethrown.
///
/// With `idlePriority`, the workers are threads of their own at idle scheduling priority (a
/// background save yielding to training; the caller must be at idle priority already);
/// otherwise GCD's shared pool, whose threads must keep their normal priority.
enum Parallel {
    private final class State: @unchecked Sendable {
        let lock = NSLock()
        let count: Int
        var next = 0
        var failure: Error?
        /// The caller's body, cleared before `forEach` returns so no thread outlives it holding it.
        var body: ((Int, Int) throws -> Void)?
        let done = DispatchGroup()

        init(count: Int) { self.count = count }

        func work(_ worker: Int) {
            while true {
                lock.lock()
                let index = next
                next += 1
                let call = failure == nil && index < count ? body : nil
                lock.unlock()
                guard let call else { return }
                do {
                    try call(worker, index)
                } catch {
                    lock.withLock { if failure == nil { failure = error } }
                }
            }
        }
    }

    static func forEach(_ count: Int, workers: Int, idlePriority: Bool = false,
                        _ body: (_ worker: Int, _ item: Int) throws -> Void) throws {
        guard count > 0 else { return }
        let state = State(count: count)
        let threads = max(1, min(workers, count))
        try withoutActuallyEscaping(body) { body in
            // Items touch disjoint memory; the guarantee Sendable cannot express.
            state.body = body
            defer { state.lock.withLock { state.body = nil } }
            if idlePriority {
                for worker in 1..<max(1, threads) {
                    state.done.enter()
                    SaveThread.start("kaleido-checkpoint-codec", idlePriority: true) {
                        state.work(worker)
                        state.done.leave()
                    }
                }
                state.work(0)   // the calling thread (already at the background priority) takes part
                state.done.wait()
            } else {
                DispatchQueue.concurrentPerform(iterations: threads) { state.work($0) }
            }
            if let failure = state.failure { throw failure }
        }
    }
}
