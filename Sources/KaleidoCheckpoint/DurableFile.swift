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

    /// A file written piece by piece while the pieces are still being produced.
    ///
    /// Where the file system takes it, the file is opened with `O_DIRECT`: pieces gather in a
    /// block-aligned buffer that goes to the disk in whole blocks straight from this process's
    /// memory, and `finish` pads the last block and truncates the file to its length. Through the
    /// page cache, a background save's every byte was copied once more by the kernel, written
    /// back by kernel threads at normal priority and later reclaimed; on a 2-core machine
    /// training on both cores that kernel work, not the compression, was most of what the save
    /// cost the training steps (BENCHMARKS.md). Where `O_DIRECT` is refused (by the file system,
    /// or outside Linux) each piece is written through the page cache and its writeback started
    /// at once, so `finish`'s fsync only waits for the tail.
    final class Writer {
        let path: String
        private var fd: Int32
        /// Bytes appended so far: the file's length once finished.
        private(set) var offset = 0
        /// Direct I/O's staging buffer, `Writer.block`-aligned, of which `staged` bytes wait.
        private var directBuffer: UnsafeMutableRawBufferPointer?
        private var staged = 0

        /// The alignment direct I/O needs of buffers, offsets and lengths: the page size, a
        /// multiple of every logical block size Linux file systems use.
        static let block = 4096
        static let directCapacity = 4 << 20

        /// `direct: false` always writes through the page cache.
        init(_ path: String, direct: Bool = true) throws {
            self.path = path
            let flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC
            let directFlag = direct ? kaleido_direct_io_flag() : 0
            fd = directFlag != 0 ? open(path, flags | directFlag, 0o644) : -1
            if fd >= 0 {
                directBuffer = .allocate(byteCount: Self.directCapacity, alignment: Self.block)
            } else {
                fd = open(path, flags, 0o644)   // EINVAL above: a file system without direct I/O
            }
            guard fd >= 0 else { throw failure(path, "open") }
        }

        deinit {
            if fd >= 0 { close(fd) }
            directBuffer?.deallocate()
        }

        /// Whether the file is (still) written with direct I/O.
        var isDirect: Bool { directBuffer != nil }

        func append(_ piece: UnsafeRawBufferPointer) throws {
            var rest = piece
            while let buffer = directBuffer, !rest.isEmpty {
                let n = min(rest.count, buffer.count - staged)
                UnsafeMutableRawBufferPointer(rebasing: buffer[staged..<(staged + n)]).copyMemory(from: UnsafeRawBufferPointer(rebasing: rest[..<n]))
                staged += n
                rest = UnsafeRawBufferPointer(rebasing: rest[n...])
                if staged == buffer.count { try writeStaged(bytes: staged) }
            }
            if !rest.isEmpty {
                let start = offset + piece.count - rest.count
                try writeAll(rest, to: fd, path: path)
                // Only a hint: a file system without it still gets everything durable from fsync.
                _ = kaleido_start_writeback(fd, Int64(start), Int64(rest.count))
            }
            offset += piece.count
        }

        /// Writes the first `bytes` staged bytes (a multiple of `block`) in one direct write. A
        /// file system that opens with O_DIRECT but refuses the write (EINVAL: a larger block
        /// size) gets them through the page cache instead, and so does the rest of the file.
        private func writeStaged(bytes: Int) throws {
            let buffer = directBuffer!
            var n: Int
            repeat { n = write(fd, buffer.baseAddress!, bytes) } while n < 0 && errno == EINTR
            if n < 0 && errno == EINVAL {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~kaleido_direct_io_flag())
                try writeAll(UnsafeRawBufferPointer(rebasing: buffer[..<bytes]), to: fd, path: path)
                buffer.deallocate()
                directBuffer = nil
            } else if n < 0 {
                throw failure(path, "write")
            } else if n < bytes {
                // The next direct write would start unaligned; only a full disk writes short.
                throw CheckpointError.io(path: path, operation: "write", message: "wrote \(n) of \(bytes) bytes (disk full?)")
            }
            staged = 0
        }

        /// Writes what is staged, fsyncs and closes; the file is durable when this returns.
        func finish() throws {
            if let buffer = directBuffer, staged > 0 {
                // The last block goes out whole, zero-padded, and the file is cut back to its length.
                let padded = (staged + Self.block - 1) / Self.block * Self.block
                UnsafeMutableRawBufferPointer(rebasing: buffer[staged..<padded]).initializeMemory(as: UInt8.self, repeating: 0)
                try writeStaged(bytes: padded)
                guard ftruncate(fd, off_t(offset)) == 0 else { throw failure(path, "truncate") }
            }
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
