import Synchronization

/// Splits loops that do not go through BLAS (depthwise convolution, normalisation, softmax,
/// im2col) over a fixed number of threads.
///
/// The thread count is explicit and owned by whoever creates the pool; kernels receive the pool
/// as an argument. With several MPI ranks on one node, each rank's pool gets its share of cores.
public struct ComputePool: Sendable {
    public let threads: Int
    /// When true, the kernels' large matrix products are cut into pieces that the pool's threads
    /// take in turn (`BLAS.sgemm(…, pool:)`), each piece a single-threaded OpenBLAS call; the
    /// owner then sets `BLAS.threadCount = 1`. When false, each product is one OpenBLAS call on
    /// OpenBLAS's own threads.
    public let splitsMatrixProducts: Bool
    /// The `threads − 1` threads besides the caller's, shared by copies of this pool and stopped
    /// when the last copy goes.
    let team: WorkerTeam?

    public init(threads: Int) {
        self.init(threads: threads, splitsMatrixProducts: false)
    }

    public init(threads: Int, splitsMatrixProducts: Bool) {
        precondition(threads >= 1, "a compute pool needs at least one thread, got \(threads)")
        self.threads = threads
        self.splitsMatrixProducts = splitsMatrixProducts
        team = threads > 1 ? WorkerTeam(workers: threads - 1) : nil
    }

    /// One thread: for tests and for callers already inside a parallel loop.
    public static let serial = ComputePool(threads: 1)

    /// Calls `body` on disjoint contiguous ranges covering `0..<count`, in parallel.
    /// Work below `minimumPerThread` items per thread stays on fewer threads, because waking a
    /// thread costs microseconds.
    public func forEachRange(_ count: Int, minimumPerThread: Int = 1, _ body: (Range<Int>) -> Void) {
        forEachPart(count, minimumPerThread: minimumPerThread) { _, range in body(range) }
    }

    /// Like `forEachRange`, also passing the part's index (< `threads`), so a kernel can give
    /// each part its own slice of a scratch buffer.
    public func forEachPart(_ count: Int, minimumPerThread: Int = 1, _ body: (_ part: Int, Range<Int>) -> Void) {
        forEachPart(count, parts: min(threads, max(1, count / max(1, minimumPerThread))), body)
    }

    /// Calls `body` on `parts` (at most `threads`) disjoint contiguous ranges covering
    /// `0..<count`, in parallel.
    public func forEachPart(_ count: Int, parts: Int, _ body: (_ part: Int, Range<Int>) -> Void) {
        guard count > 0 else { return }
        precondition(parts >= 1 && parts <= threads, "\(parts) parts on \(threads) threads")
        let parts = min(parts, count)
        if parts == 1 {
            body(0, 0..<count)
            return
        }
        func run(_ part: Int) { body(part, (count * part / parts)..<(count * (part + 1) / parts)) }
        // Kernels capture raw pointers to disjoint ranges; the ranges never overlap. A loop
        // inside a loop of the same pool runs its parts here, one after the other.
        if team?.run(participants: parts, run) != true {
            for part in 0..<parts { run(part) }
        }
    }
}

extension ComputePool {
    /// Calls `body(piece)` for every piece in `0..<pieces`, the pool's threads taking the next
    /// untaken piece until none are left. Unlike `forEachRange`'s fixed split, a thread that
    /// was descheduled (a shared machine) just takes fewer pieces; the caller's thread never
    /// waits idle while pieces remain.
    public func forEachPiece(_ pieces: Int, _ body: (Int) -> Void) {
        forEachPiece(pieces, lanes: threads) { _, piece in body(piece) }
    }

    /// The same on at most `lanes` threads, also passing the lane (< `lanes`) that runs the
    /// piece, so a piece can use that lane's slice of a scratch buffer.
    public func forEachPiece(_ pieces: Int, lanes: Int, _ body: (_ lane: Int, _ piece: Int) -> Void) {
        let workers = min(threads, lanes, pieces)
        if workers <= 1 {
            for piece in 0..<pieces { body(0, piece) }
            return
        }
        let next = Atomic<Int>(0)
        let ran = team?.run(participants: workers) { lane in
            while true {
                let piece = next.add(1, ordering: .relaxed).oldValue
                guard piece < pieces else { break }
                body(lane, piece)
            }
        }
        if ran != true {
            for piece in 0..<pieces { body(0, piece) }
        }
    }
}

/// Carries a value into a concurrent closure whose accesses the caller keeps disjoint.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
