import Foundation
import KaleidoDist
import KaleidoNN
import KaleidoTensor
import Testing
import CCheckpoint
import CZstd
@_spi(Bench) @testable import KaleidoCheckpoint
import KaleidoSafeTensors
#if canImport(Glibc)
import Glibc
#endif

// MARK: - A world of threads

/// W ranks as threads of this process, with real collectives over shared memory, so the
/// collective save path (gathering shard records, agreeing on failures) runs as under MPI.
final class ThreadWorld: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var arrived = 0, leaving = 0, generation = 0
    private var sum: [UInt64] = [], floats: [Float] = [], bytes: [UInt8] = []

    init(size: Int) { self.size = size }

    /// Every rank contributes, waits for the others, then reads the combined result.
    private func collective(_ contribute: () -> Void, _ read: () -> Void) {
        condition.lock()
        while leaving > 0 { condition.wait() }
        contribute()
        arrived += 1
        let mine = generation
        if arrived == size {
            generation += 1
            leaving = size
            condition.broadcast()
        } else {
            while generation == mine { condition.wait() }
        }
        read()
        leaving -= 1
        if leaving == 0 {
            arrived = 0
            condition.broadcast()
        }
        condition.unlock()
    }

    func allReduce(_ buffer: UnsafeMutableBufferPointer<UInt64>) {
        collective({
            if arrived == 0 { sum = Array(repeating: 0, count: buffer.count) }
            for i in buffer.indices { sum[i] &+= buffer[i] }
        }, { for i in buffer.indices { buffer[i] = sum[i] } })
    }

    func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>) {
        collective({
            if arrived == 0 { floats = Array(repeating: 0, count: buffer.count) }
            for i in buffer.indices { floats[i] += buffer[i] }
        }, { for i in buffer.indices { buffer[i] = floats[i] } })
    }

    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, isRoot: Bool) {
        collective({ if isRoot { bytes = Array(buffer) } }, { buffer.copyBytes(from: bytes) })
    }

    /// Runs `body` on every rank, each on its own thread, and returns their results by rank.
    func run<R>(_ body: @escaping @Sendable (ThreadCommunicator) throws -> R) -> [Result<R, Error>] {
        let results = ResultBox<R>(count: size)
        let group = DispatchGroup()
        for rank in 0..<size {
            group.enter()
            let thread = Thread {
                results.set(rank, Result { try body(ThreadCommunicator(world: self, rank: rank)) })
                group.leave()
            }
            thread.start()
        }
        group.wait()
        return results.values.map { $0! }
    }
}

final class ResultBox<R>: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [Result<R, Error>?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: Result<R, Error>) {
        lock.lock()
        values[index] = value
        lock.unlock()
    }
}

final class ThreadCommunicator: Communicator {
    let world: ThreadWorld
    let rank: Int
    var worldSize: Int { world.size }
    init(world: ThreadWorld, rank: Int) { self.world = world; self.rank = rank }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { world.allReduce(buffer) }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<UInt64>) throws { world.allReduce(buffer) }
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws { world.broadcast(buffer, isRoot: rank == root) }
    func barrier() throws {
        var nothing: [UInt64] = []
        nothing.withUnsafeMutableBufferPointer { world.allReduce($0) }
    }
    func startDeterministicSum(_ buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
                               stream: ReductionStream) throws -> PendingReduction { fatalError("not used by checkpoints") }
    func finalize() {}
}

// MARK: - Fixtures

/// A small model-shaped arena: convolutions, norms, a depthwise kernel, SSL heads.
func makeArena(seed: UInt64 = 7, wide: Bool = false) -> ParameterArena {
    let builder = ParameterBuilder()
    let channels = wide ? 24 : 16
    _ = builder.child("conv1").parameter("weight", shape: [channels, 3, 3, 3], layout: .convolution, role: .weight,
                                         initializer: .normal(std: 0.1))
    let bn = builder.child("bn1")
    _ = bn.parameter("weight", shape: [channels], role: .noDecay, initializer: .ones)
    _ = bn.parameter("bias", shape: [channels], role: .noDecay, initializer: .zeros)
    _ = bn.parameter("running_mean", shape: [channels], role: .buffer, initializer: .normal(std: 0.01))
    _ = bn.parameter("num_batches_tracked", shape: [], role: .integerBuffer, initializer: .constant(12))
    _ = builder.child("dw").parameter("weight", shape: [7, 7, channels], layout: .depthwise, role: .weight,
                                      initializer: .normal(std: 0.05))
    _ = builder.child("projector").child("0").parameter("weight", shape: [32, channels], role: .weight, initializer: .normal(std: 0.1))
    _ = builder.child("predictor").child("0").parameter("weight", shape: [32, 32], role: .weight, initializer: .normal(std: 0.1))
    return builder.makeArena(seed: seed)
}

