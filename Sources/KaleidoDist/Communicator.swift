import KaleidoTensor

/// What the trainer needs from the processes it runs with: who it is, how many there are,
/// and collective operations over flat Float32 buffers.
///
/// Two implementations share one code path in the trainer: `LocalCommunicator` for a single
/// process (debug mode, no MPI runtime needed) and `MPICommunicator` under `mpirun` or Slurm.
/// A third, `InProcessCommunicator`, runs ranks as threads so tests can exercise multi-rank
/// code without an MPI launcher.
public protocol Communicator: AnyObject {
    /// This process's index in `0..<worldSize`.
    var rank: Int { get }
    /// Number of processes taking part.
    var worldSize: Int { get }
    /// Element-wise sum over all ranks, in place.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Element-wise sum over all ranks of 64-bit values, in place (checksums, counters).
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<UInt64>) throws
    /// Copies `buffer` from `root` to every rank.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws
    /// Returns once every rank has called it.
    func barrier() throws
    /// Starts an element-wise sum over ranks whose result is bit-identical for any split of the
    /// data into calls: each element is summed in rank order, g₀ + g₁ + … + g_{W−1}. `scratch`
    /// holds at least `scratchFloats(for: buffer.count)` floats and must stay untouched until
    /// the reduction completes. `stream` orders it among other sums in flight (see
    /// `ReductionStream`); the two-argument form is the `.immediate` stream.
    func startDeterministicSum(_ buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
                               stream: ReductionStream) throws -> PendingReduction
    /// Leaves the world (MPI_Finalize); every rank calls it once, last.
    func finalize()
    /// Stalled-rank detection (`dist.timeout_seconds`): from now on a wait for a collective that
    /// lasts longer than `seconds` ends the whole job with an error naming the ranks that never
    /// reached it; nil waits forever. Arm it only where every rank is known to be busy with the
    /// same work (not while the coordinator evaluates alone).
    func setTimeout(_ seconds: Double?)
    /// The training step about to run (1-based), named in timeout errors.
    func enterStep(_ step: Int)
}

/// MPI matches non-blocking collectives on a communicator by the order in which ranks start
/// them, so every rank must start them in the same order. A deterministic sum starts its second
/// collective when its first completes, which happens at different moments on different ranks;
/// sums that are in flight together therefore need their own communicators and a fixed order.
public enum ReductionStream: Sendable {
    /// Waited for as soon as started (SyncBN statistics, losses): nothing else of the stream
    /// can interleave.
    case immediate
    /// Several in flight while other work goes on (gradient buckets during backward): started in
    /// one order on every rank and advanced in that order (a sum's second collective starts only
    /// after every earlier sum's has), as `GradientReducer` does.
    case overlapped
}

extension Communicator {
    /// A sum waited for as soon as it is started (SyncBN statistics, losses).
    public func startDeterministicSum(_ buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>) throws
        -> PendingReduction {
        try startDeterministicSum(buffer, scratch: scratch, stream: .immediate)
    }

    /// Rank 0 also plays the coordinator: it logs, decides checkpoints and writes manifests.
    public var isCoordinator: Bool { rank == 0 }

    /// Scratch floats `startDeterministicSum` needs for a buffer of `count` floats: this rank's
    /// share of every rank's copy.
    public func scratchFloats(for count: Int) -> Int { worldSize * ((count + worldSize - 1) / worldSize) }

    /// A single process has nobody to wait for.
    public func setTimeout(_ seconds: Double?) {}
    public func enterStep(_ step: Int) {}
}

/// The world of one process: collectives are identities.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var worldSize: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<UInt64>) throws {}
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        precondition(root == 0, "rank \(root) does not exist in a single-process world")
    }
    public func barrier() throws {}
    public func finalize() {}
}
