import KaleidoTensor

/// Keeps a buffer that every rank should hold identically (the EMA target network) identical.
///
/// Each rank hashes its copy (FNV-1a over the bit patterns); the hashes are shared with one
/// exact all-reduce (each rank fills only its own slot). Ranks whose hash differs from rank 0's
/// receive rank 0's copy by broadcast. Data-parallel ranks apply the same EMA to the same
/// averaged weights, so a difference means something went wrong (a bit flip, a bug, a rank
/// restarted from another checkpoint); rank 0's copy is the one the coordinator checkpoints.
public enum ReplicaConsistency {
    /// Ranks whose copy differed from rank 0's and was replaced (empty when all agreed).
    /// - Parameter compared: the parts that must agree (e.g. trainable weights, not per-rank
    ///   BatchNorm statistics); the whole buffer is replaced on a mismatch.
    public static func enforce(_ buffer: UnsafeMutableBufferPointer<Float>, compared: [Range<Int>],
                               communicator: Communicator) throws -> [Int] {
        let world = communicator.worldSize
        guard world > 1 else { return [] }
        var hashes = [UInt64](repeating: 0, count: world)
        hashes[communicator.rank] = compared.reduce(FNV1a.offsetBasis) { hash, range in
            FNV1a.hash(UnsafeBufferPointer(rebasing: buffer[range]), continuing: hash)
        }
        try hashes.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        let differing = (1..<world).filter { hashes[$0] != hashes[0] }
        guard !differing.isEmpty else { return [] }
        try communicator.broadcast(UnsafeMutableRawBufferPointer(buffer), root: 0)
        return differing
    }
}
