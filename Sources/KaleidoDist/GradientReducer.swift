import Foundation

/// How gradients are grouped into all-reduce buckets.
public enum BucketCap: Sendable, Equatable, CustomStringConvertible {
    /// Every parameter tensor alone.
    case perTensor
    /// Consecutive tensors up to this many bytes (a tensor larger than the cap is one bucket).
    case bytes(Int)
    /// Everything in one reduction.
    case unbounded

    public var description: String {
        switch self {
        case .perTensor: return "one tensor per bucket"
        case .bytes(let bytes): return String(format: "%g MiB", Double(bytes) / 1_048_576)
        case .unbounded: return "unbounded"
        }
    }
}

/// Averages a gradient arena over ranks in buckets, overlapping communication with backward.
///
/// Buckets cover the arena from its end, in reverse parameter order, because backward produces
/// the last layers' gradients first. During backward the trainer reports, after each layer, the
/// lowest arena offset whose gradients are final (`gradientsFinal(from:)`); every bucket lying
/// entirely above it starts its non-blocking reduction at once, and reductions already in flight
/// are advanced (MPI progresses only inside MPI calls). `finish()` starts what is left, waits,
/// and multiplies by 1/world size. Reductions are deterministic (see `startDeterministicSum`),
/// so the result does not depend on the bucket cap.
public final class GradientReducer {
    public let buckets: [Range<Int>]
    let communicator: Communicator
    let gradients: UnsafeMutablePointer<Float>
    private var scratch: [UnsafeMutableBufferPointer<Float>]
    private var pending: [PendingReduction?]
    private var nextBucket = 0
    /// Buckets whose reduction completed before `finish()` was called, in the last step.
    public private(set) var overlappedBuckets = 0
    /// Seconds spent blocked in `finish()` in the last step.
    public private(set) var waitSeconds = 0.0

    /// - Parameters:
    ///   - tensors: the arena's entries as float ranges, in arena order.
    ///   - gradients: the gradient arena (kept by the caller for the reducer's lifetime).
    public init(tensors: [Range<Int>], gradients: UnsafeMutablePointer<Float>, cap: BucketCap, communicator: Communicator) {
        self.communicator = communicator
        self.gradients = gradients
        var buckets: [Range<Int>] = []
        var current: Range<Int>?
        for tensor in tensors.reversed() where !tensor.isEmpty {
            if let open = current {
                let merged = tensor.lowerBound..<open.upperBound
                let fits: Bool
                switch cap {
                case .perTensor: fits = false
                case .bytes(let limit): fits = merged.count * MemoryLayout<Float>.size <= limit
                case .unbounded: fits = true
                }
                if fits { current = merged; continue }
                buckets.append(open)
            }
            current = tensor
        }
        if let open = current { buckets.append(open) }
        self.buckets = buckets
        scratch = buckets.map { bucket in
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, communicator.scratchFloats(for: bucket.count)))
            buffer.initialize(repeating: 0)
            return buffer
        }
        pending = Array(repeating: nil, count: buckets.count)
    }

    deinit { scratch.forEach { $0.deallocate() } }

    /// Call before the backward pass whose gradients will be reduced.
    public func beginStep() {
        nextBucket = 0
        overlappedBuckets = 0
        waitSeconds = 0
        for i in pending.indices { pending[i] = nil }
    }

    /// Gradients at arena offsets ≥ `offset` are final: start their buckets, advance the others.
    public func gradientsFinal(from offset: Int) throws {
        while nextBucket < buckets.count && buckets[nextBucket].lowerBound >= offset {
            try start(nextBucket)
        }
        try advance()
    }

    /// Starts every remaining bucket, waits for all, and averages.
    public func finish() throws {
        try advance()
        overlappedBuckets = pending.prefix(nextBucket).filter { $0 == nil }.count
        while nextBucket < buckets.count { try start(nextBucket) }
        let begin = DispatchTime.now().uptimeNanoseconds
        for index in pending.indices { try pending[index]?.wait(); pending[index] = nil }
        waitSeconds = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9
        let scale = 1 / Float(communicator.worldSize)
        if communicator.worldSize > 1 {
            for bucket in buckets { for i in bucket { gradients[i] *= scale } }
        }
    }

    private func start(_ index: Int) throws {
        let bucket = buckets[index]
        pending[index] = try communicator.startDeterministicSum(
            UnsafeMutableBufferPointer(start: gradients + bucket.lowerBound, count: bucket.count), scratch: scratch[index],
            stream: .overlapped)
        nextBucket += 1
    }

    /// Tests the reductions in flight in bucket order, stopping at the first one still busy:
    /// a reduction starts its second collective when it advances, and every rank must start
    /// those in the same order (`ReductionStream.overlapped`); a later bucket that finished its
    /// first collective early waits its turn. Completed ones are dropped.
    private func advance() throws {
        for index in 0..<nextBucket {
            guard let reduction = pending[index] else { continue }
            guard try reduction.progress() else { return }
            pending[index] = nil
        }
    }
}

/// A collective in flight. MPI only advances non-blocking operations inside MPI calls, so the
/// owner calls `progress()` between pieces of other work (after each layer's backward pass).
public protocol PendingReduction: AnyObject {
    /// Advances without blocking; true once the result is in the buffer.
    func progress() throws -> Bool
    /// Blocks until the result is in the buffer.
    func wait() throws
}

/// Already complete (a single process has nothing to reduce).
final class CompletedReduction: PendingReduction {
    func progress() throws -> Bool { true }
    func wait() throws {}
}

extension LocalCommunicator {
    /// A single process has nothing to sum, in any stream.
    public func startDeterministicSum(_ buffer: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>,
                                      stream: ReductionStream) throws -> PendingReduction {
        CompletedReduction()
    }
}
