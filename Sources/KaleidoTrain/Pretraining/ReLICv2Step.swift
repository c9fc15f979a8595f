import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor

/// One ReLICv2 training step on this rank: forward of every view, target projections, loss,
/// backward, gradient averaging over ranks, finiteness check, optimiser update and EMA.
///
/// The same code runs in one process and under MPI; only the communicator differs.
public final class ReLICv2Step {
    public let model: ReLICv2Model
    public let loss: ReLICv2Loss
    public let optimizer: Optimizer
    public let learningRate: WarmupCosineSchedule
    public let momentum: MomentumSchedule
    public let communicator: Communicator
    public let pool: ComputePool
    let online: RunContext
    let target: RunContext
    /// Past target projections used as extra negatives, newest last; identical on every rank.
    public private(set) var queue: NegativeQueue?
    /// Averages gradients over ranks in buckets, started during the last backward pass.
    public let reducer: GradientReducer
    /// ReLICv2, Omnivore's supervised heads, or both added.
    public let objective: Objective

    public struct Result: Sendable {
        public var loss: ReLICv2Loss.Value
        public var learningRate: Double
        public var momentum: Double
        public var gradientNorm: Double
        /// Cross-entropy of the supervised heads on the large views (0 without them).
        public var supervised: Float
        /// Gradient buckets whose all-reduce finished during backward, out of all buckets, and
        /// the time spent waiting for the rest afterwards: how much communication overlapped.
        public var overlappedBuckets = 0
        public var buckets = 0
        public var allReduceWaitSeconds = 0.0
    }

    public init(model: ReLICv2Model, loss: ReLICv2Loss, optimizer: Optimizer, learningRate: WarmupCosineSchedule,
                momentum: MomentumSchedule, queueSize: Int, communicator: Communicator, pool: ComputePool, seed: UInt64,
                bucketCap: BucketCap = .bytes(1 << 20), objective: Objective = .relicv2, synchronizeBatchNorm: Bool = false) {
        precondition(objective == .relicv2 || model.classifiers != nil, "the \(objective.rawValue) objective needs classifier heads")
        self.objective = objective
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.learningRate = learningRate
        self.momentum = momentum
        self.communicator = communicator
        self.pool = pool
        // Drop path draws differ per rank (different samples), identically on every run.
        online = RunContext(arena: model.online, pool: pool, training: true, recordsForBackward: true,
                            seed: seed &+ UInt64(communicator.rank))
        target = RunContext(arena: model.target, activations: online.activations, gradientScratch: online.gradientScratch,
                            pool: pool, training: true, recordsForBackward: false)
        queue = queueSize > 0 ? NegativeQueue(capacity: queueSize, dimension: model.projectionDimension) : nil
        reducer = GradientReducer(tensors: model.online.entries.map { $0.offset..<($0.offset + $0.count) },
                                  gradients: model.online.gradients.pointer, cap: bucketCap, communicator: communicator)
        if synchronizeBatchNorm && communicator.worldSize > 1 {
            let sum = Self.sumAcrossRanks(communicator)
            online.sumAcrossRanks = sum
            target.sumAcrossRanks = sum
        }
    }

    func averagedOverRanks(_ value: ReLICv2Loss.Value, _ supervised: Float) throws -> (ReLICv2Loss.Value, Float) {
        let world = communicator.worldSize
        guard world > 1 else { return (value, supervised) }
        var parts: [Float] = [value.total, value.contrastive, value.divergence, supervised]
        var scratch = [Float](repeating: 0, count: communicator.scratchFloats(for: parts.count))
        try parts.withUnsafeMutableBufferPointer { buffer in
            try scratch.withUnsafeMutableBufferPointer { try communicator.startDeterministicSum(buffer, scratch: $0).wait() }
        }
        let mean = parts.map { $0 / Float(world) }
        return (ReLICv2Loss.Value(total: mean[0], contrastive: mean[1], divergence: mean[2]), mean[3])
    }

