import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive lock on a run directory while a run writes it: two runs pointed at one directory
/// would interleave metrics and race on checkpoints (keep-N could delete the other's newest).
///
/// The lock is `flock(2)` on `<run>/.kaleido.lock`, which holds the holder's host, pid and start
/// time for the error message. The kernel drops a flock when its process dies, however it dies,
/// so a lock file left with a holder in it by a killed run is stale: the next run takes it over
/// with a warning. Network file systems that implement flock (NFSv4, and Lustre mounted with
/// `flock`) lock across hosts; one that refuses it gets a warning and no lock.
public final class RunDirectoryLock {
    public enum LockError: Error, CustomStringConvertible {
        case held(directory: String, holder: String)
        case unusable(path: String, reason: String)

        public var description: String {
            switch self {
            case .held(let directory, let holder):
                return "run directory \(directory) is in use by \(holder); wait for that run to end or stop it, "
                    + "or give this one another run.name or run.output_dir"
            case .unusable(let path, let reason):
                return "\(path): cannot create the run directory's lock file: \(reason)"
            }
        }
    }

    /// The lock file's path.
    public let path: String
    /// The holder a lock left behind by a dead process named (nil when it was free).
    public let staleHolder: String?
    /// Whether the file system refused flock, so the directory is not actually locked.
    public let unsupported: Bool
    private var descriptor: Int32

    /// Takes the lock of `directory` (created if missing) or throws `LockError.held` naming the holder.
    public init(directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent(".kaleido.lock").path
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw LockError.unusable(path: path, reason: String(cString: strerror(errno))) }
        let previous = Self.contents(descriptor)
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EWOULDBLOCK {
                close(descriptor)
                throw LockError.held(directory: directory.path, holder: previous.isEmpty ? "another process (lock file \(path))" : previous)
            }
            unsupported = true   // ENOLCK, ENOSYS, EOPNOTSUPP: a file system without flock
        } else {
            unsupported = false
        }
        staleHolder = previous.isEmpty || unsupported ? nil : previous
        let holder = "kaleido pid \(getpid()) on host \(ProcessInfo.processInfo.hostName) since "
            + ISO8601DateFormatter().string(from: Date())
        ftruncate(descriptor, 0)
        _ = holder.withCString { pwrite(descriptor, $0, strlen($0), 0) }
    }

    /// Empties the lock file (so the next run sees a clean release, not a stale holder) and unlocks.
    public func release() {
        guard descriptor >= 0 else { return }
        ftruncate(descriptor, 0)
        close(descriptor)   // drops the flock
        descriptor = -1
    }

    deinit { release() }

    private static func contents(_ descriptor: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = pread(descriptor, &buffer, buffer.count, 0)
        guard count > 0 else { return "" }
        return String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
