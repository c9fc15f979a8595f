import Dispatch

/// Splits loops that do not go through BLAS (depthwise convolution, normalisation, softmax,
/// im2col) over a fixed number of threads.
///
/// The thread count is explicit and owned by whoever creates the pool; kernels receive the pool
/// as an argument. With several MPI ranks on one node, each rank's pool gets its share of cores.
public struct ComputePool: Sendable {
    public let threads: Int

    public init(threads: Int) {
        precondition(threads >= 1, "a compute pool needs at least one thread, got \(threads)")
        self.threads = threads
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
        guard count > 0 else { return }
        let parts = min(threads, max(1, count / max(1, minimumPerThread)))
        if parts == 1 {
            body(0, 0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            // Kernels capture raw pointers to disjoint ranges; the ranges never overlap, which is
            // the guarantee Sendable cannot express.
            let shared = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let start = count * part / parts
                let end = count * (part + 1) / parts
                shared.value(part, start..<end)
            }
        }
    }
}

/// Carries a value into a concurrent closure whose accesses the caller keeps disjoint.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
