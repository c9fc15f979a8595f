import Foundation
import KaleidoTensor
import Logging

/// Everything KaleidoData needs to know about a run's data. Built from the `data` section of
/// the run config (KaleidoTrain maps it); tests build it directly.
public struct DataConfiguration: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        /// The embedded dataset, every modality.
        case synthetic(SyntheticSpec)
        /// Folder datasets; a modality with a positive share needs its root.
        case folders(image: String?, video: String?, rgbd: String?)
        /// WebDataset tar shards (`WebDataset`): a folder of split folders or a brace pattern per modality.
        case shards(image: String?, video: String?, rgbd: String?)
    }

    public var source: Source
    /// Raw depth units per metre for RGB-D folders (1000: millimetres).
    public var depthScale: Float = 1000
    /// Share of each modality in joint batches; zero or absent means unused.
    public var shares: [Modality: Double] = [.image: 1]
    public var mixMode: MixMode = .joint
    /// Samples per step over all ranks together.
    public var globalBatch: Int = 64
    public var recipe: MultiCropRecipe
    public var finetune = FineTuneRecipe(size: 32)
    /// Seed of sample order and augmentation (the run seed).
    public var seed: UInt64 = 0
    /// Shuffle each epoch (training); evaluation reads in order.
    public var shuffle = true
    /// Decode threads per rank, and batches kept ready ahead of the trainer.
    public var workers = 1
    public var prefetch = 2
    /// Where WebDataset shard listings are kept between runs (nil: listed at every start).
    public var shardIndexCache: String?

    public init(source: Source, recipe: MultiCropRecipe) {
        self.source = source
        self.recipe = recipe
    }
}

/// Where a loader is in its sample streams: the next global batch, and for each modality the
/// epoch and position within it that batch starts from. Small and Codable, for checkpoints.
public struct LoaderState: Codable, Equatable, Sendable {
    public struct Stream: Codable, Equatable, Sendable {
        public var modality: Modality
        public var epoch: Int
        public var position: Int
    }

    /// Index of the next global batch.
    public var step: Int
    public var streams: [Stream]

    public static let start = LoaderState(step: 0, streams: [])
}

/// Counts and logs unreadable files. A file that cannot be decoded is replaced by the next
/// sample of the same epoch order (so batch shapes and the other samples do not change), counted
/// on every encounter, and logged with its path the first time.
public final class DataHealth: @unchecked Sendable {
    private let logger: Logger
    private let lock = NSLock()
    private var bad: [String: String] = [:]
    private var skips = 0

    public init(logger: Logger) { self.logger = logger }

    /// Samples skipped so far (a file skipped in two epochs counts twice).
    public var skipped: Int { lock.withLock { skips } }
    /// Distinct unreadable files, sorted.
    public var badFiles: [String] { lock.withLock { bad.keys.sorted() } }

