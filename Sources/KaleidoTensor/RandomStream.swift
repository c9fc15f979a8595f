/// The tags that keep independent random decisions apart when they are keyed from the same seed
/// (`SplitMix64(keys: seed, stream.rawValue, …)`). One table, so a new stream cannot reuse a tag
/// by accident (the compiler rejects equal raw values). The values decide the data: changing one
/// changes every run that draws from it, and resumed runs would no longer match.
public enum RandomStream: UInt64, Sendable {
    /// A view's crop, flip and photometric choices (`SampleKey.rng`, the stream key after the view).
    case viewSpatial = 0
    /// A view's frame choices (clips).
    case viewTemporal = 1
    /// A fine-tuning sample's augmentation.
    case viewFineTune = 2
    /// Each modality's sample order in an epoch ("PERM").
    case epochOrder = 0x5045_524D
    /// Mixup/CutMix of a fine-tuning batch ("MIX").
    case fineTuneMix = 0x4D49_58
    /// Mixup/CutMix of a batch of a labelled subset ("SUBS"; not to be confused with `labelSubset`).
    case subsetBatchMix = 0x5355_4253
    /// Which samples of each class form a semi-supervised evaluation's labelled subset ("SUBSET").
    case labelSubset = 0x5355_4253_4554
    /// The labelled subset's order in each fine-tuning epoch ("EPOC").
    case subsetEpochOrder = 0x4550_4F43
    /// A training step's drop-path masks on one rank, keyed by (seed, step, rank) ("DROP").
    case dropPath = 0x4452_4F50
    /// The order of one WebDataset shard's samples in an epoch, keyed by (seed, modality, epoch,
    /// shard) ("SHRD"); the shards' own order is `epochOrder`'s.
    case shardMemberOrder = 0x5348_5244
}
