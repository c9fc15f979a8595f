import Foundation
import KaleidoDist
import KaleidoTensor

/// Gradient all-reduce on this machine or cluster: time per step for several bucket caps, and
/// a check that every cap gives bit-identical results.
public struct AllReduceBench {
    public var floats: Int
    public var tensorFloats: Int
    public var repetitions: Int

    /// - Parameters:
    ///   - floats: size of the simulated gradient arena (11 M floats ≈ 44 MB, ResNet-18).
    ///   - tensorFloats: size of each simulated parameter tensor.
    public init(floats: Int = 11_000_000, tensorFloats: Int = 250_000, repetitions: Int = 5) {
        self.floats = floats
        self.tensorFloats = tensorFloats
        self.repetitions = repetitions
    }

    public struct Measurement: Codable, Sendable {
        public var cap: String
        public var buckets: Int
        public var milliseconds: Double
        public var checksum: String
        public var worldSize: Int
    }

    public static let caps: [BucketCap] = [.perTensor, .bytes(1 << 20), .bytes(4 << 20), .bytes(25 << 20), .unbounded]

    /// Runs every cap on the same rank-dependent gradients; returns one measurement per cap.
    public mutating func run(communicator: Communicator, caps: [BucketCap] = AllReduceBench.caps) throws -> [Measurement] {
        let tensors = stride(from: 0, to: floats, by: tensorFloats).map { $0..<min(floats, $0 + tensorFloats) }
        let gradients = Tensor(zeros: [floats])
        var results: [Measurement] = []
        for cap in caps {
            let reducer = GradientReducer(tensors: tensors, gradients: gradients.pointer, cap: cap, communicator: communicator)
            var best = Double.infinity
            for _ in 0..<repetitions {
                fill(gradients, rank: communicator.rank)
                try communicator.barrier()
                let start = DispatchTime.now().uptimeNanoseconds
                reducer.beginStep()
                try reducer.finish()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            results.append(Measurement(cap: cap.description, buckets: reducer.buckets.count, milliseconds: best,
                                       checksum: Self.checksum(gradients), worldSize: communicator.worldSize))
        }
        // Baseline: MPI's own blocking all-reduce of the whole arena (order not guaranteed).
        var best = Double.infinity
        for _ in 0..<repetitions {
            fill(gradients, rank: communicator.rank)
            try communicator.barrier()
            let start = DispatchTime.now().uptimeNanoseconds
            try communicator.allReduceSum(gradients.buffer)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        baseline = Measurement(cap: "MPI_Allreduce (baseline)", buckets: 1, milliseconds: best, checksum: "-",
                               worldSize: communicator.worldSize)
        return results
    }

    /// MPI_Allreduce of the whole arena in one call, from the last `run`.
    public private(set) var baseline: Measurement?

    /// Values whose float sums depend on the order of addition, so a change of order shows.
    func fill(_ gradients: Tensor, rank: Int) {
        var rng = SplitMix64(keys: 12345, UInt64(rank))
        for i in 0..<gradients.count { gradients.pointer[i] = rng.normal() * Float(1 << (i % 13)) }
    }

    /// The replicas' fingerprint (FNV-1a over the bit patterns), in hex.
    static func checksum(_ tensor: Tensor) -> String {
        String(FNV1a.hash(UnsafeBufferPointer(tensor.buffer)), radix: 16)
    }
}
