import CCheckpoint
import Foundation
import KaleidoDist
import KaleidoTensor
import Logging

/// The checkpoints of one run: a directory of `step-NNNNNNNN/` checkpoints, saved collectively by
/// every rank and committed atomically.
///
/// Saving (every rank calls `save` with the same content):
///   1. each rank compresses its slice of every array and writes `shard-r-of-W.zst` into
///      `.tmp-step-NNNNNNNN/`, fsyncing the file;
///   2. one all-reduce gathers every rank's size, raw size and CRC-32C, and whether it failed —
///      if any rank failed, every rank throws `saveFailed` in this same call and nobody hangs;
///   3. the coordinator writes `manifest.json` last, fsyncs it and the directory, renames the
///      directory to `step-NNNNNNNN/`, fsyncs the parent, then prunes to the newest `keep` (a
///      background save prunes on a thread of its own, which the next commit waits for);
///   4. a last all-reduce tells every rank whether the commit succeeded.
///
/// A crash at any point leaves either the old set of checkpoints or the old set plus the new one:
/// a committed name always has a complete manifest and complete, durable shards, and
/// `newestValid` ignores temporary directories. Assumes every rank sees `directory` (a shared
/// file system, or one node).
public final class CheckpointStore: @unchecked Sendable {
    /// zstd level 1: the measured best trade-off (`kaleido bench checkpoint`): on trained-looking
    /// ResNet-18 weights and AdamW moments, levels 3 and 9 gain ≤ 1 % ratio for 2–10× the time.
    public static let defaultZstdLevel = 1
    /// Raw bytes per independently compressed zstd frame: the unit of parallel work.
    public static let defaultChunkBytes = 4 << 20

    public let directory: URL
    /// Checkpoints kept after a save (the one just written always is).
    public let keep: Int
    public let zstdLevel: Int
    public let byteShuffle: Bool
    /// Threads compressing and decompressing (each rank's share of the node's cores).
    public let threads: Int
    let chunkBytes: Int
    let logger = Logger(label: "kaleido.checkpoint")

    /// Where a test stops a save as a crash would (the files written so far stay).
    enum CrashPoint { case afterShards, afterManifest }
    var crash: CrashPoint?
    /// Test hook: an error returned for a rank replaces that rank's shard write.
    var shardWriteFault: (@Sendable (_ rank: Int) -> Error?)?
    /// Fault injection for process-level crash tests (`kaleido pretrain` under a test).
    public let pause: SavePause?
    /// A background save's pruning, left running after its commit (the coordinator's): deleting
    /// the oldest checkpoint's shards took 50–70 ms of the training thread per save. The next
    /// commit waits for it.
    private let pruning = DispatchGroup()

    public init(directory: URL, keep: Int = 3, zstdLevel: Int = CheckpointStore.defaultZstdLevel, byteShuffle: Bool = true,
                threads: Int = ProcessInfo.processInfo.activeProcessorCount, chunkBytes: Int = CheckpointStore.defaultChunkBytes,
                pause: SavePause? = nil) {
        precondition(keep >= 1, "keep at least one checkpoint, got \(keep)")
        precondition(chunkBytes > 0 && chunkBytes % 4 == 0, "chunk bytes must be a positive multiple of 4")
        self.directory = directory
        self.keep = keep
        self.zstdLevel = zstdLevel
        self.byteShuffle = byteShuffle
        self.threads = max(1, threads)
        self.chunkBytes = chunkBytes
        self.pause = pause
    }

    // MARK: - Saving

    /// Saves `content` as `step-NNNNNNNN/` and returns its URL. Collective: every rank calls it
    /// with the same content (arrays whole; each rank writes its slice). Throws the same
    /// `saveFailed` on every rank when any rank's shard could not be written.
    @discardableResult
    public func save(_ content: CheckpointContent, communicator: Communicator) throws -> URL {
        try content.validate()
        let shard = Result { try writeShard(content, rank: communicator.rank, worldSize: communicator.worldSize) }
        return try commit(content, shard: shard, communicator: communicator)
    }

