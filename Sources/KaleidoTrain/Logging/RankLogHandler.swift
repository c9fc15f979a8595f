import Foundation
import Logging

/// Which process of a job this is, as the launcher describes it.
public struct RankIdentity: Equatable, Sendable {
    public var rank: Int
    public var worldSize: Int

    public init(rank: Int, worldSize: Int) {
        self.rank = rank
        self.worldSize = worldSize
    }

    /// Rank and size from the variables mpirun (OpenMPI), PMIx, PMI or Slurm set, or a single process.
    /// Logging starts before MPI does, so it cannot ask MPI.
    public static func fromLauncher(environment: [String: String]) -> RankIdentity {
        let pairs = [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMIX_RANK", "PMIX_SIZE"),
                     ("PMI_RANK", "PMI_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")]
        for (rankKey, sizeKey) in pairs {
            if let rank = environment[rankKey].flatMap(Int.init), let size = environment[sizeKey].flatMap(Int.init),
               size > 0, (0..<size).contains(rank) {
                return RankIdentity(rank: rank, worldSize: size)
            }
        }
        return RankIdentity(rank: 0, worldSize: 1)
    }
}

/// A swift-log handler writing one line per message to stderr, prefixed by the rank, so the
/// interleaved output of `mpirun -np N` says which process spoke:
///
///     2026-11-29T04:10:00.123Z [rank 1/4] warning kaleido.dist: EMA checksum mismatch step=200
///
/// The CLI owns stdout (tables, progress, JSON); diagnostics never go there.
public struct RankLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let identity: RankIdentity
    private let sink: @Sendable (String) -> Void

    public init(label: String, identity: RankIdentity, level: Logger.Level,
                sink: @escaping @Sendable (String) -> Void = RankLogHandler.standardError) {
        self.label = label
        self.identity = identity
        self.logLevel = level
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let fields = merged.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
        sink("\(Self.timestamp()) [rank \(identity.rank)/\(identity.worldSize)] \(event.level) \(label): \(event.message)\(fields)\n")
    }

    /// Installs the handler for every logger of the process (once, at CLI start).
    public static func bootstrap(identity: RankIdentity, level: Logger.Level) {
        LoggingSystem.bootstrap { label in RankLogHandler(label: label, identity: identity, level: level) }
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data(line.utf8))
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                      parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}
