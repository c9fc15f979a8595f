import KaleidoDist
import KaleidoNN
import KaleidoSSL
import KaleidoTensor

/// One optimiser step on this rank: zero the gradients; for each modality group, the objective
/// (target projections, online predictions, ReLICv2 loss and/or the supervised heads' loss) and
/// the backward pass, accumulating into the one gradient arena; gradients averaged over ranks;
/// finiteness check; optimiser update; EMA of the target network.
///
/// A step holds one group (image-only runs, `data.mix_mode: alternate`) or one group per
/// modality (`joint`). Memory stays one group's activations: a group's backward runs before the
/// next group's forward. The last group's backward reports finished gradients to the reducer so
/// their all-reduce overlaps it. The same code runs in one process and under MPI; only the
/// communicator differs.
public final class TrainingStep {
    public let model: ReLICv2Model
    public let optimizer: Optimizer
    public let learningRate: WarmupCosineSchedule
    public let momentum: MomentumSchedule
    public let communicator: Communicator
    public let pool: ComputePool
    /// The run seed, keying the drop-path stream of each step.
    let seed: UInt64
    let online: RunContext
    let target: RunContext
    /// One ReLICv2 objective (and negative queue) per dataset the run draws from, by name.
    public let objectives: [String: ReLICv2Objective]
    /// Averages gradients over ranks in buckets, started during the last backward pass.
    public let reducer: GradientReducer
    /// ReLICv2, Omnivore's supervised heads, or both added.
    public let objective: Objective

    public struct Result: Sendable {
        /// The step's loss: the groups' losses weighted by their shares and summed; `total`
        /// includes the supervised cross-entropy.
        public var loss: ReLICv2Loss.Value
        public var learningRate: Double
        public var momentum: Double
        public var gradientNorm: Double
        /// Cross-entropy of the supervised heads on the large views (0 without them).
        public var supervised: Float
        /// Each group's own (unweighted) loss and cross-entropy, in the step's group order.
        public var groups: [GroupLoss] = []
        /// Gradient buckets whose all-reduce finished during backward, out of all buckets, and
        /// the time spent waiting for the rest afterwards: how much communication overlapped.
        public var overlappedBuckets = 0
        public var buckets = 0
        public var allReduceWaitSeconds = 0.0
    }

    public struct GroupLoss: Sendable, Equatable {
        public var dataset: String
        public var loss: ReLICv2Loss.Value
        public var supervised: Float
    }

    /// - Parameter datasets: the datasets (modalities) whose groups the steps will hold; each
    ///   gets its own objective and queue.
    public init(model: ReLICv2Model, loss: ReLICv2Loss, optimizer: Optimizer, learningRate: WarmupCosineSchedule,
                momentum: MomentumSchedule, queueSize: Int, communicator: Communicator, pool: ComputePool, seed: UInt64,
                bucketCap: BucketCap = .bytes(1 << 20), objective: Objective = .relicv2, synchronizeBatchNorm: Bool = false,
                datasets: [String] = ["image"]) {
        precondition(objective == .relicv2 || model.classifiers != nil, "the \(objective.rawValue) objective needs classifier heads")
        self.objective = objective
        self.model = model
        self.optimizer = optimizer
        self.learningRate = learningRate
        self.momentum = momentum
        self.communicator = communicator
        self.pool = pool
        self.seed = seed
        online = RunContext(arena: model.online, pool: pool, training: true, recordsForBackward: true)
        // The target normalises with batch statistics like the online network, but drops no path.
        target = RunContext(arena: model.target, activations: online.activations, gradientScratch: online.gradientScratch,
                            pool: pool, training: true, recordsForBackward: false, dropsPaths: false)
        objectives = Dictionary(uniqueKeysWithValues: datasets.map {
            ($0, ReLICv2Objective(loss: loss, queueCapacity: queueSize, dimension: model.projectionDimension))
        })
        reducer = GradientReducer(tensors: model.online.entries.map { $0.offset..<($0.offset + $0.count) },
                                  gradients: model.online.gradients.pointer, cap: bucketCap, communicator: communicator)
        if synchronizeBatchNorm && communicator.worldSize > 1 {
            let sum = Self.sumAcrossRanks(communicator)
            online.sumAcrossRanks = sum
            target.sumAcrossRanks = sum
        }
    }

    /// The queue of a dataset's objective under its checkpoint name: `queue` for images (the
    /// name image-only runs have always saved), `queue.<dataset>` for the others.
    public var queues: [(name: String, queue: NegativeQueue)] {
        objectives.keys.sorted().compactMap { dataset in
            objectives[dataset]!.queue.map { (dataset == "image" ? "queue" : "queue.\(dataset)", $0) }
        }
    }

