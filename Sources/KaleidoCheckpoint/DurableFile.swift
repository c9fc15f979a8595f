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
    /// memory, submitted without waiting (Linux AIO) while a second buffer fills, and `finish`
    /// pads the last block and truncates the file to its length. Through the
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
        /// Direct I/O's two buffers (2 MiB-aligned, so `Writer.block`-aligned): one fills while
        /// the other's write is in flight. `staged` bytes wait in buffer `filling`.
        private var directBuffers: [UnsafeMutableRawBufferPointer] = []
        private var filling = 0
        private var staged = 0
        /// Bytes handed to the disk by direct writes: where the next one goes.
        private var submitted = 0
        /// The Linux AIO context of direct writes submitted without waiting (0: each write waits).
        private var asyncContext: UInt64 = 0
        /// Bytes of the direct write in flight, if one is.
        private var inFlight: Int?
        /// Whether the file may be longer than `offset` (sized ahead, or its last block padded).
        private var mayBeLonger = false

        /// The alignment direct I/O needs of buffers, offsets and lengths: the page size, a
        /// multiple of every logical block size Linux file systems use.
        static let block = 4096
        static let directCapacity = 4 << 20

        /// `direct: false` always writes through the page cache. `sizeBound`, the most bytes the
        /// file will hold, lets direct writes go out without waiting for the disk: the file is
        /// sized to it first (a write extending a file waits; async_write.h) and cut back by
        /// `finish`.
        init(_ path: String, direct: Bool = true, sizeBound: Int? = nil) throws {
            self.path = path
            let flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC
            let directFlag = direct ? kaleido_direct_io_flag() : 0
            fd = directFlag != 0 ? open(path, flags | directFlag, 0o644) : -1
            if fd >= 0 {
                // On 2 MiB pages a full buffer is one disk request, not five or six (huge_pages.h).
                for _ in 0..<2 {
                    guard let memory = kaleido_allocate_huge_pages(Self.directCapacity) else {
                        throw CheckpointError.io(path: path, operation: "allocate", message: "no memory for a \(Self.directCapacity)-byte write buffer")
                    }
                    directBuffers.append(UnsafeMutableRawBufferPointer(start: memory, count: Self.directCapacity))
                }
                if let sizeBound, ftruncate(fd, off_t(sizeBound)) == 0 {
                    mayBeLonger = true
                    asyncContext = kaleido_async_write_open()
                }
            } else {
                fd = open(path, flags, 0o644)   // EINVAL above: a file system without direct I/O
            }
            guard fd >= 0 else { throw failure(path, "open") }
        }

        deinit {
            // Closing the context waits for a write still in flight from one of the buffers.
            if asyncContext != 0 { kaleido_async_write_close(asyncContext) }
            if fd >= 0 { close(fd) }
            for buffer in directBuffers { free(buffer.baseAddress) }
        }

        /// Whether the file is (still) written with direct I/O.
        var isDirect: Bool { !directBuffers.isEmpty }

        /// Whether direct writes go out without waiting for the disk.
        var isAsync: Bool { asyncContext != 0 }

        func append(_ piece: UnsafeRawBufferPointer) throws {
            var rest = piece
            while isDirect, !rest.isEmpty {
                let buffer = directBuffers[filling]
                let n = min(rest.count, buffer.count - staged)
                // Streaming stores: the disk reads these bytes from memory, and nothing else reads them.
                kaleido_copy_streaming(buffer.baseAddress! + staged, rest.baseAddress!, n)
                staged += n
                rest = UnsafeRawBufferPointer(rebasing: rest[n...])
                if staged == buffer.count { try writeStaged(bytes: staged, waiting: false) }
            }
            if !rest.isEmpty {
                let start = offset + piece.count - rest.count
                try writeAll(rest, to: fd, path: path)
                // Only a hint: a file system without it still gets everything durable from fsync.
                _ = kaleido_start_writeback(fd, Int64(start), Int64(rest.count))
            }
            offset += piece.count
        }

        /// Waits for the direct write in flight, if any.
        private func awaitInFlight() throws {
            guard let bytes = inFlight else { return }
            inFlight = nil
            let result = kaleido_async_write_wait(asyncContext)
            if result < 0 {
                errno = Int32(-result)
                throw failure(path, "write")
            }
            if result < bytes {
                throw CheckpointError.io(path: path, operation: "write", message: "wrote \(result) of \(bytes) bytes (disk full?)")
            }
        }

        /// Writes the first `bytes` staged bytes (a multiple of `block`) in one direct write:
        /// submitted without waiting where it can be (and not `waiting`), the other buffer
        /// filling meanwhile. A file system that opens with O_DIRECT but refuses the write
        /// (EINVAL: a larger block size) gets them through the page cache instead, and so does the
        /// rest of the file.
        private func writeStaged(bytes: Int, waiting: Bool) throws {
            let buffer = directBuffers[filling]
            try awaitInFlight()   // the other buffer's write: it is filled next
            if asyncContext != 0 && !waiting {
                if kaleido_async_write_submit(asyncContext, fd, buffer.baseAddress, bytes, Int64(submitted)) == 0 {
                    inFlight = bytes
                    submitted += bytes
                    filling = 1 - filling
                    staged = 0
                    return
                }
                // Refused (no AIO for this file): every later write waits.
                kaleido_async_write_close(asyncContext)
                asyncContext = 0
            }
            var n: Int
            repeat { n = pwrite(fd, buffer.baseAddress!, bytes, off_t(submitted)) } while n < 0 && errno == EINTR
            if n < 0 && errno == EINVAL {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~kaleido_direct_io_flag())
                guard lseek(fd, off_t(submitted), SEEK_SET) >= 0 else { throw failure(path, "seek") }
                try writeAll(UnsafeRawBufferPointer(rebasing: buffer[..<bytes]), to: fd, path: path)
                for buffer in directBuffers { free(buffer.baseAddress) }
                directBuffers = []
            } else if n < 0 {
                throw failure(path, "write")
            } else if n < bytes {
                // The next direct write would start unaligned; only a full disk writes short.
                throw CheckpointError.io(path: path, operation: "write", message: "wrote \(n) of \(bytes) bytes (disk full?)")
            }
            submitted += bytes
            staged = 0
        }

        /// Writes what is staged, fsyncs and closes; the file is durable when this returns.
        func finish() throws {
            if isDirect {
                if staged > 0 {
                    // The last block goes out whole, zero-padded.
                    let buffer = directBuffers[filling]
                    let padded = (staged + Self.block - 1) / Self.block * Self.block
                    UnsafeMutableRawBufferPointer(rebasing: buffer[staged..<padded]).initializeMemory(as: UInt8.self, repeating: 0)
                    mayBeLonger = true
                    try writeStaged(bytes: padded, waiting: true)
                }
                try awaitInFlight()
            }
            if mayBeLonger {
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