func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(bitPattern: UInt32(truncatingIfNeeded: state >> 32))   // every bit pattern, NaNs included
    }
}

struct Fixture {
    let online = makeArena(seed: 1)
    let target = makeArena(seed: 2)
    let expAvg: [Float]
    let expAvgSq: [Float]
    let queue: [Float]

    init() {
        expAvg = randomFloats(online.count, seed: 3)
        expAvgSq = randomFloats(online.count, seed: 4)
        queue = randomFloats(1001, seed: 5)
    }

    func content(step: Int) -> CheckpointContent {
        CheckpointContent(
            step: step, epoch: step / 10, config: "model:\n  arch: resnet18\nrun:\n  seed: 3\n",
            arrays: [SavedArray(name: "online", arena: online), SavedArray(name: "target", arena: target),
                     SavedArray(name: "optimizer.exp_avg", values: expAvg, layout: LayoutEntry.of(online)),
                     SavedArray(name: "optimizer.exp_avg_sq", values: expAvgSq, layout: LayoutEntry.of(online)),
                     SavedArray(name: "queue", values: queue)],
            optimizer: OptimizerRecord(kind: "adamw", stepCount: step), schedulerStep: step, queueSize: 1001,
            blobs: ["rng": Data(#"{"seed":18446744073709551615,"counter":[1,2]}"#.utf8), "loader": Data(#"{"position":42}"#.utf8)])
    }

    func expectMatches(_ loaded: LoadedCheckpoint, step: Int) throws {
        func bits(_ values: UnsafeBufferPointer<Float>) -> [UInt32] { values.map(\.bitPattern) }
        #expect(bits(try loaded.values("online")) == bits(UnsafeBufferPointer(start: online.values.pointer, count: online.count)))
        #expect(bits(try loaded.values("target")) == bits(UnsafeBufferPointer(start: target.values.pointer, count: target.count)))
        #expect(try loaded.array("optimizer.exp_avg").map(\.bitPattern) == expAvg.map(\.bitPattern))
        #expect(try loaded.array("optimizer.exp_avg_sq").map(\.bitPattern) == expAvgSq.map(\.bitPattern))
        #expect(try loaded.array("queue").map(\.bitPattern) == queue.map(\.bitPattern))
        #expect(loaded.step == step && loaded.epoch == step / 10)
        #expect(loaded.optimizer == OptimizerRecord(kind: "adamw", stepCount: step))
        #expect(loaded.schedulerStep == step && loaded.queueSize == 1001)
        #expect(loaded.blobs["rng"] == Data(#"{"seed":18446744073709551615,"counter":[1,2]}"#.utf8))
        #expect(loaded.config.contains("arch: resnet18"))
    }
}

func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-ckpt-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Small chunks so arrays straddle zstd frames and every shard has several.
func makeStore(_ directory: URL, keep: Int = 3) -> CheckpointStore {
    CheckpointStore(directory: directory, keep: keep, threads: 2, chunkBytes: 4096)
}

func fileBytes(_ url: URL) -> [String: Data] {
    var out: [String: Data] = [:]
    for name in (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? [] {
        out[name] = try? Data(contentsOf: url.appendingPathComponent(name))
    }
    return out
}

/// Number of zstd frames in a file, walked from the frame headers.
func zstdFrames(_ url: URL) throws -> Int {
    let data = try Data(contentsOf: url)
    return data.withUnsafeBytes { bytes in
        var offset = 0, count = 0
        while offset < bytes.count {
            let size = ZSTD_findFrameCompressedSize(bytes.baseAddress! + offset, bytes.count - offset)
            if ZSTD_isError(size) != 0 { return -1 }
            offset += size
            count += 1
        }
        return count
    }
}

// MARK: - Tests

@Suite struct CRC32CTests {
    @Test func matchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func slicingAndCombiningAgreeWithByteAtATime() {
        let bytes = randomFloats(777, seed: 9).withUnsafeBytes { Array($0) } + [1, 2, 3]
        var reference: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            reference ^= UInt32(byte)
            for _ in 0..<8 { reference = reference & 1 != 0 ? (reference >> 1) ^ 0x82F6_3B78 : reference >> 1 }
        }
        reference = ~reference
        #expect(CRC32C.checksum(bytes) == reference)
        for split in [0, 1, 7, 8, 1000, bytes.count] {
            let a = CRC32C.checksum(Array(bytes[..<split])), b = CRC32C.checksum(Array(bytes[split...]))
            #expect(CRC32C.combine(a, b, lengthB: bytes.count - split) == reference)
        }
        let parallel = bytes.withUnsafeBytes { ShardCodec.checksum($0, threads: 3) }
        #expect(parallel == reference)
    }

    /// The CPU instruction and the portable tables give the same CRC for every length and
    /// alignment (the instruction path handles 8-byte words and a byte tail).
    @Test func hardwareInstructionAgreesWithTheTables() {
        let bytes = randomFloats(300, seed: 4).withUnsafeBytes { Array($0) }
        bytes.withUnsafeBytes { all in
            for start in 0..<9 {
                for count in [0, 1, 7, 8, 9, 63, 1000] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + count)])
                    #expect(CRC32C.checksum(slice, continuing: 0x1234_5678) == CRC32C.tableChecksum(slice, continuing: 0x1234_5678),
                            "start \(start), count \(count)")
                }
            }
        }
        #if arch(x86_64)
        #expect(CRC32C.hardware, "every x86-64-v2 CPU has SSE 4.2")
        #endif
    }

    /// Long inputs go through three lanes of 8 KiB joined by the lane-shift table: one, two and
    /// three rounds of them, each with a tail, at an odd start, against the tables.
    @Test(arguments: [3 * 8192 - 1, 3 * 8192, 3 * 8192 + 5, 6 * 8192 + 8, 9 * 8192 + 4097])
    func threeLanesAgreeWithTheTables(count: Int) {
        let bytes = randomFloats(count / 4 + 2, seed: 11).withUnsafeBytes { Array($0) }
        bytes.withUnsafeBytes { all in
            let slice = UnsafeRawBufferPointer(rebasing: all[3..<(3 + count)])
            #expect(CRC32C.checksum(slice, continuing: 0x89AB_CDEF) == CRC32C.tableChecksum(slice, continuing: 0x89AB_CDEF))
        }
    }
}

