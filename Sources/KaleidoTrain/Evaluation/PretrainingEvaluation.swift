import Foundation
import KaleidoData
import KaleidoSSL
import KaleidoTensor

/// What `kaleido pretrain` measures on frozen features, before training and after: per modality
/// of the run a linear probe and kNN (train split fits, val split scores), and between
/// modalities cross-modal retrieval by class (val queries of one modality, train gallery of the
/// other). Built on the same `EvaluationData` and `FeatureExtractor` as `kaleido eval`.
public final class PretrainingEvaluation {
    /// One per modality with a share in `data.mix`, in the order image, video, rgbd.
    public let data: [EvaluationData]
    let probe: LinearProbe
    let knn: KNearestNeighbours
    let retrieval = CrossModalRetrieval(ks: [1])

    public init(config: KaleidoConfig) throws {
        let mix = config.data
        let modalities: [(Modality, Double, String?)] = [(.image, mix.mix.image, mix.imageRoot), (.video, mix.mix.video, mix.videoFolder),
                                                         (.rgbd, mix.mix.rgbd, mix.rgbdFolder)]
        data = try modalities.filter { $0.1 > 0 }.map { modality, _, folder in
            try EvaluationData(spec: mix.dataset == .synthetic ? "synthetic" : (folder ?? ""), modality: modality, config: config)
        }
        probe = LinearProbe(epochs: config.eval.probeEpochs)
        knn = KNearestNeighbours(k: config.eval.knnK, temperature: Float(config.eval.knnTemperature))
    }

    public struct ModalityScores: Codable, Sendable, Equatable {
        public var modality: String
        public var probe: LinearProbe.Result
        public var knnTop1: Double
    }

    public struct RetrievalScores: Codable, Sendable, Equatable {
        public var query: String
        public var gallery: String
        public var recallAt1: Double
        public var chanceAt1: Double
    }

    public struct Scores: Codable, Sendable, Equatable {
        public var modalities: [ModalityScores]
        /// image → video, image → rgbd, video → rgbd, for the pairs the run has.
        public var retrieval: [RetrievalScores]

        public func modality(_ name: String) -> ModalityScores? { modalities.first { $0.modality == name } }

        /// One line for the log: "image probe 17.4% kNN 15.0%, video …, image→video 13.2%".
        public var brief: String {
            func percent(_ x: Double) -> String { String(format: "%.1f%%", 100 * x) }
            return (modalities.map { "\($0.modality) probe \(percent($0.probe.top1)) kNN \(percent($0.knnTop1))" }
                    + retrieval.map { "\($0.query)→\($0.gallery) \(percent($0.recallAt1))" }).joined(separator: ", ")
        }
    }

    /// Scores of the online network of `model` (eval mode).
    public func run(model: ReLICv2Model, pool: ComputePool) throws -> Scores {
        let extractor = FeatureExtractor(model: model, pool: pool)
        extractor.batchSize = 128
        var features: [(train: FeatureSet, validation: FeatureSet)] = []
        var modalities: [ModalityScores] = []
        for set in data {
            let train = try extractor.features(set, split: .train), validation = try extractor.features(set, split: .validation)
            features.append((train, validation))
            modalities.append(ModalityScores(modality: "\(set.modality)",
                                             probe: probe.evaluate(train: train, test: validation, classes: set.classes, pool: pool),
                                             knnTop1: knn.top1(train: train, test: validation, classes: set.classes, pool: pool)))
        }
        var retrievals: [RetrievalScores] = []
        for q in data.indices {
            for g in data.indices where g > q && data[q].train.classes == data[g].train.classes {
                let result = retrieval.evaluate(query: features[q].validation, gallery: features[g].train, pool: pool)
                retrievals.append(RetrievalScores(query: "\(data[q].modality)", gallery: "\(data[g].modality)",
                                                  recallAt1: result.recall[1] ?? .nan, chanceAt1: result.chance[1] ?? .nan))
            }
        }
        return Scores(modalities: modalities, retrieval: retrievals)
    }
}
