import Foundation

/// Makes one rank's batches ahead of the trainer on background threads.
///
/// `workers` threads each own a `DecodeContext` and make whole batches: worker k makes the
/// steps it claims in order, at most `depth` batches are made but not yet taken, and `next()`
/// hands them out in step order. Because every batch is a pure function of its step
/// (`DataPipeline.batch`), which thread made it changes nothing.
public final class DataLoader: @unchecked Sendable {
    public let pipeline: DataPipeline
    public let rank: Int
    public let worldSize: Int
    private let shared: Shared
    private var threads: [Thread] = []

    final class Shared: @unchecked Sendable {
        let condition = NSCondition()
        var nextToTake: Int
        var nextToClaim: Int
        var ready: [Int: Result<Batch, Error>] = [:]
        var stopped = false
        var running = 0
        let depth: Int
        init(start: Int, depth: Int) { nextToTake = start; nextToClaim = start; self.depth = depth }
    }

    /// Starts the workers at the saved `state` (`LoaderState.start` for a new run).
    public init(pipeline: DataPipeline, rank: Int = 0, worldSize: Int = 1, state: LoaderState = .start,
                workers: Int? = nil, depth: Int? = nil) throws {
        let workers = max(1, workers ?? pipeline.configuration.workers)
        let depth = max(workers, depth ?? pipeline.configuration.prefetch)
        self.pipeline = pipeline
        self.rank = rank
        self.worldSize = worldSize
        self.shared = Shared(start: try pipeline.resume(from: state), depth: depth)
        let shared = self.shared
        for k in 0..<workers {
            let thread = Thread {
                DataLoader.work(shared: shared, pipeline: pipeline, rank: rank, worldSize: worldSize)
            }
            thread.name = "kaleido-data-\(rank)-\(k)"
            thread.stackSize = 4 << 20
            shared.condition.lock()
            shared.running += 1
            shared.condition.unlock()
            threads.append(thread)
            thread.start()
        }
    }

    deinit { stop() }

    private static func work(shared: Shared, pipeline: DataPipeline, rank: Int, worldSize: Int) {
        let context = DecodeContext()
        shared.condition.lock()
        while true {
            while !shared.stopped && shared.nextToClaim - shared.nextToTake >= shared.depth { shared.condition.wait() }
            if shared.stopped { break }
            let step = shared.nextToClaim
            shared.nextToClaim += 1
            shared.condition.unlock()
            let result = Result { try pipeline.batch(step, rank: rank, worldSize: worldSize, context: context) }
            shared.condition.lock()
            shared.ready[step] = result
            shared.condition.broadcast()
        }
        shared.running -= 1
        shared.condition.broadcast()
        shared.condition.unlock()
    }

    /// The next batch, waiting for it if the workers are behind. A `DataError` from making it
    /// (e.g. a run of unreadable files) is rethrown here.
    public func next() throws -> Batch {
        shared.condition.lock()
        defer { shared.condition.unlock() }
        let step = shared.nextToTake
        while shared.ready[step] == nil { shared.condition.wait() }
        let result = shared.ready.removeValue(forKey: step)!
        shared.nextToTake += 1
        shared.condition.broadcast()
        return try result.get()
    }

    /// The state to save in a checkpoint: where the next `next()` continues.
    public var state: LoaderState {
        shared.condition.lock()
        let step = shared.nextToTake
        shared.condition.unlock()
        return pipeline.state(at: step)
    }

    /// Stops the workers and waits for them (a batch being made is finished first).
    public func stop() {
        shared.condition.lock()
        shared.stopped = true
        shared.condition.broadcast()
        while shared.running > 0 { shared.condition.wait() }
        shared.condition.unlock()
    }
}