@Suite struct CheckpointTests {
    @Test func roundTripIsBitExactInOneProcess() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let url = try store.save(fixture.content(step: 100), communicator: LocalCommunicator())
        #expect(url.lastPathComponent == "step-00000100")
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: url.path)) == ["manifest.json", "shard-00000-of-00001.zst"])
        #expect(store.newestValid() == url)
        try fixture.expectMatches(try store.load(url), step: 100)

        let manifest = try CheckpointManifest.read(from: url)
        #expect(manifest.worldSize == 1 && manifest.compression.level == CheckpointStore.defaultZstdLevel)
        #expect(manifest.compression.byteShuffle)
        // online, target and the optimiser moments share one recorded layout.
        #expect(manifest.layouts.count == 1 && manifest.arrays.compactMap(\.layout) == ["online", "online", "online", "online"])
        #expect(manifest.shards[0].uncompressedBytes == (4 * fixture.online.count + 1001) * 4)
        let text = try String(contentsOf: url.appendingPathComponent("manifest.json"), encoding: .utf8)
        #expect(text.contains("\"format_version\" : 2") && !text.contains(directory.path))
        #expect(CheckpointStore.verify(url).isEmpty)
        // Byte shuffle: a mantissa frame and an exponent frame per chunk.
        #expect(manifest.compression.framesPerChunk == 2)
        let chunks = (manifest.shards[0].uncompressedBytes + manifest.compression.chunkBytes - 1) / manifest.compression.chunkBytes
        #expect(try zstdFrames(url.appendingPathComponent(manifest.shards[0].file)) == 2 * chunks)
    }

    /// A format-version-1 checkpoint (one zstd frame per chunk, no `frames_per_chunk`) still
    /// loads and verifies.
    @Test func aVersion1CheckpointStillLoads() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let url = try store.save(fixture.content(step: 5), communicator: LocalCommunicator())
        var manifest = try CheckpointManifest.read(from: url)
        let codec = ShardCodec(level: 1, byteShuffle: true, chunkBytes: manifest.compression.chunkBytes, threads: 2, framesPerChunk: 1)
        let encoded = try fixture.content(step: 5).withShardSegments(rank: 0, worldSize: 1) { try codec.encode($0, what: "v1") }
        let shard = url.appendingPathComponent(manifest.shards[0].file)
        try DurableFile.writeFile(shard.path, pieces: encoded.pieces)
        manifest.formatVersion = 1
        manifest.compression.framesPerChunk = nil
        manifest.shards[0].bytes = encoded.bytes
        manifest.shards[0].crc32c = CRC32C.hex(encoded.crc)
        try DurableFile.writeFile(url.appendingPathComponent("manifest.json").path, data: try manifest.encoded())
        let text = try String(contentsOf: url.appendingPathComponent("manifest.json"), encoding: .utf8)
        #expect(text.contains("\"format_version\" : 1") && !text.contains("frames_per_chunk"))
        let chunks = (manifest.shards[0].uncompressedBytes + manifest.compression.chunkBytes - 1) / manifest.compression.chunkBytes
        #expect(try zstdFrames(shard) == chunks)
        #expect(CheckpointStore.verify(url).isEmpty)
        try fixture.expectMatches(try store.load(url), step: 5)
    }

    @Test func threeRanksSaveCollectivelyAndAnyWorldSizeLoads() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let world = ThreadWorld(size: 3)
        let urls = world.run { communicator in try store.save(fixture.content(step: 30), communicator: communicator) }
        let url = try urls[0].get()
        #expect(try urls.map { try $0.get() } == [url, url, url])
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: url.path))
        #expect(files == ["manifest.json", "shard-00000-of-00003.zst", "shard-00001-of-00003.zst", "shard-00002-of-00003.zst"])
        // Loading reassembles full arrays from all shards, whatever world size the reader has.
        try fixture.expectMatches(try store.load(url), step: 30)

        // Reshard to 2 ranks elsewhere, and to 1 in place.
        let other = directory.appendingPathComponent("resharded")
        let two = try CheckpointStore.reshard(url, worldSize: 2, into: other, threads: 2)
        #expect(try CheckpointManifest.read(from: two).worldSize == 2)
        try fixture.expectMatches(try LoadedCheckpoint(contentsOf: two), step: 30)
        let one = try CheckpointStore.reshard(url, worldSize: 1, into: directory, threads: 2)
        #expect(try one == url && CheckpointManifest.read(from: url).worldSize == 1)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: url.path)) == ["manifest.json", "shard-00000-of-00001.zst"])
        try fixture.expectMatches(try store.load(url), step: 30)
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent(".old-step-00000030").path))
    }

    @Test func savesMoreRanksThanSomeArraysHaveFloats() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = makeStore(directory)
        let content = CheckpointContent(step: 1, config: "", arrays: [SavedArray(name: "tiny", values: [1, 2]),
                                                                      SavedArray(name: "empty", values: [])])
        let results = ThreadWorld(size: 4).run { try store.save(content, communicator: $0) }
        let loaded = try store.load(try results[0].get())
        #expect(try loaded.array("tiny") == [1, 2] && (try loaded.array("empty")).isEmpty)
    }

    @Test func keepsTheNewestNAndLeftoversOfEarlierSteps() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory, keep: 2)
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".tmp-step-00000002"), withIntermediateDirectories: true)
        for step in [1, 3, 5, 7] { try store.save(fixture.content(step: step), communicator: LocalCommunicator()) }
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: directory.path))
        #expect(names == ["step-00000005", "step-00000007"])
        #expect(store.newestValid()?.lastPathComponent == "step-00000007")
        // Background saves prune after their commit on a thread of their own; listing waits for it.
        for step in [9, 11] {
            try store.beginSave(fixture.content(step: step), communicator: LocalCommunicator(), yieldingToTraining: true)
                .finish(communicator: LocalCommunicator())
        }
        #expect(store.checkpoints().map(\.step) == [9, 11])
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: directory.path)) == ["step-00000009", "step-00000011"])
    }

    @Test func crashLeftoversAndBrokenDirectoriesAreIgnored() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let good = try store.save(fixture.content(step: 10), communicator: LocalCommunicator())
        let before = fileBytes(good)

        // Crash after the shards were written, and after the manifest was written but before the rename.
        store.crash = .afterShards
        #expect(throws: SimulatedCrash.self) { try store.save(fixture.content(step: 20), communicator: LocalCommunicator()) }
        store.crash = .afterManifest
        #expect(throws: SimulatedCrash.self) { try store.save(fixture.content(step: 30), communicator: LocalCommunicator()) }
        store.crash = nil
        #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent(".tmp-step-00000030/manifest.json").path))

        // Committed names without a manifest, with a corrupt one, with a missing or short shard.
        let noManifest = directory.appendingPathComponent("step-00000040")
        try FileManager.default.copyItem(at: good, to: noManifest)
        try FileManager.default.removeItem(at: noManifest.appendingPathComponent("manifest.json"))
        let corrupt = directory.appendingPathComponent("step-00000050")
        try FileManager.default.copyItem(at: good, to: corrupt)
        try Data("{\"format\": \"kaleido-checkpoint\", \"format_ver".utf8).write(to: corrupt.appendingPathComponent("manifest.json"))
        let missing = directory.appendingPathComponent("step-00000060")
        try FileManager.default.copyItem(at: good, to: missing)
        try FileManager.default.removeItem(at: missing.appendingPathComponent("shard-00000-of-00001.zst"))
        let short = directory.appendingPathComponent("step-00000070")
        try FileManager.default.copyItem(at: good, to: short)
        let shard = short.appendingPathComponent("shard-00000-of-00001.zst")
        try Data(try Data(contentsOf: shard).dropLast(10)).write(to: shard)

        #expect(store.newestValid() == good)
        #expect(fileBytes(good) == before)
        try fixture.expectMatches(try store.load(good), step: 10)
        // A later save of a crashed step reuses its leftover directory.
        let resaved = try store.save(fixture.content(step: 30), communicator: LocalCommunicator())
        #expect(store.newestValid() == resaved)
        // Pruning counts complete checkpoints only: broken ones never push a good one out.
        #expect(FileManager.default.fileExists(atPath: good.path))
        try fixture.expectMatches(try store.load(resaved), step: 30)
    }

    @Test func truncatedAndFlippedShardsAreNamedInErrors() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let results = ThreadWorld(size: 2).run { try store.save(fixture.content(step: 5), communicator: $0) }
        let url = try results[0].get()
        let shard = url.appendingPathComponent("shard-00001-of-00002.zst")
        let original = try Data(contentsOf: shard)

        try Data(original.dropLast(3)).write(to: shard)
        #expect(throws: CheckpointError.truncatedShard(path: shard.path, expected: original.count, actual: original.count - 3)) {
            try store.load(url)
        }
        #expect(CheckpointStore.verify(url).map(\.description).contains { $0.contains("shard-00001-of-00002.zst") && $0.contains("truncated") })

        // A byte in the middle of the first chunk's sign/exponent frame: the frame after its
        // stored mantissa frame, and the one with a content checksum of its own.
        let codedFrame = original.withUnsafeBytes { bytes -> Range<Int> in
            let first = ZSTD_findFrameCompressedSize(bytes.baseAddress!, bytes.count)
            return first..<(first + ZSTD_findFrameCompressedSize(bytes.baseAddress! + first, bytes.count - first))
        }
        var flipped = original
        flipped[codedFrame.lowerBound + codedFrame.count / 2] ^= 0x10
        try flipped.write(to: shard)
        do {
            _ = try store.load(url)
            Issue.record("a flipped byte loaded")
        } catch let error as CheckpointError {
            guard case .checksumMismatch(let path, _, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(path == shard.path && error.description.contains("shard-00001-of-00002.zst"))
        }

        // Even with the manifest's CRC forged to match, zstd's frame checksum (or its Huffman
        // decoding) catches it and the error names the chunk's arrays. Stored mantissa frames
        // have no checksum of their own: their bytes are the CRC's.
        var manifest = try CheckpointManifest.read(from: url)
        manifest.shards[1].crc32c = CRC32C.hex(flipped.withUnsafeBytes { CRC32C.checksum($0) })
        try manifest.encoded().write(to: url.appendingPathComponent("manifest.json"))
        do {
            _ = try store.load(url)
            Issue.record("a forged checksum loaded")
        } catch let error as CheckpointError {
            guard case .corruptShard(let path, _, let arrays, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(path == shard.path && !arrays.isEmpty)
        }
        #expect(!CheckpointStore.verify(url).isEmpty)
        #expect(CheckpointStore.verify(url, decode: false).isEmpty)   // the CRC alone is satisfied now
    }

    @Test func manifestProblemsNameTheKeyOrVersion() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = try makeStore(directory).save(Fixture().content(step: 1), communicator: LocalCommunicator())
        let path = url.appendingPathComponent("manifest.json")
        let text = try String(contentsOf: path, encoding: .utf8)

        try text.replacingOccurrences(of: "\"format_version\" : 2", with: "\"format_version\" : 7").write(to: path, atomically: true, encoding: .utf8)
        #expect(throws: CheckpointError.futureFormat(path: path.path, version: 7, supported: CheckpointManifest.currentFormatVersion)) { try CheckpointManifest.read(from: url) }

        try text.replacingOccurrences(of: "\"step\" : 1,", with: "").write(to: path, atomically: true, encoding: .utf8)
        do {
            _ = try CheckpointManifest.read(from: url)
            Issue.record("a manifest without step parsed")
        } catch {
            #expect("\(error)".contains("lacks key 'step'") && "\(error)".contains(path.path), "\(error)")
        }
        try FileManager.default.removeItem(at: path)
        #expect(throws: CheckpointError.manifest(path: path.path, message: "manifest missing")) { try CheckpointManifest.read(from: url) }
    }

    /// Saves step 1, then step 2 with rank 1's shard write failing, on `ranks` ranks: every rank
    /// must get `saveFailed(2, [1])`, step 1 stays the newest and the temporary directory goes.
    func expectAShardFailureFailsEveryRank(ranks: Int, save: @escaping @Sendable (CheckpointStore, CheckpointContent, Communicator) throws -> URL) throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let world = ThreadWorld(size: ranks)
        let previous = try world.run { try store.save(fixture.content(step: 1), communicator: $0) }[0].get()

        store.shardWriteFault = { rank in rank == 1 ? CheckpointError.io(path: "shard 1", operation: "write", message: "injected") : nil }
        let results = world.run { try save(store, fixture.content(step: 2), $0) }
        store.shardWriteFault = nil
        for result in results {
            guard case .failure(let error) = result, case CheckpointError.saveFailed(2, [1], _) = error else {
                Issue.record("expected saveFailed(2, [1]) on every rank, got \(result)")
                continue
            }
        }
        #expect(store.newestValid() == previous)
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent(".tmp-step-00000002").path))
    }

    @Test func aWriteErrorOnOneRankFailsTheSaveOnEveryRank() throws {
        try expectAShardFailureFailsEveryRank(ranks: 3) { store, content, communicator in
            try store.save(content, communicator: communicator)
        }
    }

    /// The same in a background save (idle-priority writer threads, as the trainer's
    /// `checkpoint.async` runs it): the failure surfaces at the commit, on every rank.
    @Test func aFailedBackgroundSaveFailsOnEveryRankAndKeepsThePrevious() throws {
        try expectAShardFailureFailsEveryRank(ranks: 2) { store, content, communicator in
            try store.beginSave(content, communicator: communicator, yieldingToTraining: true).finish(communicator: communicator)
        }
    }

    /// The shard writer stages pieces for direct I/O in 4 MiB blocks and pads the last one; the
    /// file must hold exactly the pieces, whatever their sizes, and the same through the page
    /// cache. /dev/shm (tmpfs) tries a second file system where it exists.
    static var kernelOffersAsyncWrites: Bool {
        let context = kaleido_async_write_open()
        if context != 0 { kaleido_async_write_close(context) }
        return context != 0
    }

    @Test func directAndBufferedShardWritesHoldExactlyThePieces() throws {
        let sizes = [1, 4095, 4097, 3 << 20, (5 << 20) + 3, 0, 17, 4 << 20]
        let pieces = sizes.enumerated().map { k, n in
            [UInt8](unsafeUninitializedCapacity: n) { bytes, count in
                for i in 0..<n { bytes[i] = UInt8(truncatingIfNeeded: (i &+ 977 &* k) &* 2_654_435_761 >> 13) }
                count = n
            }
        }
        let expected = Data(pieces.joined())
        var roots = [try temporaryDirectory()]
        if FileManager.default.isWritableFile(atPath: "/dev/shm") {
            let shm = URL(fileURLWithPath: "/dev/shm/kaleido-test-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: shm, withIntermediateDirectories: true)
            roots.append(shm)
        }
        defer { for root in roots { try? FileManager.default.removeItem(at: root) } }
        for root in roots {
            // Sized ahead, direct writes go out without waiting (Linux AIO) and the file is cut back.
            for (direct, sizeBound) in [(true, nil), (true, expected.count + 12_345), (false, nil), (false, expected.count + 7)] {
                let path = root.appendingPathComponent("shard-\(direct)-\(sizeBound ?? 0)").path
                let writer = try DurableFile.Writer(path, direct: direct, sizeBound: sizeBound)
                if !direct { #expect(!writer.isDirect && !writer.isAsync) }
                if writer.isDirect && sizeBound != nil && Self.kernelOffersAsyncWrites {
                    #expect(writer.isAsync, "\(path): sized direct writes should go out without waiting")
                }
                for piece in pieces { try piece.withUnsafeBytes { try writer.append($0) } }
                #expect(writer.offset == expected.count)
                try writer.finish()
                let written = try Data(contentsOf: URL(fileURLWithPath: path))
                #expect(written.count == expected.count, "\(path): \(written.count) bytes, not \(expected.count)")
                #expect(written == expected, "\(path) differs from its pieces")
            }
        }
    }

    @Test func diskFullDuringSaveKeepsThePreviousCheckpoint() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { return }
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let previous = try store.save(fixture.content(step: 1), communicator: LocalCommunicator())
        // A leftover partial directory whose shard path leads to a full device (ENOSPC on write).
        let leftover = directory.appendingPathComponent(".tmp-step-00000002")
        try FileManager.default.createDirectory(at: leftover, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: leftover.appendingPathComponent("shard-00000-of-00001.zst").path,
                                                   withDestinationPath: "/dev/full")
        do {
            try store.save(fixture.content(step: 2), communicator: LocalCommunicator())
            Issue.record("a save onto a full device succeeded")
        } catch {
            #expect("\(error)".contains("No space left on device"), "\(error)")
        }
        #expect(store.newestValid() == previous)
        try fixture.expectMatches(try store.load(previous), step: 1)
        // The failed partial directory was removed; the same step saves cleanly afterwards.
        let again = try store.save(fixture.content(step: 2), communicator: LocalCommunicator())
        try fixture.expectMatches(try store.load(again), step: 2)
    }

    @Test func aLeftoverPartialDirectoryOfTheSameStepIsOverwritten() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let leftover = directory.appendingPathComponent(".tmp-step-00000004")
        try FileManager.default.createDirectory(at: leftover, withIntermediateDirectories: true)
        for name in ["shard-00000-of-00001.zst", "shard-00003-of-00004.zst", "manifest.json"] {
            try Data("stale".utf8).write(to: leftover.appendingPathComponent(name))
        }
        let fixture = Fixture()
        let url = try makeStore(directory).save(fixture.content(step: 4), communicator: LocalCommunicator())
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: url.path)) == ["manifest.json", "shard-00000-of-00001.zst"])
        try fixture.expectMatches(try LoadedCheckpoint(contentsOf: url), step: 4)
    }

    @Test func thePreviousCheckpointIsUntouchedWhileSaving() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory, keep: 1)
        let previous = try store.save(fixture.content(step: 1), communicator: LocalCommunicator())
        let before = fileBytes(previous)

        // Background save: the arrays are snapshotted, the shard is written, nothing is committed.
        let pending = try store.beginSave(fixture.content(step: 2), communicator: LocalCommunicator())
        let original = fixture.online.values.pointer[0]
        fixture.online.values.pointer[0] = 1234   // training goes on; the snapshot is unaffected
        #expect(store.newestValid() == previous)
        #expect(fileBytes(previous) == before)
        let url = try pending.finish(communicator: LocalCommunicator())
        fixture.online.values.pointer[0] = original
        try fixture.expectMatches(try store.load(url), step: 2)
        // keep 1: the previous one goes only after the new one is committed.
        #expect(!FileManager.default.fileExists(atPath: previous.path))
    }

    @Test func stagingOnSeveralThreadsCopiesEveryRanksSliceExactly() throws {
        let fixture = Fixture()
        let content = fixture.content(step: 4)
        let pool = ComputePool(threads: 2)
        for worldSize in [1, 3] {
            for rank in 0..<worldSize {
                let staging = CheckpointStagingBuffer()
                // 37-float pieces: most pieces straddle two arrays, and the two threads interleave.
                let staged = content.snapshot(rank: rank, worldSize: worldSize, into: staging, pool: pool, pieceFloats: 37)
                for (original, copy) in zip(content.arrays, staged.arrays) {
                    let range = ShardPlan.range(count: original.count, rank: rank, worldSize: worldSize)
                    let expected = original.withValues(range) { $0.map(\.bitPattern) }
                    #expect(copy.withValues(range) { $0.map(\.bitPattern) } == expected, "\(original.name), rank \(rank) of \(worldSize)")
                }
                #expect(staging.capacity == CheckpointContent.stagedFloats(arrayCounts: content.arrays.map(\.count), rank: rank,
                                                                          worldSize: worldSize))
            }
        }
    }

    @Test func aPreparedStagingBufferIsMappedBeforeTheFirstSaveAndThenUsed() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let content = fixture.content(step: 6)
        let floats = CheckpointContent.stagedFloats(arrayCounts: content.arrays.map(\.count), rank: 0, worldSize: 1)
        let staging = CheckpointStagingBuffer()
        staging.prepare(floats: floats)
        // The save waits for the preparing thread instead of refusing the buffer as taken.
        let pending = try store.beginSave(content, communicator: LocalCommunicator(), staging: staging, copyPool: ComputePool(threads: 2),
                                          yieldingToTraining: true)
        #expect(staging.capacity == floats)
        #expect(throws: CheckpointError.self) {
            try store.beginSave(fixture.content(step: 7), communicator: LocalCommunicator(), staging: staging)
        }
        try fixture.expectMatches(try store.load(try pending.finish(communicator: LocalCommunicator())), step: 6)
        staging.prepare(floats: floats)   // already that large: nothing to do, and the buffer stays free
        _ = try store.beginSave(fixture.content(step: 8), communicator: LocalCommunicator(), staging: staging).finish(communicator: LocalCommunicator())
    }

    @Test func resavingACommittedStepReplacesIt() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let store = makeStore(directory)
        let first = try store.save(fixture.content(step: 9), communicator: LocalCommunicator())
        var content = fixture.content(step: 9)
        content.epoch = 77
        let second = try store.save(content, communicator: LocalCommunicator())
        #expect(try first == second && store.load(second).epoch == 77)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: directory.path)) == ["step-00000009"])
    }

    @Test func aCopiedCheckpointLoadsFromItsNewPlace() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let url = try makeStore(directory).save(fixture.content(step: 3), communicator: LocalCommunicator())
        let copy = directory.appendingPathComponent("elsewhere/deeper/step-00000003")
        try FileManager.default.createDirectory(at: copy.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: url, to: copy)
        try FileManager.default.removeItem(at: url)
        try fixture.expectMatches(try LoadedCheckpoint(contentsOf: copy), step: 3)
    }

    @Test func restoringIntoAnotherModelNamesTheMismatch() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let loaded = try makeStore(directory).load(try makeStore(directory).save(fixture.content(step: 3), communicator: LocalCommunicator()))
        let same = makeArena(seed: 99)
        try loaded.restore("online", into: same)
        #expect(same.values.pointer[5].bitPattern == fixture.online.values.pointer[5].bitPattern)
        do {
            try loaded.restore("online", into: makeArena(wide: true))
            Issue.record("restored into a wider model")
        } catch {
            #expect("\(error)".contains("'conv1.weight' is [16, 3, 3, 3]") && "\(error)".contains("[24, 3, 3, 3]"), "\(error)")
        }
        #expect(throws: CheckpointError.self) { try loaded.values("momentum") }
    }

    @Test func exportWritesTheEncoderWithTorchNamesAndLayouts() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fixture = Fixture()
        let loaded = try makeStore(directory).load(try makeStore(directory).save(fixture.content(step: 3), communicator: LocalCommunicator()))
        let file = directory.appendingPathComponent("encoder.safetensors")
        let names = try loaded.exportEncoder("target", to: file)
        #expect(names == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.num_batches_tracked", "dw.weight"])
        let exported = try SafeTensorsFile(contentsOf: file)
        #expect(Set(exported.names) == Set(names))
        #expect(exported.tensors["conv1.weight"]?.shape == [16, 3, 3, 3] && exported.tensors["dw.weight"]?.shape == [16, 1, 7, 7])
        #expect(exported.tensors["bn1.num_batches_tracked"]?.dtype == .i64)
        // Same bytes as exporting the target arena itself (minus the heads).
        let reference = try SafeTensorsFile(bytes: Data(ArenaSafeTensors.writer(for: fixture.target).serialized()))
        for name in names where exported.tensors[name]?.dtype == .f32 {
            #expect(try exported.floats(name).values == reference.floats(name).values, "\(name)")
        }
        #expect(exported.metadata["kaleido_array"] == "target")
    }
}