    /// Starts a save whose compression and shard write run on a background thread while
    /// training continues: this rank's slices are copied first (1/W of the arrays), so the
    /// caller may change its arrays as soon as this returns. Call `finish` (collective) later,
    /// from the thread that runs the other collectives.
    ///
    /// - Parameter yieldingToTraining: one writer thread compresses and writes the shard, at idle
    ///   scheduling priority (Linux SCHED_IDLE, else nice 19): it uses the cores training leaves
    ///   idle (data waits, all-reduce waits, serial sections, the pool's sleeping workers) and
    ///   takes none a training thread wants. One thread, not `threads`: with two training
    ///   threads on two cores, a second compressing thread doubled what a save cost them
    ///   (BENCHMARKS.md). False: normal priority and `threads` threads, as `save`.
    /// - Parameter staging: where this rank's slices are copied; reuse one buffer across saves
    ///   (each save must be finished before the next begins with the same buffer).
    /// - Parameter copyPool: the threads that copy into `staging` (the training threads, idle at
    ///   the step boundary).
    /// - Parameter writerCores: cores the writer thread (and the pruner after the commit) keep to;
    ///   nil: any. `CheckpointSaver` keeps them off the training loop's core (see there).
    public func beginSave(_ content: CheckpointContent, communicator: Communicator, staging: CheckpointStagingBuffer = CheckpointStagingBuffer(),
                          copyPool: ComputePool = .serial, yieldingToTraining: Bool = false,
                          writerCores: [Int]? = nil) throws -> PendingCheckpointSave {
        try content.validate()
        guard staging.acquire() else {
            throw CheckpointError.invalidArgument("checkpoint of step \(content.step): the staging buffer still holds an unfinished save")
        }
        let started = DispatchTime.now().uptimeNanoseconds
        let snapshot = content.snapshot(rank: communicator.rank, worldSize: communicator.worldSize, into: staging, pool: copyPool)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        return PendingCheckpointSave(store: self, content: snapshot, staging: staging, rank: communicator.rank,
                                     worldSize: communicator.worldSize, stagingSeconds: seconds, yieldingToTraining: yieldingToTraining,
                                     writerCores: writerCores)
    }

    func temporaryURL(step: Int) -> URL {
        directory.appendingPathComponent(CheckpointNames.temporaryPrefix + CheckpointNames.directory(step: step))
    }

    /// Compresses and durably writes this rank's shard into the step's temporary directory.
    func writeShard(_ content: CheckpointContent, rank: Int, worldSize: Int, idlePriority: Bool = false) throws -> CheckpointManifest.ShardRecord {
        let temporary = temporaryURL(step: content.step)
        try DurableFile.makeDirectory(temporary.path)
        let name = CheckpointNames.shard(rank: rank, worldSize: worldSize)
        let path = temporary.appendingPathComponent(name).path
        // A save yielding to training compresses on its writer thread alone (see `beginSave`).
        var codec = ShardCodec(level: zstdLevel, byteShuffle: byteShuffle, chunkBytes: chunkBytes, threads: idlePriority ? 1 : threads)
        codec.idlePriority = idlePriority
        return try content.withShardSegments(rank: rank, worldSize: worldSize) { segments in
            if let fault = shardWriteFault?(rank) { throw fault }
            let file = try DurableFile.Writer(path, sizeBound: codec.encodedBound(floats: segments.total))
            let encoded = try codec.encode(segments, what: path) { frame in
                let first = file.offset == 0
                try file.append(frame)
                if first { self.pause?.pauseIfReached(.shardWrite, step: content.step) }
            }
            try file.finish()
            return .init(file: name, bytes: encoded.bytes, uncompressedBytes: segments.total * 4, crc32c: CRC32C.hex(encoded.crc))
        }
    }

    /// Steps 2–4 of a save, after this rank's shard write succeeded or failed. `pruneInBackground`
    /// prunes on an idle-priority thread after the commit instead of before returning.
    func commit(_ content: CheckpointContent, shard: Result<CheckpointManifest.ShardRecord, Error>,
                communicator: Communicator, pruneInBackground: Bool = false, pruneCores: [Int]? = nil) throws -> URL {
        pruning.wait()
        let (rank, worldSize) = (communicator.rank, communicator.worldSize)
        let step = content.step
        // Every rank fills its row: failed, compressed bytes, raw bytes, CRC.
        var table = [UInt64](repeating: 0, count: 4 * worldSize)
        switch shard {
        case .success(let record):
            table[4 * rank + 1] = UInt64(record.bytes)
            table[4 * rank + 2] = UInt64(record.uncompressedBytes)
            table[4 * rank + 3] = UInt64(UInt32(record.crc32c, radix: 16)!)
        case .failure(let error):
            table[4 * rank] = 1
            logger.error("checkpoint shard write failed", metadata: ["step": "\(step)", "error": "\(error)"])
        }
        try table.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }

