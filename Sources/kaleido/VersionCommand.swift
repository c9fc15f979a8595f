import ArgumentParser
import Foundation
import KaleidoTrain

extension Kaleido {
    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print Kaleido's version and the system libraries actually linked and loaded.")

        @Flag(help: "Print one JSON object instead of a table.")
        var json = false

        func run() throws {
            let linked = LinkedLibraries.probe()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                encoder.keyEncodingStrategy = .convertToSnakeCase
                print(String(decoding: try encoder.encode(linked), as: UTF8.self))
                return
            }
            let width = linked.table.map(\.0.count).max() ?? 0
            for (key, value) in linked.table {
                print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
            }
        }
    }
}
