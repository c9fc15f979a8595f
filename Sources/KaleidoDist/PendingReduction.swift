/// A collective in flight. MPI only advances non-blocking operations inside MPI calls, so the
/// owner calls `progress()` between pieces of other work (after each layer's backward pass).
public protocol PendingReduction: AnyObject {
    /// Advances without blocking; true once the result is in the buffer.
    func progress() throws -> Bool
    /// Blocks until the result is in the buffer.
    func wait() throws
}

/// Already complete (a single process has nothing to reduce).
final class CompletedReduction: PendingReduction {
    func progress() throws -> Bool { true }
    func wait() throws {}
}

extension LocalCommunicator {
    /// A single process has nothing to sum, in any stream.
    public func startDeterministicSum(_ buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
                                      stream: ReductionStream) throws -> PendingReduction {
        CompletedReduction()
    }
}