    /// SyncBN's reduction: the deterministic sum, waited for at once (the statistics are needed
    /// to go on). A failed collective means a rank is gone; the job cannot continue.
    static func sumAcrossRanks(_ communicator: Communicator) -> BatchNorm.SumAcrossRanks {
        { buffer in
            let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: communicator.scratchFloats(for: buffer.count))
            defer { scratch.deallocate() }
            do {
                try communicator.startDeterministicSum(buffer, scratch: scratch).wait()
            } catch {
                fatalError("rank \(communicator.rank): SyncBN statistics could not be summed: \(error)")
            }
        }
    }

    public func run(step: Int, batch: MultiViewBatch) throws -> Result {
        defer { online.resetActivations() }
        let n = batch.samples
        model.online.zeroGradients()

        let selfSupervised = objective != .supervised
        var value = ReLICv2Loss.Value(total: 0, contrastive: 0, divergence: 0)
        var dSmall: Tensor?, dLarge: Tensor, dLogits: Tensor?, crossEntropy: Float = 0
        if selfSupervised {
            // The target network first: once its projections are copied out its activations are
            // dead, and the online network's forward and backward reuse that memory. Every rank
            // sees the whole global batch as candidates, so the projections are gathered.
            let globalTargets = keep(try gather(model.project(batch.large, target), views: batch.largeViews, samples: n))
            online.resetActivations()
            let (largePredictions, largeLogits) = model.predict(batch.large, online, dataset: objective == .relicv2 ? nil : batch.dataset)
            let smallPredictions = batch.small.map { model.predict($0, online).predictions }
            // The online predictions are gathered too (without gradient): the reverse distribution reads them.
            var predictions = split(largePredictions, views: batch.largeViews, samples: n)
            var globalPredictions = try gather(largePredictions, views: batch.largeViews, samples: n)
            dLarge = online.tensor(largePredictions.shape, zeroed: true)
            var dPredictions = split(dLarge, views: batch.largeViews, samples: n)
            if let smallPredictions {
                predictions += split(smallPredictions, views: batch.smallViews, samples: n)
                globalPredictions += try gather(smallPredictions, views: batch.smallViews, samples: n)
                let gradient = online.tensor(smallPredictions.shape, zeroed: true)
                dPredictions += split(gradient, views: batch.smallViews, samples: n)
                dSmall = gradient
            }
            value = loss.compute(predictions: predictions, globalPredictions: globalPredictions, targets: globalTargets,
                                 queue: queue?.contents, offset: communicator.rank * n, dPredictions: dPredictions, pool: pool)
            queue?.push(globalTargets)
            if let largeLogits { (crossEntropy, dLogits) = supervisedLoss(largeLogits, batch: batch) }
        } else {
            let (largePredictions, largeLogits) = model.predict(batch.large, online, dataset: batch.dataset)
            dLarge = online.tensor(largePredictions.shape, zeroed: true)
            (crossEntropy, dLogits) = supervisedLoss(largeLogits!, batch: batch)
        }
        value.total += crossEntropy
        // The logged loss is the global batch's: every rank's local mean, averaged over ranks.
        // Every rank then agrees on it, so a non-finite loss stops every rank in the same step.
        (value, crossEntropy) = try averagedOverRanks(value, crossEntropy)
        guard value.total.isFinite else { throw TrainingError.nonFinite(step: step, what: "the loss (\(value.total))") }

        // Backward in reverse order of the forward passes. The last pass reports finished
        // gradients so their buckets' all-reduce overlaps the rest of it.
        reducer.beginStep()
        var reduceError: Error?
        online.backward {
            if let dSmall { model.backward(dSmall, online) }
            online.gradientsFinal = { [reducer] offset in
                guard reduceError == nil else { return }
                do { try reducer.gradientsFinal(from: offset) } catch { reduceError = error }
            }
            model.backward(dLarge, dLogits: dLogits, online)
            online.gradientsFinal = nil
        }
        if let reduceError { throw reduceError }
        try reducer.finish()
        let norm = try checkedGradientNorm(step: step)
        let lr = learningRate.value(at: step), gamma = momentum.value(at: step)
        optimizer.step(model.online, learningRate: Float(lr), pool: pool)
        TargetNetwork.update(target: model.target, online: model.online, momentum: Float(gamma), count: model.targetFloats, pool: pool)
        return Result(loss: value, learningRate: lr, momentum: gamma, gradientNorm: norm, supervised: crossEntropy,
                      overlappedBuckets: reducer.overlappedBuckets, buckets: reducer.buckets.count,
                      allReduceWaitSeconds: reducer.waitSeconds)
    }

    /// The global gradient norm, or an error naming the first parameter with a NaN or Inf.
    func checkedGradientNorm(step: Int) throws -> Double {
        var total: Double = 0
        for entry in model.online.entries where entry.spec.role.isTrainable {
            let g = model.online.gradients.pointer + entry.offset
            var sum: Double = 0
            for i in 0..<entry.count { sum += Double(g[i]) * Double(g[i]) }
            guard sum.isFinite else { throw TrainingError.nonFinite(step: step, what: "the gradient of \(entry.spec.name)") }
            total += sum
        }
        return total.squareRoot()
    }

    /// The drop-path random stream, for checkpoints (resuming must continue it exactly).
    public var randomState: SplitMix64 {
        get { online.rng }
        set { online.rng = newValue }
    }

    /// Mean cross-entropy of the classifier logits of every large view against the samples'
    /// labels, and its gradient.
    func supervisedLoss(_ logits: Tensor, batch: MultiViewBatch) -> (Float, Tensor) {
        let labels = Array([[Int32]](repeating: batch.labels, count: batch.largeViews).joined())
        let probabilities = online.tensor(logits.shape), dLogits = online.tensor(logits.shape, zeroed: true)
        let value = CrossEntropy.lossAndGradient(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                                 logits: logits.pointer, labels: labels, classes: logits.shape[1], pool: pool)
        return (value, dLogits)
    }

    /// Copies of `views` that outlive the activation arena's reset (the gathered targets).
    private var kept = Tensor(zeros: [0])

    func keep(_ views: [Tensor]) -> [Tensor] {
        let each = views.first?.shape ?? [0, 0]
        let total = views.count * each.reduce(1, *)
        if kept.count != total { kept = Tensor(zeros: [views.count] + each) }
        for (v, view) in views.enumerated() { (kept.pointer + v * view.count).update(from: view.pointer, count: view.count) }
        return (0..<views.count).map { kept.slice($0..<($0 + 1)).reshaped(each) }
    }

    /// Views of stacked rows: view v is rows [v·n, (v+1)·n).
    func split(_ stacked: Tensor, views: Int, samples n: Int) -> [Tensor] {
        (0..<views).map { stacked.slice(($0 * n)..<(($0 + 1) * n)) }
    }

    /// Per view, the (n·W, D) matrix of every rank's rows in rank order. Gathered as a sum of
    /// zero-padded buffers, which is exact (each element has one non-zero contribution).
    func gather(_ stacked: Tensor, views: Int, samples n: Int) throws -> [Tensor] {
        let world = communicator.worldSize
        guard world > 1 else { return split(stacked, views: views, samples: n) }
        let d = stacked.shape[1]
        let buffer = online.tensor([views, world * n, d], zeroed: true)
        for v in 0..<views {
            (buffer.pointer + (v * world + communicator.rank) * n * d).update(from: stacked.pointer + v * n * d, count: n * d)
        }
        try communicator.allReduceSum(buffer.buffer)
        return (0..<views).map { buffer.slice($0..<($0 + 1)).reshaped([world * n, d]) }
    }
}

/// A FIFO of past target projections (MoCo-style negatives), filled from the global batch so
/// every rank holds the same queue.
public final class NegativeQueue {
    public let capacity: Int
    public let dimension: Int
    private var rows: [Float] = []

    public init(capacity: Int, dimension: Int) {
        self.capacity = capacity
        self.dimension = dimension
    }

    /// The queue as a (Q, D) tensor, or nil while empty.
    public var contents: Tensor? {
        rows.isEmpty ? nil : Tensor(shape: [rows.count / dimension, dimension], values: rows)
    }

    public func push(_ projections: [Tensor]) {
        for projection in projections { rows += projection.array }
        if rows.count > capacity * dimension { rows.removeFirst(rows.count - capacity * dimension) }
    }

    /// The stored rows, for checkpoints.
    public var values: [Float] {
        get { rows }
        set { rows = Array(newValue.suffix(capacity * dimension)) }
    }
}
