import ArgumentParser
import Foundation
import KaleidoData
import KaleidoTrain

extension Kaleido {
    struct Finetune: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Semi-supervised evaluation: fine-tune the encoder on 1 % and 10 % of the labels, score top-1/top-5 on val.",
            discussion: """
            The labelled subsets are class-balanced and a function of (--seed, fraction): each class's samples are shuffled by \
            a generator keyed by (seed, class) and the first round(fraction × n_class) (at least one) are kept, so the 1 % \
            subset lies inside the 10 % one. ConvNeXt's recipe: AdamW with warmup and cosine, layer-wise lr decay, EMA of the \
            weights, drop path, and the data.* fine-tuning augmentations of the checkpoint's config (crop scale, RandAugment, \
            Mixup, CutMix, Random Erasing, label smoothing), which --set changes, e.g. --set data.mixup_alpha=0.8. Steps, \
            learning rate, layer decay and encoder default to the config's eval.finetune_* keys: the debug config's are the \
            recipe measured on the debug run (600 steps, lr 1e-2, no layer decay, the target encoder, crops ≥ 35 %, no \
            Mixup/CutMix/RandAugment/Erasing); the ImageNet configs set ConvNeXt's.
            """)

        @OptionGroup var options: EvaluationOptions
        @OptionGroup var logging: LoggingOptions

        @Option(help: ArgumentHelp("Comma-separated label fractions in (0, 1].", valueName: "fractions"))
        var fractions = "0.01,0.1"

        @Option(help: "Optimiser steps per fraction (default eval.finetune_steps of the checkpoint's config).")
        var steps: Int?

        @Option(help: "Samples per step (at most the subset size).")
        var batchSize = 32

        @Option(help: "Peak AdamW learning rate after warmup (default eval.finetune_lr of the checkpoint's config).")
        var lr: Double?

        @Option(help: "Warmup steps.")
        var warmup = 20

        @Option(help: "AdamW weight decay.")
        var weightDecay = 0.05

        @Option(help: ArgumentHelp("Layer-wise learning-rate decay (1 = off): layer l of L trains at lr × decay^(L − l) "
                                   + "(default eval.finetune_layer_decay of the checkpoint's config)."))
        var layerDecay: Double?

        @Option(help: "EMA decay of the weights (0 = no EMA); the EMA is scored beside the weights.")
        var ema = 0.99

        @Option(help: "Stochastic depth rate (ConvNeXt, Swin; default model.drop_path of the checkpoint's config).")
        var dropPath: Double?

        @Option(help: "Seed of the labelled subsets, batch order and initialisation of the classifier.")
        var seed = 0

        @Flag(help: "Ignore the checkpoint's weights: the same network and recipe from random initialisation (the baseline).")
        var fromScratch = false

        func parsedFractions() throws -> [Double] {
            try fractions.split(separator: ",").map { text in
                guard let value = Double(text), value > 0, value <= 1 else {
                    throw ValidationError("--fractions: each must be a number in (0, 1], got \"\(text)\"")
                }
                return value
            }
        }

        func validate() throws {
            _ = try parsedFractions()
            if let steps, steps < 1 { throw ValidationError("--steps must be ≥ 1, got \(steps)") }
            if batchSize < 2 { throw ValidationError("--batch-size must be ≥ 2 (Mixup pairs samples), got \(batchSize)") }
            if let lr, !(lr > 0) { throw ValidationError("--lr must be > 0, got \(lr)") }
            if warmup < 0 { throw ValidationError("--warmup must be ≥ 0, got \(warmup)") }
            if let layerDecay, !(layerDecay > 0 && layerDecay <= 1) {
                throw ValidationError("--layer-decay must be in (0, 1], got \(layerDecay)")
            }
            if !(ema >= 0 && ema < 1) { throw ValidationError("--ema must be in [0, 1), got \(ema)") }
            if let dropPath, !(dropPath >= 0 && dropPath < 1) { throw ValidationError("--drop-path must be in [0, 1), got \(dropPath)") }
            if seed < 0 { throw ValidationError("--seed must be ≥ 0, got \(seed)") }
        }

        func run() throws {
            logging.bootstrap()
            let suite = try options.suite(defaultEncoder: { $0.eval.finetuneEncoder })
            let data = try suite.data(options.data, modality: options.modality)
            var settings = SemiSupervisedFineTuning()
            let steps = steps ?? suite.checkpoint.config.eval.finetuneSteps
            settings.steps = steps
            settings.batchSize = batchSize
            settings.learningRate = lr ?? suite.checkpoint.config.eval.finetuneLr
            settings.warmupSteps = min(warmup, steps)
            settings.weightDecay = weightDecay
            settings.layerDecay = layerDecay ?? suite.checkpoint.config.eval.finetuneLayerDecay
            settings.emaDecay = ema
            settings.dropPath = dropPath ?? suite.checkpoint.config.model.dropPath
            settings.seed = UInt64(seed)
            for fraction in try parsedFractions() {
                try options.finish(try suite.finetune(data, fraction: fraction, settings: settings, fromScratch: fromScratch), suite: suite)
            }
        }
    }
}
