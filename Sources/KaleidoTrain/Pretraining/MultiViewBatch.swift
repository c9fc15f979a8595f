import KaleidoSSL
import KaleidoTensor

/// One rank's share of a global batch, as augmented views ready for the network.
///
/// Views of the same size are stacked along the batch, view-major: rows [v·n, (v+1)·n) of
/// `large` are view v of the rank's n samples, so a view is a slice, not a copy, and one
/// forward pass serves all same-size views.
public struct MultiViewBatch {
    /// (L·n, H, W, 3) or, for videos, (L·n, T, H, W, 3).
    public var large: Tensor
    public var largeViews: Int
    /// (S·n, h, w, 3), or nil without small views.
    public var small: Tensor?
    public var smallViews: Int
    /// Class labels of the n samples (used by the supervised objective and online probes).
    public var labels: [Int32]
    /// The dataset (modality) the samples come from: picks the objective, its queue and the
    /// supervised head.
    public var dataset: String
    /// Cross-modal views (`ssl.cross_modal_views`), (n, H, W, 3) or (n, 1, H, W, 3): large view 0
    /// as another sensor saw it (an RGB-D scene without depth, one frame of a clip).
    public var crossModal: Tensor?
    /// The group's share of a joint step's loss (1 for a step of one group).
    public var weight: Float = 1
    /// Where these samples sit in the group over all ranks (nil: every rank holds n, in rank order).
    public var offset: Int?
    public var globalSamples: Int?

    public var samples: Int { labels.count }

    /// The group's rows as the objective needs them.
    public func rows(rank: Int, worldSize: Int) -> GroupRows {
        GroupRows(local: samples, offset: offset ?? rank * samples, global: globalSamples ?? samples * worldSize, ranks: worldSize)
    }

    public init(large: Tensor, largeViews: Int, small: Tensor?, smallViews: Int, labels: [Int32], dataset: String = "image") {
        precondition(large.shape[0] == largeViews * labels.count, "large views \(large.shape) for \(largeViews)×\(labels.count)")
        precondition(small.map { $0.shape[0] == smallViews * labels.count } ?? (smallViews == 0),
                     "small views \(small?.shape ?? []) for \(smallViews)×\(labels.count)")
        self.large = large
        self.largeViews = largeViews
        self.small = small
        self.smallViews = smallViews
        self.labels = labels
        self.dataset = dataset
    }
}

/// Where pretraining batches come from: the data pipeline behind a small interface, so the
/// trainer does not depend on how samples are stored or augmented.
public protocol MultiViewSource: AnyObject {
    /// Rank `rank`'s share of global batch `step` (every rank asks for its own part): one group
    /// per modality of the step.
    func groups(step: Int, rank: Int, worldSize: Int) throws -> [MultiViewBatch]
}

/// The half of a dataset an evaluation reads: train fits a probe, validation scores it.
public enum EvaluationSplit: String, Sendable {
    case train, validation
}
