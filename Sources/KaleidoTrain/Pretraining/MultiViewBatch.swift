import KaleidoData
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

/// Pretraining batches from KaleidoData's prefetching loader: one group per modality of the
/// step (one with `data.mix_mode: alternate`, every modality of `data.mix` with `joint`). RGB-D
/// groups reach the network as 4-channel tubes, depth last, which the Omnivore patch embedding
/// splits again.
public final class LoaderSource: MultiViewSource {
    public let loader: DataLoader
    /// Adds each RGB-D and video group's cross-modal view (`ssl.cross_modal_views`).
    public let crossModalViews: Bool

    public init(loader: DataLoader, crossModalViews: Bool = false) {
        self.loader = loader
        self.crossModalViews = crossModalViews
    }

    public func groups(step: Int, rank: Int, worldSize: Int) throws -> [MultiViewBatch] {
        let batch = try loader.next()
        guard batch.step == step && batch.rank == rank && batch.worldSize == worldSize else {
            throw TrainingError.unsupported("the loader made step \(batch.step) for rank \(batch.rank) of \(batch.worldSize), "
                                            + "the trainer asked for step \(step) of rank \(rank) of \(worldSize)")
        }
        let configuration = loader.pipeline.configuration
        let shares = loader.pipeline.schedule.modalities.map { configuration.shares[$0] ?? 0 }
        let totalShare = shares.reduce(0, +)
        return batch.groups.map { group in
            let large = group.largeDepth.map { Self.appendDepth(group.large, $0) } ?? group.large
            let small = group.small.map { rgb in group.smallDepth.map { Self.appendDepth(rgb, $0) } ?? rgb }
            var views = MultiViewBatch(large: large, largeViews: configuration.recipe.large.count,
                                       small: small, smallViews: configuration.recipe.small.count, labels: group.labels,
                                       dataset: group.modality.description)
            views.offset = group.batchOffset
            views.globalSamples = group.globalCount
            // Joint steps weight each group by its modality's share of the mix; an alternating
            // step holds one modality and the schedule carries the mix.
            if batch.groups.count > 1 { views.weight = Float((configuration.shares[group.modality] ?? 0) / totalShare) }
            if crossModalViews { views.crossModal = Self.crossModalView(group) }
            return views
        }
    }

    /// Large view 0 as another sensor sees it: an RGB-D scene's colour image without depth
    /// (n, H, W, 3); a clip's middle frame as a one-frame clip (n, 1, H, W, 3). Images have none.
    static func crossModalView(_ group: ViewGroup) -> Tensor? {
        let n = group.count
        switch group.modality {
        case .image: return nil
        case .rgbd: return group.large.slice(0..<n)
        case .video:
            let shape = group.large.shape  // (L·n, T, H, W, 3)
            let frames = shape[1], frame = shape[2] * shape[3] * shape[4]
            let out = Tensor(zeros: [n, 1, shape[2], shape[3], shape[4]])
            for sample in 0..<n {
                (out.pointer + sample * frame).update(from: group.large.pointer + (sample * frames + frames / 2) * frame, count: frame)
            }
            return out
        }
    }

    /// (…, 3) colour and (…, 1) depth into one (…, 4) tensor.
    static func appendDepth(_ rgb: Tensor, _ depth: Tensor) -> Tensor {
        let pixels = depth.count
        let out = Tensor(zeros: Array(rgb.shape.dropLast()) + [4])
        for p in 0..<pixels {
            (out.pointer + p * 4).update(from: rgb.pointer + p * 3, count: 3)
            out.pointer[p * 4 + 3] = depth.pointer[p]
        }
        return out
    }
}
