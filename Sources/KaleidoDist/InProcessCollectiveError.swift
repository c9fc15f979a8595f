/// A collective of an `InProcessWorld` that could not complete.
///
/// Under MPI a stalled rank ends the whole job (`StallDetector` calls `MPI_Abort`); threads of a
/// test process cannot be killed, so the waiting ranks throw this instead, naming the ranks that
/// never arrived, and the world stops.
public struct InProcessCollectiveError: Error, Equatable, CustomStringConvertible {
    public enum Cause: Sendable, Equatable {
        /// The waiter's `setTimeout` deadline passed (the analogue of `dist.timeout_seconds`).
        case timedOut
        /// The missing ranks returned or finalized without joining, so waiting could only hang.
        case ranksLeft
        /// Ranks started different collectives (operation or size) at the same position, which
        /// MPI would pair anyway, with undefined results.
        case mismatched
        /// Another rank failed first; under mpirun the job would have ended.
        case worldStopped
    }

    public let cause: Cause
    /// The rank that saw the error.
    public let rank: Int
    public let operation: String
    /// The step set with `enterStep` (0: none).
    public let step: Int
    /// Ranks that never reached the collective (empty unless `timedOut` or `ranksLeft`).
    public let missingRanks: [Int]
    public let detail: String

    public var description: String { "rank \(rank): \(operation) failed: \(detail)" }
}