    public func run(step: Int, batch: MultiViewBatch) throws -> Result { try run(step: step, groups: [batch]) }

    public func run(step: Int, groups: [MultiViewBatch]) throws -> Result {
        precondition(!groups.isEmpty, "a step needs at least one group")
        defer { online.resetActivations() }
        // Drop-path masks from a stream keyed by (seed, step, rank): each rank draws its own, the
        // same on every run, and a resumed run recomputes every rank's stream from the step alone.
        online.rng = SplitMix64(keys: seed, RandomStream.dropPath.rawValue, UInt64(step), UInt64(communicator.rank))
        model.online.zeroGradients()
        var losses: [GroupLoss] = []
        var last: PendingBackward?
        for (index, group) in groups.enumerated() {
            let (loss, pending) = try forward(group)
            losses.append(loss)
            if index < groups.count - 1 {
                backward(pending, gradientsFinal: nil)
                online.resetActivations()
            } else {
                last = pending
            }
        }
        // The logged loss is the global batch's: every rank's local mean, averaged over ranks.
        // Every rank then agrees on it, so a non-finite loss stops every rank in the same step.
        losses = try averagedOverRanks(losses)
        let total = Self.weightedSum(losses, weights: groups.map(\.weight))
        guard total.loss.total.isFinite else { throw TrainingError.nonFinite(step: step, what: "the loss (\(total.loss.total))") }

        reducer.beginStep()
        var reduceError: Error?
        backward(last!) { [reducer] offset in
            guard reduceError == nil else { return }
            do { try reducer.gradientsFinal(from: offset) } catch { reduceError = error }
        }
        if let reduceError { throw reduceError }
        try reducer.finish()
        let norm = try checkedGradientNorm(step: step)
        let lr = learningRate.value(at: step), gamma = momentum.value(at: step)
        optimizer.step(model.online, learningRate: Float(lr), pool: pool)
        ExponentialMovingAverage.update(average: model.target, toward: model.online, momentum: Float(gamma),
                                        count: model.targetFloats, pool: pool)
        return Result(loss: total.loss, learningRate: lr, momentum: gamma, gradientNorm: norm, supervised: total.supervised,
                      groups: losses, overlappedBuckets: reducer.overlappedBuckets, buckets: reducer.buckets.count,
                      allReduceWaitSeconds: reducer.waitSeconds)
    }

    // MARK: - One group

    /// What a group's backward pass needs: the gradients of its online outputs, in the order of
    /// the forward passes that made them (large views, small views, cross-modal views).
    struct PendingBackward {
        var dLarge: Tensor
        var dLogits: Tensor?
        var dLater: [Tensor]
    }

    /// Target and online forward passes of a group and its objective.
    func forward(_ group: MultiViewBatch) throws -> (GroupLoss, PendingBackward) {
        let rows = group.rows(rank: communicator.rank, worldSize: communicator.worldSize)
        let supervisedHead = objective == .relicv2 ? nil : group.dataset
        guard objective != .supervised else {
            let (predictions, logits) = model.predict(group.large, online, dataset: supervisedHead)
            let (crossEntropy, dLogits) = supervisedLoss(logits!, group: group, rows: rows)
            let pending = PendingBackward(dLarge: online.tensor(predictions.shape, zeroed: true), dLogits: dLogits, dLater: [])
            return (GroupLoss(dataset: group.dataset, loss: .init(total: crossEntropy, contrastive: 0, divergence: 0),
                              supervised: crossEntropy), pending)
        }
        guard let relic = objectives[group.dataset] else {
            throw TrainingError.unsupported("a \(group.dataset) group reached a step built for \(objectives.keys.sorted())")
        }
        // The target network first: once its projections are gathered and kept its activations
        // are dead, and the online network's forward and backward reuse that memory.
        try relic.takeTargets(model.project(group.large, target), views: group.largeViews, rows: rows, gather: gather)
        online.resetActivations()
        let (largePredictions, largeLogits) = model.predict(group.large, online, dataset: supervisedHead)
        var anchors = [AnchorViews(predictions: largePredictions, views: group.largeViews,
                                   skippedTargets: Array(0..<group.largeViews))]
        if let small = group.small {
            anchors.append(AnchorViews(predictions: model.predict(small, online).predictions, views: group.smallViews,
                                       skippedTargets: [Int?](repeating: nil, count: group.smallViews)))
        }
        if let crossModal = group.crossModal {
            // Cut from large view 0: paired with the other large views' targets only.
            anchors.append(AnchorViews(predictions: model.predict(crossModal, online).predictions, views: 1, skippedTargets: [0]))
        }
        let (value, gradients) = try relic.lossAndGradients(anchors, rows: rows, weight: group.weight, gather: gather,
                                                            allocate: { online.tensor($0, zeroed: true) }, pool: pool)
        var crossEntropy: Float = 0, dLogits: Tensor?, loss = value
        if let largeLogits { (crossEntropy, dLogits) = supervisedLoss(largeLogits, group: group, rows: rows) }
        // The total includes the supervised term (0 without heads), as the optimiser sees it.
        loss.total += crossEntropy
        return (GroupLoss(dataset: group.dataset, loss: loss, supervised: crossEntropy),
                PendingBackward(dLarge: gradients[0], dLogits: dLogits, dLater: Array(gradients.dropFirst())))
    }

