import Foundation
import Testing
@testable import KaleidoDist

@Suite struct InProcessCommunicatorTests {
    /// A count no world size divides, so ranks own parts of different sizes.
    static let count = 1001

    @Test(arguments: [2, 3, 4])
    func deterministicSumIsTheRankOrderSumBitForBit(ranks: Int) throws {
        let copies = (0..<ranks).map { ReductionFixtures.gradients(count: Self.count, seed: UInt64($0)) }
        let expected = ReductionFixtures.rankOrderSum(copies)
        if ranks > 2 {
            // Otherwise the test could not tell rank order from any other (a + b = b + a exactly).
            let reversed = ReductionFixtures.rankOrderSum(copies.reversed())
            try #require(ReductionFixtures.difference(reversed, from: expected) != nil)
        }
        for stream in [ReductionStream.immediate, .overlapped] {
            let results = try InProcessWorld.run(ranks: ranks) { communicator in
                var buffer = copies[communicator.rank]
                var scratch = [Float](repeating: .nan, count: communicator.scratchFloats(for: buffer.count))
                try buffer.withUnsafeMutableBufferPointer { buffer in
                    try scratch.withUnsafeMutableBufferPointer { scratch in
                        try communicator.startDeterministicSum(buffer, scratch: scratch, stream: stream).wait()
                    }
                }
                return buffer
            }
            for (rank, result) in results.enumerated() {
                #expect(ReductionFixtures.difference(result, from: expected) == nil, "rank \(rank), \(stream)")
            }
        }
    }

    /// The reducer overlaps communication with backward only if a sum can be started now and
    /// completed later, without blocking in between.
    @Test func deterministicSumCompletesOnlyOnceEveryRankStartedIt() throws {
        let progressBeforePeer = try InProcessWorld.run(ranks: 2) { communicator in
            var buffer: [Float] = [Float(communicator.rank + 1), 10]
            var scratch = [Float](repeating: 0, count: communicator.scratchFloats(for: 2))
            return try buffer.withUnsafeMutableBufferPointer { buffer in
                try scratch.withUnsafeMutableBufferPointer { scratch in
                    var early: Bool?
                    if communicator.rank == 0 {
                        let sum = try communicator.startDeterministicSum(buffer, scratch: scratch)
                        early = try sum.progress()   // rank 1 is held at the barrier below
                        try communicator.barrier()
                        try sum.wait()
                        #expect(try sum.progress())
                    } else {
                        try communicator.barrier()
                        try communicator.startDeterministicSum(buffer, scratch: scratch).wait()
                    }
                    #expect(Array(buffer) == [3, 20])
                    return early
                }
            }
        }
        #expect(progressBeforePeer[0] == false)
    }

    @Test func blockingCollectivesCombineEveryRank() throws {
        let results = try InProcessWorld.run(ranks: 4) { communicator in
            let rank = communicator.rank
            var floats: [Float] = [Float(rank), 1]
            try floats.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
            var words: [UInt64] = [UInt64(rank), UInt64.max]
            try words.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
            var bytes: [UInt8] = rank == 2 ? [7, 8, 9] : [0, 0, 0]
            try bytes.withUnsafeMutableBytes { try communicator.broadcast($0, root: 2) }
            try communicator.barrier()
            return (floats, words, bytes)
        }
        for (floats, words, bytes) in results {
            #expect(floats == [6, 4])
            #expect(words == [6, UInt64.max &* 4])   // wraps, as MPI_SUM over uint64 does
            #expect(bytes == [7, 8, 9])
        }
    }

    @Test func replicaConsistencyRestoresRankZerosCopy() throws {
        let results = try InProcessWorld.run(ranks: 3) { communicator in
            var weights: [Float] = communicator.rank == 2 ? [1, 2, 99] : [1, 2, 3]
            let replaced = try weights.withUnsafeMutableBufferPointer {
                try ReplicaConsistency.enforce($0, compared: [0..<3], communicator: communicator)
            }
            return (replaced, weights)
        }
        for (replaced, weights) in results {
            #expect(replaced == [2])
            #expect(weights == [1, 2, 3])
        }
    }

    @Test func aRankThatNeverJoinsIsNamedInsteadOfHanging() throws {
        let error = try #require(throws: InProcessCollectiveError.self) {
            _ = try InProcessWorld.run(ranks: 3) { communicator in
                guard communicator.rank != 1 else { return }
                try communicator.barrier()
            }
        }
        #expect(error.cause == .ranksLeft)
        #expect(error.missingRanks == [1])
    }

    @Test func aStalledRankIsNamedWhenTheTimeoutPasses() throws {
        // Rank 1 is stuck until rank 0 has given up on it (at most 10 s, should that never happen).
        let rankZeroGaveUp = DispatchSemaphore(value: 0)
        let error = try #require(throws: InProcessCollectiveError.self) {
            _ = try InProcessWorld.run(ranks: 2) { communicator in
                communicator.setTimeout(0.05)
                communicator.enterStep(7)
                if communicator.rank == 1 {
                    _ = rankZeroGaveUp.wait(timeout: .now() + 10)
                    try communicator.barrier()
                } else {
                    defer { rankZeroGaveUp.signal() }
                    try communicator.barrier()
                }
            }
        }
        #expect(error.cause == .timedOut)
        #expect(error.rank == 0 && error.missingRanks == [1] && error.step == 7)
        #expect(error.description.contains("rank(s) 1 of step 7"))
    }

    @Test func mismatchedCollectivesFailInsteadOfPairing() throws {
        let error = try #require(throws: InProcessCollectiveError.self) {
            _ = try InProcessWorld.run(ranks: 2) { communicator in
                var values: [Float] = [1, 2, 3]
                var scratch = [Float](repeating: 0, count: 4)
                // Rank 1 reduces a different bucket size at the same position in the stream.
                let count = communicator.rank == 0 ? 3 : 2
                try values.withUnsafeMutableBufferPointer { values in
                    try scratch.withUnsafeMutableBufferPointer { scratch in
                        let bucket = UnsafeMutableBufferPointer(rebasing: values[0..<count])
                        try communicator.startDeterministicSum(bucket, scratch: scratch, stream: .overlapped).wait()
                    }
                }
            }
        }
        #expect(error.cause == .mismatched)
    }

    @Test func aRanksOwnErrorIsRethrownAndStopsTheOthers() throws {
        struct LoaderFailed: Error {}
        #expect(throws: LoaderFailed.self) {
            _ = try InProcessWorld.run(ranks: 3) { communicator in
                if communicator.rank == 2 { throw LoaderFailed() }
                try communicator.barrier()
            }
        }
    }
}
