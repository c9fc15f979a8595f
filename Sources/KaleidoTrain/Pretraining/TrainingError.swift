/// Reasons a run stops, each naming where it happened.
public enum TrainingError: Error, CustomStringConvertible {
    /// The loss or a gradient is NaN or infinite: the weights would be poisoned, so the run
    /// stops before the optimiser step and no checkpoint is written from this state.
    case nonFinite(step: Int, what: String)
    /// A combination of settings the trainer does not run, with what to change.
    case unsupported(String)
    /// Another rank failed where every rank must succeed; that rank's own error says why.
    case rankFailed(rank: Int, what: String)

    public var description: String {
        switch self {
        case .nonFinite(let step, let what):
            return "step \(step): \(what) is not finite; stopping before the update so no checkpoint holds poisoned weights"
        case .unsupported(let message):
            return message
        case .rankFailed(let rank, let what):
            return "rank \(rank) failed to \(what) (rank \(rank)'s error says why); stopping with it"
        }
    }
}
