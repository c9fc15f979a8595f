import Foundation
import KaleidoData
import KaleidoNN
import KaleidoTensor
import Logging

/// The evaluations of `kaleido eval` and `kaleido finetune` on one checkpoint, each returning
/// the record it saves under `<run>/eval/`. The CLI only parses options and prints.
public struct EvaluationSuite {
    public let checkpoint: EvaluatedCheckpoint
    public let pool: ComputePool
    /// Reuse and store frozen features in `<run>/eval-cache/`.
    public var cache = true
    let logger = Logger(label: "kaleido.eval")

    public init(checkpoint: EvaluatedCheckpoint, threads: Int) {
        self.checkpoint = checkpoint
        // As in training, the pool's threads take pieces of each product, every piece a
        // single-threaded OpenBLAS call: the features then have the same bits for any thread
        // count, which OpenBLAS's own threading does not promise (its threads split the sums
        // differently: at 1 and 2 threads, 1000×100×1000 products differed in 61–76 % of their
        // elements with OpenBLAS 0.3.21's Prescott, Haswell and SkylakeX kernels alike).
        self.pool = ComputePool(threads: threads, splitsMatrixProducts: true)
        BLAS.threadCount = 1
    }

    /// `spec` (`synthetic` or a folder), or when nil the data the run trained on.
    public func data(_ spec: String?, modality: Modality) throws -> EvaluationData {
        try EvaluationData(spec: spec ?? EvaluationData.runData(of: checkpoint.config, modality: modality),
                           modality: modality, config: checkpoint.config)
    }

    func features(_ data: EvaluationData) throws -> (train: FeatureSet, validation: FeatureSet) {
        let extractor = FeatureExtractor(checkpoint, pool: pool, cache: cache)
        return (try extractor.features(data, split: .train), try extractor.features(data, split: .validation))
    }

    /// Linear probe on frozen features of the train split, scored on the val split.
    public func linear(_ data: EvaluationData, probe: LinearProbe) throws -> EvaluationRecord {
        let started = Date()
        let (train, validation) = try features(data)
        let result = probe.evaluate(train: train, test: validation, classes: data.classes, pool: pool)
        return EvaluationRecord(kind: "linear", name: "linear-\(data.modality)", checkpoint: checkpoint, data: data.spec,
                                settings: ["solver": probe.solver.rawValue, "epochs": "\(probe.epochs)", "modality": "\(data.modality)",
                                           "lr": "\(probe.learningRate)", "weight_decay": "\(probe.weightDecay)"],
                                metrics: ["top1": result.top1, "top5": result.top5, "train_top1": result.trainTop1,
                                          "chance": 1 / Double(data.classes), "train_samples": Double(train.count),
                                          "val_samples": Double(validation.count)],
                                seconds: Date().timeIntervalSince(started))
    }

    /// Weighted kNN of the val split against the train split.
    public func knn(_ data: EvaluationData, knn: KNearestNeighbours) throws -> EvaluationRecord {
        let started = Date()
        let (train, validation) = try features(data)
        let result = knn.evaluate(train: train, test: validation, classes: data.classes, pool: pool)
        return EvaluationRecord(kind: "knn", name: "knn-\(data.modality)", checkpoint: checkpoint, data: data.spec,
                                settings: ["k": "\(knn.k)", "temperature": "\(knn.temperature)", "modality": "\(data.modality)"],
                                metrics: ["top1": result.top1, "top5": result.top5, "chance": 1 / Double(data.classes),
                                          "train_samples": Double(train.count), "val_samples": Double(validation.count)],
                                seconds: Date().timeIntervalSince(started))
    }