        let failed = (0..<worldSize).filter { table[4 * $0] != 0 }
        guard failed.isEmpty else {
            if communicator.isCoordinator { try? DurableFile.remove(temporaryURL(step: step).path) }
            let message: String
            if case .failure(let error) = shard { message = "\(error)" } else { message = "see the failing ranks' logs" }
            throw CheckpointError.saveFailed(step: step, ranks: failed, message: message)
        }
        if crash == .afterShards { throw SimulatedCrash() }

        var status: [UInt64] = [0]
        var commitError: Error?
        var committed = directory.appendingPathComponent(CheckpointNames.directory(step: step), isDirectory: true)
        if communicator.isCoordinator {
            let records = (0..<worldSize).map { r in
                CheckpointManifest.ShardRecord(file: CheckpointNames.shard(rank: r, worldSize: worldSize), bytes: Int(table[4 * r + 1]),
                                               uncompressedBytes: Int(table[4 * r + 2]), crc32c: CRC32C.hex(UInt32(table[4 * r + 3])))
            }
            do {
                committed = try commitDirectory(content, shards: records, worldSize: worldSize)
                if pruneInBackground {
                    pruning.enter()
                    SaveThread.start("kaleido-checkpoint-pruner", idlePriority: true, cores: pruneCores) { [self, committed] in
                        prune(after: step, committed: committed)
                        pruning.leave()
                    }
                } else {
                    prune(after: step, committed: committed)
                }
            } catch {
                if error is SimulatedCrash { throw error }
                commitError = error
                status[0] = 1
                logger.error("checkpoint commit failed", metadata: ["step": "\(step)", "error": "\(error)"])
            }
        }
        try status.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        guard status[0] == 0 else {
            throw CheckpointError.saveFailed(step: step, ranks: [0], message: commitError.map { "\($0)" } ?? "the coordinator could not commit (see rank 0's log)")
        }
        return committed
    }

    /// Writes the manifest into the temporary directory and renames it into place (the
    /// coordinator's part of a commit; also used by `reshard`).
    func commitDirectory(_ content: CheckpointContent, shards: [CheckpointManifest.ShardRecord], worldSize: Int) throws -> URL {
        let temporary = temporaryURL(step: content.step)
        let final = directory.appendingPathComponent(CheckpointNames.directory(step: content.step), isDirectory: true)
        // A leftover partial directory of the same step may hold shards of another world size.
        let expected = Set(shards.map(\.file))
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? [] where !expected.contains(name) {
            try DurableFile.remove(temporary.appendingPathComponent(name).path)
        }
        let manifest = content.manifest(shards: shards, worldSize: worldSize, level: zstdLevel, byteShuffle: byteShuffle,
                                        chunkBytes: chunkBytes)
        try DurableFile.writeFile(temporary.appendingPathComponent(CheckpointNames.manifest).path, data: try manifest.encoded())
        try DurableFile.syncDirectory(temporary.path)
        if crash == .afterManifest { throw SimulatedCrash() }
        pause?.pauseIfReached(.beforeRename, step: content.step)

        // The same step committed before (a re-save after resuming at it): set the old one aside,
        // since rename cannot replace a non-empty directory. Between the two renames the older
        // checkpoints are still there to resume from.
        var aside: URL?
        if FileManager.default.fileExists(atPath: final.path) {
            let old = directory.appendingPathComponent(CheckpointNames.asidePrefix + final.lastPathComponent)
            if FileManager.default.fileExists(atPath: old.path) { try DurableFile.remove(old.path) }
            try DurableFile.renameItem(final.path, old.path)
            aside = old
        }
        try DurableFile.renameItem(temporary.path, final.path)
        try DurableFile.syncDirectory(directory.path)
        if let aside { try? DurableFile.remove(aside.path) }
        logger.info("checkpoint saved", metadata: ["step": "\(content.step)", "path": "\(final.path)",
                                                   "bytes": "\(manifest.compressedBytes)",
                                                   "ratio": "\(String(format: "%.3f", manifest.compressionRatio))"])
        return final
    }

    /// Deletes complete checkpoints beyond the newest `keep` (never `committed`), and leftovers of
    /// interrupted saves of earlier steps. Incomplete directories under a committed name neither
    /// count towards `keep` (so they never push a good checkpoint out) nor are deleted (they may
    /// be a copy in progress); they are only reported.
    func prune(after step: Int, committed: URL) {
        var complete: [URL] = []
        for (_, url) in listedCheckpoints() {
            do {
                try Self.checkComplete(url)
                complete.append(url)
            } catch {
                logger.warning("incomplete checkpoint left in place", metadata: ["path": "\(url.path)", "reason": "\(error)"])
            }
        }
        let kept = Set(complete.suffix(keep).map(\.lastPathComponent) + [committed.lastPathComponent])
        for url in complete where !kept.contains(url.lastPathComponent) {
            do {
                try DurableFile.remove(url.path)
                logger.info("checkpoint pruned", metadata: ["path": "\(url.path)"])
            } catch {
                logger.warning("could not prune checkpoint", metadata: ["error": "\(error)"])
            }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] {
            for prefix in [CheckpointNames.temporaryPrefix, CheckpointNames.asidePrefix] where name.hasPrefix(prefix) {
                if let leftover = CheckpointNames.step(ofDirectory: String(name.dropFirst(prefix.count))), leftover < step {
                    try? DurableFile.remove(directory.appendingPathComponent(name).path)
                }
            }
        }
    }

    // MARK: - Finding

    /// Directories named `step-NNNNNNNN` in the store, oldest step first (complete or not), once
    /// any pruning still running is done.
    public func checkpoints() -> [(step: Int, url: URL)] {
        pruning.wait()
        return listedCheckpoints()
    }

    private func listedCheckpoints() -> [(step: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name in CheckpointNames.step(ofDirectory: name).map { ($0, directory.appendingPathComponent(name, isDirectory: true)) } }
            .sorted { $0.step < $1.step }
    }

    /// The newest checkpoint whose manifest parses and whose shards are all present with their
    /// recorded sizes (checksums are verified by `load`). Skipped ones are logged with the reason.
    public func newestValid() -> URL? {
        for (_, url) in checkpoints().reversed() {
            do {
                try Self.checkComplete(url)
                return url
            } catch {
                logger.warning("skipping checkpoint", metadata: ["path": "\(url.path)", "reason": "\(error)"])
            }
        }
        return nil
    }

    /// What a path given by a user names, the way every command reads it.
    public enum Location: Equatable {
        /// A checkpoint directory: the path itself (it holds a manifest or is named `step-N`),
        /// or the newest valid checkpoint of a run directory or of a folder of checkpoints.
        case checkpoint(URL)
        /// A run directory or folder of checkpoints without a valid one (`folder` was searched).
        case noValidCheckpoint(folder: URL)
        /// Neither a checkpoint nor a folder holding any.
        case notACheckpoint
    }

    /// Resolves `path`: a checkpoint directory, a run directory (its `checkpoints/`), or a folder
    /// of `step-N` checkpoints; the last two give their newest valid checkpoint.
    public static func locate(_ path: String) -> Location {
        let url = URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
        let manager = FileManager.default
        if manager.fileExists(atPath: url.appendingPathComponent(CheckpointNames.manifest).path)
            || CheckpointNames.step(ofDirectory: url.lastPathComponent) != nil {
            return .checkpoint(url)
        }
        let runCheckpoints = url.appendingPathComponent("checkpoints", isDirectory: true)
        let store = CheckpointStore(directory: manager.fileExists(atPath: runCheckpoints.path) ? runCheckpoints : url)
        if let newest = store.newestValid() { return .checkpoint(newest) }
        return store.directory == runCheckpoints || !store.checkpoints().isEmpty ? .noValidCheckpoint(folder: store.directory) : .notACheckpoint
    }

    /// Throws unless `url` has a valid manifest and every shard at its recorded size.
    public static func checkComplete(_ url: URL) throws {
        let manifest = try CheckpointManifest.read(from: url)
        for shard in manifest.shards {
            let path = url.appendingPathComponent(shard.file).path
            guard let size = DurableFile.size(path) else { throw CheckpointError.missingShard(path: path) }
            guard size == shard.bytes else { throw CheckpointError.truncatedShard(path: path, expected: shard.bytes, actual: size) }
        }
    }

    // MARK: - Loading, verifying, resharding

    /// Loads every array of the checkpoint at `url` (from all its shards, whatever the current
    /// world size), verifying sizes and checksums.
    public func load(_ url: URL) throws -> LoadedCheckpoint {
        try LoadedCheckpoint(contentsOf: url, threads: threads)
    }

    /// Every problem of the checkpoint at `url` (empty when sound): manifest, missing or truncated
    /// shards, CRC mismatches and, with `decode`, zstd frames that do not decode or whose XXH64
    /// does not match.
    public static func verify(_ url: URL, decode: Bool = true, threads: Int = ProcessInfo.processInfo.activeProcessorCount)
        -> [CheckpointError] {
        let manifest: CheckpointManifest
        do {
            manifest = try CheckpointManifest.read(from: url)
        } catch {
            return [error as? CheckpointError ?? .manifest(path: url.path, message: "\(error)")]
        }
        var problems: [CheckpointError] = []
        for rank in 0..<manifest.worldSize {
            let ranges = manifest.arrays.map { ShardPlan.range(count: $0.count, rank: rank, worldSize: manifest.worldSize) }
            let total = ranges.reduce(0) { $0 + $1.count }
            let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: decode ? max(1, total) : 1)
            defer { scratch.deallocate() }
            var segments = ShardSegments()
            var offset = 0
            for (array, range) in zip(manifest.arrays, ranges) {
                segments.append(array.name, scratch.baseAddress! + (decode ? offset : 0), count: range.count)
                offset += range.count
            }
            do {
                try LoadedCheckpoint.readShard(url, manifest: manifest, rank: rank, into: decode ? segments : nil, threads: threads)
            } catch {
                problems.append(error as? CheckpointError ?? .io(path: url.path, operation: "verify", message: "\(error)"))
            }
        }
        return problems
    }

    /// Rewrites the checkpoint at `url` for `worldSize` ranks as `directory/step-NNNNNNNN/`
    /// (replacing it if `directory` is where it already is), keeping compression settings unless
    /// `zstdLevel` is given. Returns the new checkpoint's URL.
    @discardableResult
    public static func reshard(_ url: URL, worldSize: Int, into directory: URL, zstdLevel: Int? = nil,
                               threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws -> URL {
        guard worldSize >= 1 else { throw CheckpointError.invalidArgument("world size must be at least 1, got \(worldSize)") }
        let loaded = try LoadedCheckpoint(contentsOf: url, threads: threads)
        let compression = loaded.manifest.compression
        let store = CheckpointStore(directory: directory, keep: Int.max, zstdLevel: zstdLevel ?? compression.level,
                                    byteShuffle: compression.byteShuffle, threads: threads, chunkBytes: compression.chunkBytes)
        try DurableFile.makeDirectory(directory.path)
        let content = loaded.content
        var records: [CheckpointManifest.ShardRecord] = []
        for rank in 0..<worldSize { records.append(try store.writeShard(content, rank: rank, worldSize: worldSize)) }
        return try withExtendedLifetime(loaded) { try store.commitDirectory(content, shards: records, worldSize: worldSize) }
    }
}