    func record(path: String, error: Error) {
        let first: Bool = lock.withLock {
            skips += 1
            if bad[path] != nil { return false }
            bad[path] = "\(error)"
            return true
        }
        if first {
            logger.warning("skipping unreadable sample", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }
}

/// The data of one split of a run: datasets per modality, the modality schedule, the sample
/// order of every epoch and the view recipe. `batch(_:rank:worldSize:context:)` makes any rank's
/// share of any global batch, on the calling thread, as a pure function of the configuration and
/// the step: no state is carried from one batch to the next, so ranks, threads, resumes and
/// world sizes all see the same samples with the same views.
public final class DataPipeline: @unchecked Sendable {
    public let configuration: DataConfiguration
    public let split: Split
    public let datasets: [Modality: any Dataset]
    public let schedule: MixSchedule
    public let maker: ViewMaker
    public let health: DataHealth
    let logger: Logger

    private let lock = NSLock()
    private var permutations: [PermutationKey: [Int32]] = [:]
    private var permutationOrder: [PermutationKey] = []

    struct PermutationKey: Hashable { var modality: Modality; var epoch: Int }

    /// Opens every dataset with a positive share; a missing or empty one is a `DataError`.
    public init(_ configuration: DataConfiguration, split: Split = .train,
                logger: Logger = Logger(label: "kaleido.data")) throws {
        self.configuration = configuration
        self.split = split
        self.logger = logger
        var datasets: [Modality: any Dataset] = [:]
        for modality in Modality.allCases where (configuration.shares[modality] ?? 0) > 0 {
            datasets[modality] = try DataPipeline.open(modality, configuration, split: split)
        }
        self.datasets = datasets
        self.schedule = MixSchedule(shares: configuration.shares, mode: configuration.mixMode,
                                    globalBatch: configuration.globalBatch)
        self.maker = ViewMaker(recipe: configuration.recipe)
        self.health = DataHealth(logger: logger)
        let classLists = Set(datasets.values.map(\.classes))
        if classLists.count > 1 {
            logger.warning("modalities have different class lists; cross-modal retrieval scores will be meaningless",
                           metadata: ["classes": "\(datasets.mapValues(\.classes.count))"])
        }
    }

    /// Opens the dataset of one modality and split.
    public static func open(_ modality: Modality, _ configuration: DataConfiguration, split: Split) throws -> any Dataset {
        switch configuration.source {
        case .synthetic(let spec):
            return SyntheticDataset(spec: spec, split: split, modality: modality)
        case .folders(let image, let video, let rgbd):
            switch modality {
            case .image:
                guard let image else { throw DataError.missingModality(.image) }
                return try ImageFolderDataset(root: Listing.splitRoot(image, split: split))
            case .video:
                guard let video else { throw DataError.missingModality(.video) }
                return try VideoFrameDataset(root: Listing.splitRoot(video, split: split))
            case .rgbd:
                guard let rgbd else { throw DataError.missingModality(.rgbd) }
                return try RGBDDataset(root: Listing.splitRoot(rgbd, split: split), depthScale: configuration.depthScale)
            }
        case .shards(let image, let video, let rgbd):
            guard let location = [Modality.image: image, .video: video, .rgbd: rgbd][modality] ?? nil else {
                throw DataError.missingModality(modality)
            }
            return try WebDataset(location: location, split: split, modality: modality, depthScale: configuration.depthScale,
                                  indexCache: configuration.shardIndexCache)
        }
    }

    /// The class names (of the first modality in use).
    public var classes: [String] { datasets[schedule.modalities[0]]!.classes }

    /// Full passes over the first modality's dataset per step: batches per epoch = count / batch.
    public var stepsPerEpoch: Int {
        let m = schedule.modalities[0]
        let perStep = max(1, schedule.consumed(before: 1000, m) / 1000)
        return max(1, datasets[m]!.count / perStep)
    }

    // MARK: - Sample order

    /// The order of epoch `epoch` of a modality: a permutation keyed by (seed, modality, epoch),
    /// or the identity when not shuffling. The last few are cached.
    func permutation(_ modality: Modality, epoch: Int) -> [Int32] {
        let key = PermutationKey(modality: modality, epoch: epoch)
        if let cached = lock.withLock({ permutations[key] }) { return cached }
        let n = datasets[modality]!.count
        var order = (0..<n).map { Int32($0) }
        if configuration.shuffle {
            var rng = SplitMix64(keys: configuration.seed, RandomStream.epochOrder.rawValue, UInt64(modality.rawValue), UInt64(epoch))
            if let blocks = datasets[modality]!.readBlocks {
                // Shards in a shuffled order, each shard's samples shuffled among themselves:
                // a global batch reads from one or two shards, which are read ahead whole.
                var shardOrder = Array(blocks.indices)
                rng.shuffle(&shardOrder)
                order = shardOrder.flatMap { shard in
                    var members = blocks[shard].map { Int32($0) }
                    var inShard = SplitMix64(keys: configuration.seed, RandomStream.shardMemberOrder.rawValue, UInt64(modality.rawValue),
                                             UInt64(epoch), UInt64(shard))
                    inShard.shuffle(&members)
                    return members
                }
            } else {
                rng.shuffle(&order)
            }
        }
        lock.withLock {
            if permutations[key] == nil {
                permutations[key] = order
                permutationOrder.append(key)
                if permutationOrder.count > 8 { permutations[permutationOrder.removeFirst()] = nil }
            }
        }
        return order
    }

    /// The epoch and dataset index of position `position` of a modality's sample stream.
    public func sample(_ modality: Modality, at position: Int) -> (epoch: Int, index: Int) {
        let n = datasets[modality]!.count
        let epoch = position / n
        return (epoch, Int(permutation(modality, epoch: epoch)[position % n]))
    }

    // MARK: - Loader state

    /// The loader state before global batch `step`.
    public func state(at step: Int) -> LoaderState {
        LoaderState(step: step, streams: schedule.modalities.map { m in
            let consumed = schedule.consumed(before: step, m), n = datasets[m]!.count
            return LoaderState.Stream(modality: m, epoch: consumed / n, position: consumed % n)
        })
    }

    /// Checks a saved state against this configuration and returns its step.
    public func resume(from state: LoaderState) throws -> Int {
        guard state.streams.isEmpty || state == self.state(at: state.step) else {
            throw DataError.stateMismatch("saved \(state.streams), but step \(state.step) of this configuration is "
                                          + "\(self.state(at: state.step).streams); data.batch_size, data.mix or the dataset changed")
        }
        return state.step
    }

    // MARK: - Batches

    /// The samples of a global-batch group that rank `rank` of `worldSize` makes: contiguous
    /// slices, sizes differing by at most one when the group does not divide evenly.
    public static func shard(_ count: Int, rank: Int, worldSize: Int) -> Range<Int> {
        (count * rank / worldSize)..<(count * (rank + 1) / worldSize)
    }

    /// Rank `rank`'s share of global batch `step`, every view per the multi-crop recipe.
    public func batch(_ step: Int, rank: Int = 0, worldSize: Int = 1, context: DecodeContext) throws -> Batch {
        precondition(worldSize >= 1 && (0..<worldSize).contains(rank), "rank \(rank) of \(worldSize)")
        let recipe = configuration.recipe
        let large = recipe.large.count, small = recipe.small.count
        var groups: [ViewGroup] = []
        var skipped = 0
        for group in schedule.groups(step) {
            let slice = DataPipeline.shard(group.count, rank: rank, worldSize: worldSize)
            let n = slice.count
            let frames = maker.frames(for: group.modality)
            let video = group.modality == .video, depth = group.modality == .rgbd
            func shape(_ views: Int, _ size: Int, _ channels: Int) -> [Int] {
                video ? [views * n, frames, size, size, channels] : [views * n, size, size, channels]
            }
            let largeTensor = Tensor(zeros: shape(large, recipe.large[0].size, 3))
            let smallTensor = small > 0 ? Tensor(zeros: shape(small, recipe.small[0].size, 3)) : nil
            let largeDepth = depth ? Tensor(zeros: shape(large, recipe.large[0].size, 1)) : nil
            let smallDepth = depth && small > 0 ? Tensor(zeros: shape(small, recipe.small[0].size, 1)) : nil
            var labels: [Int32] = [], indices: [Int] = [], positions: [Int] = []
            let dataset = datasets[group.modality]!
            for (j, g) in slice.enumerated() {
                let position = group.streamStart + g
                var destinations: [ViewDestination] = []
                for v in 0..<large {
                    let s = recipe.large[v].size * recipe.large[v].size
                    destinations.append(ViewDestination(rgb: largeTensor.pointer + (v * n + j) * frames * s * 3,
                                                        depth: largeDepth.map { $0.pointer + (v * n + j) * s }))
                }
                for v in 0..<small {
                    let s = recipe.small[v].size * recipe.small[v].size
                    destinations.append(ViewDestination(rgb: smallTensor!.pointer + (v * n + j) * frames * s * 3,
                                                        depth: smallDepth.map { $0.pointer + (v * n + j) * s }))
                }
                let (label, index, replaced) = try makeSample(dataset, position: position, destinations: destinations,
                                                              context: context)
                skipped += replaced
                labels.append(Int32(label))
                indices.append(index)
                positions.append(position)
            }
            groups.append(ViewGroup(modality: group.modality, count: n, batchOffset: slice.lowerBound, globalCount: group.count,
                                    large: largeTensor, small: smallTensor, largeDepth: largeDepth, smallDepth: smallDepth,
                                    labels: labels, sampleIndices: indices, streamPositions: positions))
        }
        return Batch(step: step, rank: rank, worldSize: worldSize, groups: groups, skipped: skipped)
    }

    /// Longest run of unreadable samples tolerated before giving up on the dataset.
    static let maximumConsecutiveFailures = 32

    /// Makes the views of stream position `position`; an unreadable sample is replaced by the
    /// next one in the epoch's order, keeping the original position's random key.
    func makeSample(_ dataset: any Dataset, position: Int, destinations: [ViewDestination],
                    context: DecodeContext) throws -> (label: Int, index: Int, replaced: Int) {
        let n = dataset.count
        let (epoch, _) = sample(dataset.modality, at: position)
        let order = permutation(dataset.modality, epoch: epoch)
        let key = SampleKey(seed: configuration.seed, epoch: epoch, dataset: dataset.modality.rawValue, position: position)
        var lastPath = ""
        for attempt in 0..<DataPipeline.maximumConsecutiveFailures {
            let index = Int(order[(position % n + attempt) % n])
            do {
                let label = try maker.make(dataset, index: index, key: key, destinations: destinations, context: context)
                return (label, index, attempt)
            } catch {
                lastPath = dataset.path(of: index)
                health.record(path: lastPath, error: error)
            }
        }
        throw DataError.tooManyCorrupt(path: lastPath, attempts: DataPipeline.maximumConsecutiveFailures)
    }
}

/// One modality's part of a rank's batch. Views are stacked view-major along the first axis,
/// so view v of the group is rows v·count ..< (v+1)·count and each view batch can go through
/// the encoder as one tensor, or all large views together as one.
public struct ViewGroup: Sendable {
    public let modality: Modality
    /// Samples of this group on this rank.
    public let count: Int
    /// Index of this rank's first sample within the global batch's group, and the group's size
    /// over all ranks: after an all-gather, sample j of this rank sits at batchOffset + j.
    public let batchOffset: Int
    public let globalCount: Int
    /// (L·count, H, W, 3), or (L·count, T, H, W, 3) for video; normalised with ImageNet statistics.
    public let large: Tensor
    /// (S·count, h, w, 3) or (S·count, T, h, w, 3); nil without small views.
    public let small: Tensor?
    /// RGB-D only: normalised depth (L·count, H, W, 1) and (S·count, h, w, 1).
    public let largeDepth: Tensor?
    public let smallDepth: Tensor?
    public let labels: [Int32]
    /// Dataset index of each sample, and its position in the modality's sample stream.
    public let sampleIndices: [Int]
    public let streamPositions: [Int]

    /// The modality id of each sample (the same for the whole group).
    public var modalityIds: [Int32] { [Int32](repeating: Int32(modality.rawValue), count: count) }
    /// The dataset id of each sample: one dataset per modality, so equal to the modality id;
    /// Omnivore's per-dataset heads index by it.
    public var datasetIds: [Int32] { modalityIds }

    public func largeView(_ v: Int) -> Tensor { large.slice(v * count..<(v + 1) * count) }
    public func smallView(_ v: Int) -> Tensor { small!.slice(v * count..<(v + 1) * count) }
}

/// A rank's share of one global batch.
public struct Batch: Sendable {
    public let step: Int
    public let rank: Int
    public let worldSize: Int
    /// One group per modality present in this step, in modality id order.
    public let groups: [ViewGroup]
    /// Unreadable samples replaced while making this batch.
    public let skipped: Int

    public var sampleCount: Int { groups.reduce(0) { $0 + $1.count } }
}