    /// Queries from the val split of `query`, gallery the train split of `gallery`.
    public func retrieval(query: EvaluationData, gallery: EvaluationData, retrieval: CrossModalRetrieval) throws -> EvaluationRecord {
        let started = Date()
        guard query.train.classes == gallery.train.classes else {
            throw EvaluationError.badData(spec: gallery.spec, message: "\(gallery.modality) classes differ from the \(query.modality) "
                                          + "classes of \(query.spec); retrieval by class needs the same class list")
        }
        let extractor = FeatureExtractor(checkpoint, pool: pool, cache: cache)
        let queries = try extractor.features(query, split: .validation), items = try extractor.features(gallery, split: .train)
        let result = retrieval.evaluate(query: queries, gallery: items, pool: pool)
        var metrics: [String: Double] = ["queries": Double(result.queries), "gallery": Double(result.gallery)]
        for (k, value) in result.recall { metrics["recall@\(k)"] = value }
        for (k, value) in result.chance { metrics["chance@\(k)"] = value }
        let data = query.spec == gallery.spec ? query.spec : "\(query.spec) → \(gallery.spec)"
        return EvaluationRecord(kind: "retrieval", name: "retrieval-\(query.modality)-\(gallery.modality)", checkpoint: checkpoint,
                                data: data, settings: ["query": "\(query.modality) (val)", "gallery": "\(gallery.modality) (train)"],
                                metrics: metrics, seconds: Date().timeIntervalSince(started))
    }

    /// Fine-tunes on `fraction` of the train labels; `fromScratch` ignores the checkpoint's
    /// weights (same network and recipe, random initialisation: the baseline).
    public func finetune(_ data: EvaluationData, fraction: Double, settings: SemiSupervisedFineTuning,
                         fromScratch: Bool = false) throws -> EvaluationRecord {
        let started = Date()
        let subset = LabelSubset.indices(labels: data.labels(.train), fraction: fraction, seed: settings.seed)
        let result = try settings.run(backbone: checkpoint.backboneName, options: checkpoint.config.model.zooOptions,
                                      weights: fromScratch ? nil : try checkpoint.encoderWeights(), source: checkpoint.url.path,
                                      data: data, subset: subset, pool: pool, logger: logger)
        let percent = fraction * 100
        let label = percent == percent.rounded() ? "\(Int(percent))pct" : String(format: "%gpct", percent)
        var metrics: [String: Double] = ["top1": result.top1, "top5": result.top5, "labelled": Double(result.labelled),
                                         "final_loss": result.finalLoss, "chance": 1 / Double(data.classes)]
        if let top1 = result.emaTop1, let top5 = result.emaTop5 { metrics["ema_top1"] = top1; metrics["ema_top5"] = top5 }
        return EvaluationRecord(
            kind: "finetune", name: "finetune-\(label)-\(data.modality)\(fromScratch ? "-scratch" : "")", checkpoint: checkpoint,
            data: data.spec,
            settings: ["fraction": "\(fraction)", "steps": "\(settings.steps)", "batch_size": "\(settings.batchSize)",
                       "lr": "\(settings.learningRate)", "layer_decay": "\(settings.layerDecay)", "ema": "\(settings.emaDecay)",
                       "drop_path": "\(settings.dropPath)", "seed": "\(settings.seed)", "init": fromScratch ? "random" : checkpoint.encoder.rawValue,
                       "mixup": "\(data.train.configuration.finetune.mixupAlpha)", "cutmix": "\(data.train.configuration.finetune.cutmixAlpha)",
                       "randaugment": "\(data.train.configuration.finetune.randAugmentLayers)x\(data.train.configuration.finetune.randAugmentMagnitude)",
                       "label_smoothing": "\(data.train.configuration.finetune.labelSmoothing)",
                       "erasing": "\(data.train.configuration.finetune.erasingProbability)"],
            metrics: metrics, seconds: Date().timeIntervalSince(started))
    }

    /// Saves `record` in the run's `eval/` folder (or `directory`) and returns the file.
    @discardableResult
    public func save(_ record: EvaluationRecord, in directory: URL? = nil) throws -> URL {
        try record.write(to: directory ?? EvaluationRecord.directory(run: checkpoint.runDirectory))
    }
}
