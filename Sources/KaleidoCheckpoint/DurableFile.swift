import CCheckpoint
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The few POSIX calls a crash-safe commit needs, with errors that name the path: write a file
/// and fsync it, fsync a directory (so a rename or a new entry in it survives power loss), and
/// rename.
@_spi(Bench) public enum DurableFile {
    static func failure(_ path: String, _ operation: String) -> CheckpointError {
        .io(path: path, operation: operation, message: String(cString: strerror(errno)))
    }

    /// Writes all of `piece` to `fd`, retrying short writes and EINTR; errors name `path`.
    static func writeAll(_ piece: UnsafeRawBufferPointer, to fd: Int32, path: String) throws {
        var written = 0
        while written < piece.count {
            let n = write(fd, piece.baseAddress! + written, piece.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw failure(path, "write")
            }
            written += n
        }
    }

    /// Writes `pieces` one after the other to `path` (created or truncated), then fsyncs it.
    static func writeFile(_ path: String, pieces: [UnsafeRawBufferPointer]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure(path, "open") }
        var closed = false
        defer { if !closed { close(fd) } }
        for piece in pieces { try writeAll(piece, to: fd, path: path) }
        guard fsync(fd) == 0 else { throw failure(path, "fsync") }
        closed = true
        guard close(fd) == 0 else { throw failure(path, "close") }
    }

    /// A file written piece by piece while the pieces are still being produced: each piece's
    /// writeback starts at once (without waiting), so `finish`'s fsync only waits for the tail.
    final class Writer {
        let path: String
        private var fd: Int32
        private(set) var offset = 0

        init(_ path: String) throws {
            self.path = path
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw failure(path, "open") }
        }

        deinit { if fd >= 0 { close(fd) } }

        func append(_ piece: UnsafeRawBufferPointer) throws {
            let start = offset
            try writeAll(piece, to: fd, path: path)
            offset += piece.count
            // Only a hint: a file system without it still gets everything durable from fsync.
            _ = kaleido_start_writeback(fd, Int64(start), Int64(piece.count))
        }

        /// fsyncs and closes; the file is durable when this returns.
        func finish() throws {
            guard fsync(fd) == 0 else { throw failure(path, "fsync") }
            let descriptor = fd
            fd = -1
            guard close(descriptor) == 0 else { throw failure(path, "close") }
        }
    }

    @_spi(Bench) public static func writeFile(_ path: String, data: Data) throws {
        try data.withUnsafeBytes { try writeFile(path, pieces: [$0]) }
    }

    /// Makes the directory's entries (new files, renames into or out of it) durable.
    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(path, "open directory") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure(path, "fsync directory") }
    }

    static func renameItem(_ from: String, _ to: String) throws {
        guard rename(from, to) == 0 else { throw failure("\(from) → \(to)", "rename") }
    }

    /// Size in bytes, or nil when the file does not exist.
    static func size(_ path: String) -> Int? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Int(info.st_size)
    }

    static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError.io(path: path, operation: "create directory", message: error.localizedDescription)
        }
    }

    @_spi(Bench) public static func remove(_ path: String) throws {
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw CheckpointError.io(path: path, operation: "remove", message: error.localizedDescription)
        }
    }
}
