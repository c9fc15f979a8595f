import ArgumentParser
import Foundation
import KaleidoTrain

extension Kaleido.Bench {
    struct AllReduce: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "allreduce",
            abstract: "Time the bucketed gradient all-reduce for several bucket caps and check they agree bit for bit.",
            discussion: "Run under mpirun, e.g. `mpirun -np 2 kaleido bench allreduce`. Exits non-zero if two caps disagree.")

        @Option(help: "Floats in the simulated gradient arena.")
        var floats: Int = 11_000_000

        @Option(help: "Floats per simulated parameter tensor.")
        var tensorFloats: Int = 250_000

        @Option(help: "Repetitions per cap; the fastest counts.")
        var repetitions: Int = 5

        @Flag(help: "Print JSON lines instead of a table.")
        var json = false

        func validate() throws {
            guard floats >= 1, tensorFloats >= 1, repetitions >= 1 else {
                throw ValidationError("--floats, --tensor-floats and --repetitions must be positive")
            }
        }

        func run() throws {
            let communicator = try Distributed.communicator()
            defer { communicator.finalize() }
            var bench = AllReduceBench(floats: floats, tensorFloats: tensorFloats, repetitions: repetitions)
            let results = try bench.run(communicator: communicator)
            let identical = Set(results.map(\.checksum)).count == 1
            guard communicator.isCoordinator else { return }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            for result in results + [bench.baseline].compactMap({ $0 }) {
                if json {
                    print(String(decoding: try encoder.encode(result), as: UTF8.self))
                } else {
                    print(result.cap.padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: "%6d buckets  %9.2f ms  ", result.buckets, result.milliseconds) + result.checksum)
                }
            }
            if !json { print(identical ? "all caps bit-identical over \(communicator.worldSize) ranks" : "CAPS DISAGREE") }
            if !identical { throw ExitCode(1) }
        }
    }
}