/// A save whose shard is being written on a background thread; see `CheckpointStore.beginSave`.
public final class PendingCheckpointSave: @unchecked Sendable {
    let store: CheckpointStore
    let content: CheckpointContent
    private let written = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var shard: Result<CheckpointManifest.ShardRecord, Error>?
    private var finished = false
    /// Seconds the step boundary spent copying this rank's slices into the staging buffer.
    public let stagingSeconds: Double
    /// Seconds from the end of staging to this rank's shard being written (nil until then).
    public private(set) var writeSeconds: Double?

    private let staging: CheckpointStagingBuffer
    private let yieldingToTraining: Bool
    /// The cores the writer (and the pruner after the commit) keep to, if any.
    private let writerCores: [Int]?

    init(store: CheckpointStore, content: CheckpointContent, staging: CheckpointStagingBuffer, rank: Int, worldSize: Int,
         stagingSeconds: Double, yieldingToTraining: Bool, writerCores: [Int]?) {
        self.store = store
        self.content = content
        self.staging = staging
        self.stagingSeconds = stagingSeconds
        self.yieldingToTraining = yieldingToTraining
        self.writerCores = writerCores
        let started = DispatchTime.now().uptimeNanoseconds
        SaveThread.start("kaleido-checkpoint-writer", idlePriority: yieldingToTraining, cores: writerCores) { [self] in
            let result = Result { try store.writeShard(content, rank: rank, worldSize: worldSize, idlePriority: yieldingToTraining) }
            lock.withLock {
                shard = result
                writeSeconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            }
            written.signal()
        }
    }

