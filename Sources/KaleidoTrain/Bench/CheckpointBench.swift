import Foundation
@_spi(Bench) import KaleidoCheckpoint
import KaleidoTensor
import KaleidoDist

/// Measurements behind the checkpoint defaults (`kaleido bench checkpoint`).
public enum CheckpointBench {
    /// One codec setting on the given arrays, in memory (no disk).
    public struct CodecResult: Codable, Sendable {
        public var level: Int
        public var byteShuffle: Bool
        public var threads: Int
        public var rawBytes: Int
        public var compressedBytes: Int
        public var ratio: Double
        /// Raw bytes per second through shuffle + zstd + CRC-32C (the save path without I/O).
        public var compressMBps: Double
        /// Raw bytes per second through CRC-32C + zstd + unshuffle (the load path without I/O).
        public var decompressMBps: Double
    }

    /// A full `CheckpointStore` save and load through the file system.
    public struct StoreResult: Codable, Sendable {
        public var level: Int
        public var threads: Int
        public var rawBytes: Int
        public var compressedBytes: Int
        public var ratio: Double
        /// Raw arena bytes per second, including fsync and the commit.
        public var saveMBps: Double
        public var loadMBps: Double
        /// Writing and fsyncing the compressed shard alone, in raw bytes per second: the
        /// file system's limit for a save.
        public var writeMBps: Double
        /// CRC-32C alone, one thread.
        public var crcMBps: Double
        /// Whether the CRC used the CPU instruction (else slicing-by-8 tables).
        public var crcInstruction: Bool
        /// A background save (`checkpoint.async`): the step boundary's copy into the staging
        /// buffer, in milliseconds; raw bytes per second from the start of staging to the shard
        /// written and fsynced (what runs beside training); and the commit after it (manifest,
        /// rename, pruning the oldest checkpoint), in milliseconds, which a step boundary waits for.
        public var stagingMs: Double
        public var backgroundSaveMBps: Double
        public var commitMs: Double
    }

