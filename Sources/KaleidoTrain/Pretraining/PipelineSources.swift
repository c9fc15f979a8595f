import KaleidoData
import KaleidoTensor

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