    /// The step being saved.
    public var step: Int { content.step }

    /// Whether this rank's shard is written (or failed), without waiting.
    public var isWritten: Bool { lock.withLock { shard != nil } }

    /// Waits for this rank's shard, then commits (collective: every rank calls it, in the same
    /// order relative to other collectives). Returns the checkpoint's URL; a failed shard on any
    /// rank throws `saveFailed` on every rank and leaves the previous checkpoint the newest.
    @discardableResult
    public func finish(communicator: Communicator) throws -> URL {
        precondition(!finished, "finish called twice for the checkpoint of step \(step)")
        finished = true
        written.wait()
        defer { staging.release() }   // the shard is written: the staged copy is no longer read
        return try store.commit(content, shard: lock.withLock { shard! }, communicator: communicator,
                                pruneInBackground: yieldingToTraining, pruneCores: writerCores)
    }

}

/// Stands for a process dying at a chosen point of a save (tests only).
struct SimulatedCrash: Error {}

// MARK: - Content → shard and manifest

extension CheckpointContent {
    /// Names unique, blobs UTF-8 JSON: checked identically on every rank before any write.
    func validate() throws {
        guard step >= 0 else { throw CheckpointError.invalidArgument("checkpoint step must be 0 or more, got \(step)") }
        var seen = Set<String>()
        for array in arrays where !seen.insert(array.name).inserted {
            throw CheckpointError.invalidArgument("checkpoint of step \(step): array '\(array.name)' given twice")
        }
        for (key, data) in blobs {
            guard (try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed)) != nil else {
                throw CheckpointError.invalidArgument("checkpoint of step \(step): blob '\(key)' is not UTF-8 JSON")
            }
        }
    }

    /// Calls `body` with this rank's slice of every array as one stream.
    @_spi(Bench) public func withShardSegments<R>(rank: Int, worldSize: Int, _ body: (ShardSegments) throws -> R) rethrows -> R {
        func nest(_ index: Int, _ segments: ShardSegments) throws -> R {
            guard index < arrays.count else { return try body(segments) }
            let array = arrays[index]
            let range = ShardPlan.range(count: array.count, rank: rank, worldSize: worldSize)
            return try array.withValues(range) { values in
                var segments = segments
                // The codec only reads through this pointer.
                segments.append(array.name, UnsafeMutablePointer(mutating: values.baseAddress ?? UnsafePointer(bitPattern: 4)!),
                                count: values.count)
                return try nest(index + 1, segments)
            }
        }
        return try nest(0, ShardSegments())
    }

    func manifest(shards: [CheckpointManifest.ShardRecord], worldSize: Int, level: Int, byteShuffle: Bool,
                  chunkBytes: Int) -> CheckpointManifest {
        var layouts: [String: [LayoutEntry]] = [:]
        let records = arrays.map { array -> CheckpointManifest.ArrayRecord in
            var key: String?
            if let layout = array.layout {
                key = layouts.first(where: { $0.value == layout })?.key
                if key == nil {
                    key = array.name
                    layouts[array.name] = layout
                }
            }
            return .init(name: array.name, dtype: "F32", count: array.count, layout: key)
        }
        let formatter = ISO8601DateFormatter()
        return CheckpointManifest(
            format: "kaleido-checkpoint", formatVersion: CheckpointManifest.currentFormatVersion, step: step, epoch: epoch,
            created: formatter.string(from: Date()), config: config, worldSize: worldSize, arrays: records, layouts: layouts,
            optimizer: optimizer, schedulerStep: schedulerStep, queueSize: queueSize,
            blobs: blobs.mapValues { String(decoding: $0, as: UTF8.self) },
            compression: .init(codec: "zstd", level: level, byteShuffle: byteShuffle, chunkBytes: chunkBytes, checksum: "crc32c",
                               framesPerChunk: ShardCodec(level: level, byteShuffle: byteShuffle, chunkBytes: chunkBytes, threads: 1).framesPerChunk),
            shards: shards)
    }
}
