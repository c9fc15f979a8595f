import KaleidoCheckpoint

/// Faults the process-level tests inject into a real `kaleido pretrain` (the CLI builds this from
/// `KALEIDO_FAULT_*`); a run without faults passes `.none`.
public struct FaultInjection: Sendable, Equatable {
    /// A rank and the step (counted from 1) a fault hits it at.
    public struct RankStep: Sendable, Equatable {
        public var rank: Int
        public var step: Int

        public init(rank: Int, step: Int) { (self.rank, self.step) = (rank, step) }
    }

    /// Stops a checkpoint save at a point, for a kill -9 there.
    public var savePause: SavePause?
    /// This rank stops before this step while staying alive, as a hung file system or a deadlock
    /// would: the stalled-rank detection must name it.
    public var stall: RankStep?
    /// This rank's target network drifts at this step's replica check, which must repair it.
    public var perturbTarget: RankStep?

    public init(savePause: SavePause? = nil, stall: RankStep? = nil, perturbTarget: RankStep? = nil) {
        self.savePause = savePause
        self.stall = stall
        self.perturbTarget = perturbTarget
    }

    public static let none = FaultInjection()
}
