import Foundation

/// A file inside a tar archive: its name and where its bytes lie in the archive.
public struct TarMember: Codable, Equatable, Sendable {
    public var name: String
    /// Byte offset of the member's data in the archive, and its length.
    public var offset: Int
    public var size: Int
}

/// Reading and writing the tar format of WebDataset shards (POSIX ustar, with pax and GNU long
/// names when reading).
///
/// Written here rather than taken from libarchive: training reads members in the global sample
/// order (`WebDataset`), which needs each member's byte offset to `pread` it, and libarchive's
/// streaming reader does not expose data offsets. The format is 512-byte blocks — a header, then
/// the data padded to a block — so listing an archive is reading one header per member.
/// Compressed archives (`.tar.gz`) cannot be read at an offset and are refused by name.
public enum TarArchive {
    static let block = 512

    /// Bytes a member of `count` data bytes takes in an archive: its header and its data padded to a block.
    static func archivedSize(_ count: Int) -> Int { block + (count + block - 1) / block * block }

    /// The regular files of the archive at `path`, in archive order. A header whose checksum
    /// does not add up ends the listing: what came before is returned with `damage` saying where
    /// (a shard cut short or overwritten keeps its readable members). A member whose data runs
    /// past the end of the file is listed; reading it fails with a message naming it.
    public static func members(of path: String) throws -> (members: [TarMember], damage: String?) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DataError.missingRoot(path: path) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw DataError.missingRoot(path: path) }
        let fileSize = Int(info.st_size)
        var header = [UInt8](repeating: 0, count: block)
        let start = try readHeader(fd, into: &header, at: 0)
        if start > 2, header[0] == 0x1F && header[1] == 0x8B {
            throw DataError.badShard(path: path, reason: "gzip-compressed; WebDataset shards are read at member offsets, "
                                     + "so they must be plain .tar (gunzip them once)")
        }
        var members: [TarMember] = []
        var offset = 0
        var longName: String?
        var paxName: String?
        var paxSize: Int?
        while offset < fileSize {
            guard offset + block <= fileSize, try readHeader(fd, into: &header, at: offset) == block else {
                return (members, "\(path): the shard ends inside the header at byte \(offset); "
                        + "\(members.count) members before it are used")
            }
            if header.allSatisfy({ $0 == 0 }) { break }  // end-of-archive blocks
            guard checksumMatches(header) else {
                return (members, "\(path): header at byte \(offset) is damaged (checksum mismatch); "
                        + "\(members.count) members before it are used, the rest of the shard is skipped")
            }
            let type = header[156]
            guard var size = octal(header, 124, 12) else {
                return (members, "\(path): header at byte \(offset) has an unreadable size; the rest of the shard is skipped")
            }
            if let paxSize, type == 0x30 || type == 0 { size = paxSize }
            let dataOffset = offset + block
            switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"):
                let name = longName ?? paxName ?? ustarName(header)
                members.append(TarMember(name: name, offset: dataOffset, size: size))
                longName = nil; paxName = nil; paxSize = nil
            case UInt8(ascii: "L"):  // GNU: the next member's name is this member's data
                longName = String(decoding: try read(fd, at: dataOffset, count: size, path: path).prefix { $0 != 0 }, as: UTF8.self)
            case UInt8(ascii: "x"):  // pax: "<length> <key>=<value>\n" records for the next member
                let records = try read(fd, at: dataOffset, count: size, path: path)
                (paxName, paxSize) = parsePax(records)
            default:  // directories, links, global pax headers: nothing to train on
                longName = nil; paxName = nil; paxSize = nil
            }
            offset += archivedSize(size)
        }
        return (members, nil)
    }

    /// The bytes of `member` of the open archive `fd`; `path` names it in errors.
    public static func read(_ fd: Int32, member: TarMember, path: String) throws -> [UInt8] {
        do {
            return try read(fd, at: member.offset, count: member.size, path: path)
        } catch DataError.badShard(_, let reason) {
            throw ImageDecodeError(path: "\(path)/\(member.name)", reason: reason)
        }
    }

    // MARK: - Writing

    /// Writes a ustar archive member by member: each `add` appends a header and the padded data;
    /// `finish` writes the two zero blocks that end an archive.
    public final class Writer {
        public let path: String
        private let handle: FileHandle
        public private(set) var bytesWritten = 0

        public init(path: String) throws {
            guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
                throw ImageDecodeError(path: path, reason: "cannot create the shard")
            }
            self.path = path
            self.handle = handle
        }

        public func add(name: String, bytes: [UInt8]) throws {
            guard name.utf8.count <= 100 else { throw ImageDecodeError(path: "\(path)/\(name)", reason: "member name longer than 100 bytes") }
            var header = [UInt8](repeating: 0, count: TarArchive.block)
            func put(_ text: String, at offset: Int) { for (i, byte) in text.utf8.enumerated() { header[offset + i] = byte } }
            put(name, at: 0)
            put("0000644", at: 100)
            put("0000000", at: 108)
            put("0000000", at: 116)
            put(String(format: "%011o", bytes.count), at: 124)
            put("00000000000", at: 136)  // mtime 0: shards of the same data are the same bytes
            header[156] = UInt8(ascii: "0")
            put("ustar", at: 257)
            put("00", at: 263)
            put(String(format: "%06o", TarArchive.checksum(header)) + "\0 ", at: 148)
            let size = TarArchive.archivedSize(bytes.count)
            try handle.write(contentsOf: header)
            try handle.write(contentsOf: bytes)
            let padding = size - TarArchive.block - bytes.count
            if padding > 0 { try handle.write(contentsOf: [UInt8](repeating: 0, count: padding)) }
            bytesWritten += size
        }

        public func finish() throws {
            try handle.write(contentsOf: [UInt8](repeating: 0, count: 2 * TarArchive.block))
            try handle.synchronize()
            try handle.close()
        }
    }

    // MARK: - Header fields

    /// The header sum with the checksum field counted as spaces (POSIX).
    static func checksum(_ header: [UInt8]) -> Int {
        var sum = 0
        for i in 0..<block { sum += (148..<156).contains(i) ? 0x20 : Int(header[i]) }
        return sum
    }

    static func checksumMatches(_ header: [UInt8]) -> Bool {
        guard let stored = octal(header, 148, 8) else { return false }
        return stored == checksum(header)
    }

    /// A NUL- or space-terminated octal field, or GNU's base-256 form for sizes ≥ 8 GiB.
    static func octal(_ header: [UInt8], _ offset: Int, _ length: Int) -> Int? {
        if header[offset] & 0x80 != 0 {
            return header[(offset + 1)..<(offset + length)].reduce(0) { $0 << 8 | Int($1) }
        }
        var value = 0, digits = 0
        for byte in header[offset..<(offset + length)] {
            if byte == 0 || byte == 0x20 { if digits > 0 { break } else { continue } }
            guard (0x30...0x37).contains(byte) else { return nil }
            value = value * 8 + Int(byte - 0x30)
            digits += 1
        }
        return value
    }

    /// ustar's name: `prefix/name` when the prefix field is used.
    static func ustarName(_ header: [UInt8]) -> String {
        func field(_ offset: Int, _ length: Int) -> String {
            String(decoding: header[offset..<(offset + length)].prefix { $0 != 0 }, as: UTF8.self)
        }
        let name = field(0, 100)
        let isUstar = header[257..<262].elementsEqual("ustar".utf8)
        let prefix = isUstar ? field(345, 155) : ""
        return prefix.isEmpty ? name : prefix + "/" + name
    }

    static func parsePax(_ records: [UInt8]) -> (path: String?, size: Int?) {
        var path: String?, size: Int?
        for line in String(decoding: records, as: UTF8.self).split(separator: "\n") {
            guard let space = line.firstIndex(of: " "), let equals = line.firstIndex(of: "=") else { continue }
            let key = line[line.index(after: space)..<equals], value = String(line[line.index(after: equals)...])
            if key == "path" { path = value }
            if key == "size" { size = Int(value) }
        }
        return (path, size)
    }

    // MARK: - I/O

    private static func readHeader(_ fd: Int32, into header: inout [UInt8], at offset: Int) throws -> Int {
        header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, block, off_t(offset)) }
    }

    private static func read(_ fd: Int32, at offset: Int, count: Int, path: String) throws -> [UInt8] {
        var failure: String?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let got = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + done))
                if got < 0 && errno == EINTR { continue }
                if got <= 0 {
                    failure = got == 0 ? "truncated: the shard ends \(done) bytes into this member's \(count)"
                                       : "cannot read (\(String(cString: strerror(errno))))"
                    break
                }
                done += got
            }
            initialized = done
        }
        if let failure { throw DataError.badShard(path: path, reason: failure) }
        return bytes
    }
}
