import KaleidoData
import KaleidoTensor

/// Pretraining batches from KaleidoData's prefetching loader.
///
/// One modality group per step feeds the ReLICv2 step: with several modalities, use
/// `data.mix_mode: alternate` (Omnivore's per-step alternation). RGB-D groups reach the network
/// as 4-channel tubes, depth last, which the Omnivore patch embedding splits again.
public final class LoaderSource: MultiViewSource {
    public let loader: DataLoader

    public init(loader: DataLoader) { self.loader = loader }

    public func batch(step: Int, rank: Int, worldSize: Int) throws -> MultiViewBatch {
        let batch = try loader.next()
        precondition(batch.step == step && batch.rank == rank && batch.worldSize == worldSize,
                     "loader made step \(batch.step) for rank \(batch.rank)/\(batch.worldSize), trainer asked for \(step) of \(rank)/\(worldSize)")
        guard batch.groups.count == 1, let group = batch.groups.first else {
            throw TrainingError.unsupported("step \(step) mixes \(batch.groups.map(\.modality.description).joined(separator: ", ")) in one batch; "
                                        + "ReLICv2 pretraining takes one modality per step: set data.mix_mode: alternate")
        }
        let large = group.largeDepth.map { Self.appendDepth(group.large, $0) } ?? group.large
        let small = group.small.map { rgb in group.smallDepth.map { Self.appendDepth(rgb, $0) } ?? rgb }
        return MultiViewBatch(large: large, largeViews: loader.pipeline.configuration.recipe.large.count,
                              small: small, smallViews: loader.pipeline.configuration.recipe.small.count, labels: group.labels,
                              dataset: group.modality.description)
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

/// Centre views of the image modality for frozen-feature evaluation: the train split to fit
/// the probe, the validation split to score it.
public final class PipelineEvaluationSource: LabelledImageSource {
    let pipelines: [EvaluationSplit: DataPipeline]
    let context = DecodeContext()

    public init(configuration: DataConfiguration) throws {
        var evaluation = configuration
        evaluation.shares = [.image: 1]
        evaluation.shuffle = false
        pipelines = [.train: try DataPipeline(evaluation, split: .train), .validation: try DataPipeline(evaluation, split: .val)]
    }

    public var classes: Int { pipelines[.train]!.classes.count }

    public func count(split: EvaluationSplit) -> Int { pipelines[split]!.datasets[.image]!.count }

    public func images(split: EvaluationSplit, range: Range<Int>) throws -> (images: Tensor, labels: [Int32]) {
        let group = try pipelines[split]!.evaluationBatch(.image, indices: range, context: context)
        return (group.images, group.labels)
    }
}
