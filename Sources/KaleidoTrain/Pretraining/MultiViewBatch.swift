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
    /// The dataset (modality) the samples come from: picks the supervised head.
    public var dataset: String

    public var samples: Int { labels.count }

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
    /// Rank `rank`'s share of global batch `step` (every rank asks for its own part).
    func batch(step: Int, rank: Int, worldSize: Int) throws -> MultiViewBatch
}

/// Labelled images for evaluation (linear probe, kNN): centre views, no augmentation.
public protocol LabelledImageSource: AnyObject {
    var classes: Int { get }
    /// Number of samples of `split`.
    func count(split: EvaluationSplit) -> Int
    /// Samples [range] of `split`: images (n, H, W, 3) and labels.
    func images(split: EvaluationSplit, range: Range<Int>) throws -> (images: Tensor, labels: [Int32])
}

public enum EvaluationSplit: String, Sendable {
    case train, validation
}
