import CCheckpoint

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of checkpoint shards.
///
/// Why this one: it is the checksum of iSCSI, ext4, Btrfs and Snappy/LevelDB framing, so a user
/// can check a shard with stock tools (`crc32c`, Python's `crc32c` package); it catches every
/// burst error up to 32 bits and every odd number of flipped bits; and it is computed over the
/// compressed file bytes, so `verify` and `newestValid` find a truncated or flipped shard without
/// decompressing it. Decompression additionally checks zstd's own per-frame XXH64 checksum of the
/// uncompressed data (see `ShardCodec`), which covers the compressor itself.
///
/// The CPU's CRC-32C instruction (SSE 4.2, ARMv8 CRC) when it has one — on x86-64 three
/// interleaved chains, 12–13 GB/s on one core of the Xeon of BENCHMARKS.md; otherwise
/// slicing-by-8 (Intel's table method): eight 256-entry tables let one step consume eight bytes
/// with eight independent lookups, about 1.5 GB/s. Shards are checksummed in
/// chunks on several threads and the chunk CRCs joined with `combine`.
public enum CRC32C {
    /// Whether `checksum` uses the CPU instruction.
    public static let hardware = kaleido_crc32c_hardware() != 0

    static let polynomial: UInt32 = 0x82F6_3B78

    /// tables[k · 256 + b]: the CRC of byte b followed by k zero bytes.
    nonisolated(unsafe) static let tables: UnsafePointer<UInt32> = {
        let t = UnsafeMutablePointer<UInt32>.allocate(capacity: 8 * 256)
        for b in 0..<256 {
            var crc = UInt32(b)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ polynomial : crc >> 1 }
            t[b] = crc
        }
        for k in 1..<8 {
            for b in 0..<256 {
                let previous = t[(k - 1) * 256 + b]
                t[k * 256 + b] = (previous >> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return UnsafePointer(t)
    }()

    /// The map "append `KALEIDO_CRC32C_LANE` zero bytes" on the CRC register, as four 256-entry
    /// tables (one per register byte) for the instruction's three-lane loop. The map is linear and
    /// is what `combine` applies to its first CRC, so its column for register bit j is
    /// `combine(1 << j, 0, lengthB: lane)`.
    nonisolated(unsafe) static let laneShiftTable: UnsafePointer<UInt32> = {
        let columns = (0..<32).map { bit in combine(1 << UInt32(bit), 0, lengthB: Int(KALEIDO_CRC32C_LANE)) }
        let table = UnsafeMutablePointer<UInt32>.allocate(capacity: 4 * 256)
        for position in 0..<4 {
            for byte in 0..<256 {
                var image: UInt32 = 0
                for bit in 0..<8 where byte & (1 << bit) != 0 { image ^= columns[8 * position + bit] }
                table[position * 256 + byte] = image
            }
        }
        return UnsafePointer(table)
    }()

    /// The CRC of `bytes`, continuing from `crc` (the CRC of what came before, 0 at the start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        if hardware {
            return ~kaleido_crc32c_update_3way(~crc, base.assumingMemoryBound(to: UInt8.self), bytes.count, laneShiftTable)
        }
        return tableChecksum(bytes, continuing: crc)
    }

    /// Slicing-by-8, the portable path (and the reference the instruction is tested against).
    static func tableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        let t = tables
        var crc = ~crc
        var p = base, remaining = bytes.count
        while remaining >= 8 {
            let word = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
            let low = UInt32(truncatingIfNeeded: word) ^ crc, high = UInt32(truncatingIfNeeded: word >> 32)
            crc = t[7 * 256 + Int(low & 0xFF)] ^ t[6 * 256 + Int((low >> 8) & 0xFF)]
                ^ t[5 * 256 + Int((low >> 16) & 0xFF)] ^ t[4 * 256 + Int(low >> 24)]
                ^ t[3 * 256 + Int(high & 0xFF)] ^ t[2 * 256 + Int((high >> 8) & 0xFF)]
                ^ t[1 * 256 + Int((high >> 16) & 0xFF)] ^ t[Int(high >> 24)]
            p += 8
            remaining -= 8
        }
        while remaining > 0 {
            crc = (crc >> 8) ^ t[Int((crc ^ UInt32(p.load(as: UInt8.self))) & 0xFF)]
            p += 1
            remaining -= 1
        }
        return ~crc
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }

    /// The CRC of A followed by B from crc(A), crc(B) and B's length (zlib's crc32_combine):
    /// appending n zero bits to A is multiplication by xⁿ mod P, done as a 32×32 GF(2) matrix
    /// raised to n by repeated squaring.
    public static func combine(_ crcA: UInt32, _ crcB: UInt32, lengthB: Int) -> UInt32 {
        guard lengthB > 0 else { return crcA }
        func times(_ matrix: [UInt32], _ vector: UInt32) -> UInt32 {
            var sum: UInt32 = 0, vector = vector, row = 0
            while vector != 0 {
                if vector & 1 != 0 { sum ^= matrix[row] }
                vector >>= 1
                row += 1
            }
            return sum
        }
        func square(_ matrix: [UInt32]) -> [UInt32] { (0..<32).map { times(matrix, matrix[$0]) } }

        // odd: the operator for one zero bit; then two, four … by squaring.
        var odd = [UInt32](repeating: 0, count: 32)
        odd[0] = polynomial
        for n in 1..<32 { odd[n] = 1 << (n - 1) }
        var even = square(odd)   // two zero bits
        odd = square(even)       // four zero bits
        var crc = crcA, length = lengthB
        repeat {
            even = square(odd)   // first pass: one zero byte
            if length & 1 != 0 { crc = times(even, crc) }
            length >>= 1
            if length == 0 { break }
            odd = square(even)
            if length & 1 != 0 { crc = times(odd, crc) }
            length >>= 1
        } while length != 0
        return crc ^ crcB
    }

    /// Eight lowercase hex digits, as the manifest and `crc32c` tools print it.
    public static func hex(_ crc: UInt32) -> String {
        let digits = String(crc, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}
