import KaleidoTensor

/// Where one modality group's rows sit among every rank's rows. Ranks may hold different
/// numbers of a group's samples (a joint step's video group of 5 on 2 ranks is 2 + 3), so the
/// offset and the global count are given, not derived from the rank.
public struct GroupRows: Sendable, Equatable {
    /// Samples of the group on this rank, the index of the first of them in the group over all
    /// ranks, the group's samples over all ranks, and the number of ranks.
    public var local: Int
    public var offset: Int
    public var global: Int
    public var ranks: Int

    public init(local: Int, offset: Int, global: Int, ranks: Int) {
        precondition(local >= 1 && offset >= 0 && offset + local <= global && ranks >= 1,
                     "group rows \(local) at \(offset) of \(global) over \(ranks) ranks")
        self.local = local
        self.offset = offset
        self.global = global
        self.ranks = ranks
    }

    /// One process holding the whole group.
    public static func single(_ samples: Int) -> GroupRows { GroupRows(local: samples, offset: 0, global: samples, ranks: 1) }

    /// What this rank's mean stands for: averaging the ranks' means then gives the global mean.
    public var rowsPerMean: Float { Float(global) / Float(ranks) }
}

/// Gathers the view-stacked rows (V·local, D) of every rank into V matrices (global, D), rows in
/// rank order. The trainer passes one that runs over its communicator; KaleidoSSL knows no MPI.
public typealias RowGather = (_ stacked: Tensor, _ views: Int, _ rows: GroupRows) throws -> [Tensor]

/// Online predictions of some views of a group, stacked view-major (V·local, D), and for each
/// view the target view it must not be paired with (a large view is not paired with itself,
/// nor a view cut from it).
public struct AnchorViews {
    public var predictions: Tensor
    public var views: Int
    public var skippedTargets: [Int?]

    public init(predictions: Tensor, views: Int, skippedTargets: [Int?]) {
        precondition(skippedTargets.count == views, "one skipped target per view")
        self.predictions = predictions
        self.views = views
        self.skippedTargets = skippedTargets
    }
}

/// The ReLICv2 objective of one modality group: target projections and online predictions in,
/// loss and prediction gradients out. It owns what outlives a step's activations: the gathered
/// targets of the current step and the negative queue (one per group, so a video's negatives
/// are videos). The loss itself is `ReLICv2Loss`.
public final class ReLICv2Objective {
    public let loss: ReLICv2Loss
    /// Past target projections used as extra negatives, newest last; identical on every rank.
    public let queue: NegativeQueue?
    /// The gathered targets of the current step, per large view (global, D), copied out of the
    /// activation arena so the online passes can reuse that memory.
    private var kept = Tensor(zeros: [0])
    private var targets: [Tensor] = []

    public init(loss: ReLICv2Loss, queueCapacity: Int, dimension: Int) {
        self.loss = loss
        queue = queueCapacity > 0 ? NegativeQueue(capacity: queueCapacity, dimension: dimension) : nil
    }

    /// Takes the target projections (L·local, D) of the large views: every rank's are gathered
    /// (every rank sees the whole group as candidates) and kept for `lossAndGradients`.
    public func takeTargets(_ projections: Tensor, views: Int, rows: GroupRows, gather: RowGather) throws {
        let gathered = try gather(projections, views, rows)
        let each = gathered.first?.shape ?? [0, 0]
        let total = gathered.count * each.reduce(1, *)
        if kept.count != total { kept = Tensor(zeros: [gathered.count] + each) }
        for (v, view) in gathered.enumerated() { (kept.pointer + v * view.count).update(from: view.pointer, count: view.count) }
        targets = (0..<gathered.count).map { kept.slice($0..<($0 + 1)).reshaped(each) }
    }

    /// The loss of the anchors against the kept targets and the queue, and per anchor group
    /// its prediction gradient (same shape, from `allocate`), scaled by `weight`. The online
    /// predictions are gathered too (without gradient): the reverse distribution reads them.
    /// Then this step's targets join the queue.
    public func lossAndGradients(_ anchors: [AnchorViews], rows: GroupRows, weight: Float = 1, gather: RowGather,
                                 allocate: ([Int]) -> Tensor, pool: ComputePool) throws -> (ReLICv2Loss.Value, [Tensor]) {
        precondition(!targets.isEmpty, "takeTargets comes before lossAndGradients")
        var predictions: [Tensor] = [], globalPredictions: [Tensor] = [], dPredictions: [Tensor] = [], skipped: [Int?] = []
        var gradients: [Tensor] = []
        for anchor in anchors {
            predictions += Self.split(anchor.predictions, views: anchor.views, rows: rows.local)
            globalPredictions += try gather(anchor.predictions, anchor.views, rows)
            let gradient = allocate(anchor.predictions.shape)
            dPredictions += Self.split(gradient, views: anchor.views, rows: rows.local)
            gradients.append(gradient)
            skipped += anchor.skippedTargets
        }
        let value = loss.compute(predictions: predictions, globalPredictions: globalPredictions, targets: targets,
                                 queue: queue?.contents, offset: rows.offset, dPredictions: dPredictions, skippedTargets: skipped,
                                 rowsPerMean: rows.rowsPerMean, weight: weight, pool: pool)
        queue?.push(targets)
        return (value, gradients)
    }

    /// Views of stacked rows: view v is rows [v·n, (v+1)·n).
    public static func split(_ stacked: Tensor, views: Int, rows n: Int) -> [Tensor] {
        (0..<views).map { stacked.slice(($0 * n)..<(($0 + 1) * n)) }
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