    /// Compresses and decompresses `arrays` as one shard `repetitions` times; the fastest counts.
    public static func codec(_ arrays: [SavedArray], level: Int, byteShuffle: Bool, threads: Int,
                             repetitions: Int = 3) throws -> CodecResult {
        let codec = ShardCodec(level: level, byteShuffle: byteShuffle, chunkBytes: CheckpointStore.defaultChunkBytes, threads: threads)
        let content = CheckpointContent(step: 0, config: "", arrays: arrays)
        return try content.withShardSegments(rank: 0, worldSize: 1) { segments in
            var best = (compress: Double.infinity, decompress: Double.infinity)
            var compressed = 0
            let target = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, segments.total))
            defer { target.deallocate() }
            var output = ShardSegments()
            output.append("all", target.baseAddress!, count: segments.total)
            for _ in 0..<max(1, repetitions) {
                var start = DispatchTime.now().uptimeNanoseconds
                let encoded = try codec.encode(segments, what: "bench")
                best.compress = min(best.compress, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                compressed = encoded.bytes
                // The load path reads one contiguous file.
                let file = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, encoded.bytes), alignment: 64)
                defer { file.deallocate() }
                var offset = 0
                for frame in encoded.frames {
                    (file.baseAddress! + offset).copyMemory(from: frame.baseAddress!, byteCount: frame.count)
                    offset += frame.count
                }
                start = DispatchTime.now().uptimeNanoseconds
                let bytes = UnsafeRawBufferPointer(rebasing: file[0..<encoded.bytes])
                precondition(ShardCodec.checksum(bytes, threads: threads) == encoded.crc)
                try codec.decode(bytes, into: output, path: "bench")
                best.decompress = min(best.decompress, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            let raw = segments.total * 4
            return CodecResult(level: level, byteShuffle: byteShuffle, threads: threads, rawBytes: raw, compressedBytes: compressed,
                               ratio: Double(raw) / Double(max(1, compressed)),
                               compressMBps: Double(raw) / best.compress / 1e6, decompressMBps: Double(raw) / best.decompress / 1e6)
        }
    }

    /// Saves `arrays` as a checkpoint in `directory` `repetitions` times and loads it back (one
    /// rank); the fastest save and load count. Also times writing and fsyncing the same
    /// compressed bytes alone: with compression overlapping the write, a save cannot beat that.
    public static func store(_ arrays: [SavedArray], directory: URL, level: Int, threads: Int, repetitions: Int = 3) throws -> StoreResult {
        let store = CheckpointStore(directory: directory, keep: 1, zstdLevel: level, threads: threads)
        func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        var best = (save: Double.infinity, load: Double.infinity, write: Double.infinity, staging: Double.infinity,
                    background: Double.infinity, commit: Double.infinity)
        var manifest: CheckpointManifest?
        // One staging buffer for every background save, as a run reuses it: the first staging
        // maps its pages, the later ones (the fastest counts) copy into mapped memory.
        let staging = CheckpointStagingBuffer()
        // The trainer stages on its training threads; here the same count of threads.
        let copyPool = ComputePool(threads: threads, splitsMatrixProducts: false)
        for repetition in 1...max(1, repetitions) {
            // Steps in order, so each commit prunes exactly the one checkpoint before it (keep 1).
            var start = DispatchTime.now().uptimeNanoseconds
            _ = try store.save(CheckpointContent(step: 2 * repetition - 1, config: "bench", arrays: arrays),
                                     communicator: LocalCommunicator())
            best.save = min(best.save, seconds(since: start))
            start = DispatchTime.now().uptimeNanoseconds
            let pending = try store.beginSave(CheckpointContent(step: 2 * repetition, config: "bench", arrays: arrays),
                                              communicator: LocalCommunicator(), staging: staging, copyPool: copyPool,
                                              yieldingToTraining: true)
            best.staging = min(best.staging, pending.stagingSeconds)
            let backgroundURL = try pending.finish(communicator: LocalCommunicator())
            // finish waited for the shard, then committed: the commit is what came after the write.
            let toShard = pending.stagingSeconds + pending.writeSeconds!
            best.background = min(best.background, toShard)
            best.commit = min(best.commit, seconds(since: start) - toShard)
            start = DispatchTime.now().uptimeNanoseconds
            manifest = try store.load(backgroundURL).manifest
            best.load = min(best.load, seconds(since: start))
            // The same bytes again, already compressed: write + fsync alone.
            let shard = try Data(contentsOf: backgroundURL.appendingPathComponent(manifest!.shards[0].file))
            let copy = directory.appendingPathComponent("io-only")
            start = DispatchTime.now().uptimeNanoseconds
            try DurableFile.writeFile(copy.path, data: shard)
            best.write = min(best.write, seconds(since: start))
            try DurableFile.remove(copy.path)
        }
        let raw = manifest!.uncompressedBytes, compressed = manifest!.compressedBytes

        let probe = [UInt8](repeating: 0x5A, count: 64 << 20)
        let start = DispatchTime.now().uptimeNanoseconds
        let crc = probe.withUnsafeBytes { CRC32C.checksum($0) }
        let crcSeconds = seconds(since: start)
        precondition(crc != 0 || probe.isEmpty)
        return StoreResult(level: level, threads: threads, rawBytes: raw, compressedBytes: compressed,
                           ratio: Double(raw) / Double(max(1, compressed)), saveMBps: Double(raw) / best.save / 1e6,
                           loadMBps: Double(raw) / best.load / 1e6, writeMBps: Double(raw) / best.write / 1e6,
                           crcMBps: Double(probe.count) / crcSeconds / 1e6, crcInstruction: CRC32C.hardware,
                           stagingMs: best.staging * 1000, backgroundSaveMBps: Double(raw) / best.background / 1e6,
                           commitMs: best.commit * 1000)
    }
}