    /// Backward in reverse order of the group's forward passes; the large views' pass (the
    /// first forward, so the last backward) reports finished gradients to `gradientsFinal`.
    func backward(_ pending: PendingBackward, gradientsFinal: ((Int) -> Void)?) {
        online.backward {
            for gradient in pending.dLater.reversed() { model.backward(gradient, online) }
            online.gradientsFinal = gradientsFinal
            model.backward(pending.dLarge, dLogits: pending.dLogits, online)
            online.gradientsFinal = nil
        }
    }

    /// Mean cross-entropy of the classifier logits of every large view against the samples'
    /// labels, and its gradient (scaled by the group's weight and, when ranks hold different
    /// numbers of samples, to this rank's share of the global mean).
    func supervisedLoss(_ logits: Tensor, group: MultiViewBatch, rows: GroupRows) -> (Float, Tensor) {
        let labels = Array([[Int32]](repeating: group.labels, count: group.largeViews).joined())
        let probabilities = online.tensor(logits.shape), dLogits = online.tensor(logits.shape, zeroed: true)
        var value = CrossEntropy.lossAndGradient(dLogits: dLogits.pointer, probabilities: probabilities.pointer,
                                                 logits: logits.pointer, labels: labels, classes: logits.shape[1], pool: pool)
        let share = Float(rows.local) / rows.rowsPerMean
        if share != 1 { value *= share }
        let scale = share * group.weight
        if scale != 1 { for i in 0..<dLogits.count { dLogits.pointer[i] *= scale } }
        return (value, dLogits)
    }

    // MARK: - Across ranks

    /// Per view, the (global, D) matrix of every rank's rows in rank order. Gathered as a sum of
    /// zero-padded buffers, which is exact (each element has one non-zero contribution) and
    /// needs no per-rank counts: each rank writes its rows at its offset.
    func gather(_ stacked: Tensor, views: Int, rows: GroupRows) throws -> [Tensor] {
        guard communicator.worldSize > 1 else { return ReLICv2Objective.split(stacked, views: views, rows: rows.local) }
        let d = stacked.shape[1]
        let buffer = online.tensor([views, rows.global, d], zeroed: true)
        for v in 0..<views {
            (buffer.pointer + (v * rows.global + rows.offset) * d).update(from: stacked.pointer + v * rows.local * d,
                                                                          count: rows.local * d)
        }
        try communicator.allReduceSum(buffer.buffer)
        return (0..<views).map { buffer.slice($0..<($0 + 1)).reshaped([rows.global, d]) }
    }

    /// Each group's losses averaged over ranks in one collective.
    func averagedOverRanks(_ losses: [GroupLoss]) throws -> [GroupLoss] {
        let world = communicator.worldSize
        guard world > 1 else { return losses }
        var parts = losses.flatMap { [$0.loss.total, $0.loss.contrastive, $0.loss.divergence, $0.supervised] }
        var scratch = [Float](repeating: 0, count: communicator.scratchFloats(for: parts.count))
        try parts.withUnsafeMutableBufferPointer { buffer in
            try scratch.withUnsafeMutableBufferPointer { try communicator.startDeterministicSum(buffer, scratch: $0).wait() }
        }
        let mean = parts.map { $0 / Float(world) }
        return losses.indices.map { g in
            GroupLoss(dataset: losses[g].dataset,
                      loss: ReLICv2Loss.Value(total: mean[4 * g], contrastive: mean[4 * g + 1], divergence: mean[4 * g + 2]),
                      supervised: mean[4 * g + 3])
        }
    }

    /// Σ_g w_g · loss_g (a single group's loss as it is: its weight is 1).
    static func weightedSum(_ losses: [GroupLoss], weights: [Float]) -> GroupLoss {
        guard losses.count > 1 else { return losses[0] }
        var sum = GroupLoss(dataset: "all", loss: .init(total: 0, contrastive: 0, divergence: 0), supervised: 0)
        for (loss, w) in zip(losses, weights) {
            sum.loss.total += w * loss.loss.total
            sum.loss.contrastive += w * loss.loss.contrastive
            sum.loss.divergence += w * loss.loss.divergence
            sum.supervised += w * loss.supervised
        }
        return sum
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
}
