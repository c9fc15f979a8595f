import ArgumentParser
import Foundation
import KaleidoTrain

extension Kaleido {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure Kaleido's speed on this machine.",
            subcommands: [Kernels.self, Step.self, AllReduce.self, DataLoading.self, Checkpoint.self])
    }
}

extension Kaleido.Bench {
    struct Kernels: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "GFLOP/s of conv 3×3, depthwise 7×7, window attention and raw sgemm, forward and backward.",
            discussion: """
            Every case runs in this one process, next to raw sgemm and the FMA peak of this build, so the
            ratios at the end are comparable even on a noisy machine. Build with -c release.
            """)

        @Option(help: "Threads for OpenBLAS and Kaleido's own loops (default: all cores).")
        var threads: Int = ProcessInfo.processInfo.activeProcessorCount

        @Option(help: "Images per batch for the convolution and attention shapes.")
        var batch: Int = 64

        @Option(help: "Seconds spent repeating each case; the fastest repetition counts.")
        var seconds: Double = 0.4

        @Option(help: "Comma-separated kernel families to run: sgemm, conv3x3, depthwise7x7, attention, linear, gelu, layernorm, batchnorm (these three: GFLOP/s are billions of elements a second) (default: all).")
        var only: String?

        @Flag(help: "Print JSON lines (one per case, then a summary) instead of a table.")
        var json = false

        func validate() throws {
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
            guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
            guard seconds > 0 else { throw ValidationError("--seconds must be positive, got \(seconds)") }
            let unknown = families.subtracting(KernelBench.families)
            guard unknown.isEmpty else {
                throw ValidationError("--only: unknown kernel family \(unknown.sorted().joined(separator: ", ")); "
                                      + "choose from \(KernelBench.families.sorted().joined(separator: ", "))")
            }
        }

        func run() throws {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            func line<T: Encodable>(_ value: T) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }

            if !json {
                print(pad("kernel", 18) + pad("shape", 26) + pad("pass", 17) + pad("ms", 10, right: true) + pad("GFLOP/s", 10, right: true))
            }
            let bench = KernelBench(threads: threads, batch: batch, secondsPerCase: seconds, only: families)
            let results = bench.run { m in
                if json {
                    print((try? line(m)) ?? "")
                } else {
                    print(pad(m.kernel, 18) + pad(m.shape, 26) + pad(m.pass, 17)
                          + pad(String(format: "%.3f", m.milliseconds), 10, right: true)
                          + pad(String(format: "%.1f", m.gflops), 10, right: true))
                }
                fflush(nil)  // show each case as it finishes, also through a pipe
            }
            let summary = KernelBenchSummary(results)
            if json {
                print(try line(summary))
            } else {
                print("")
                if let ratio = summary.conv3x3OfSgemm {
                    print(String(format: "conv 3×3 fwd+bwd (ResNet-18 CIFAR shapes) / sgemm:  %.0f%%  (bar ≥ 60%%)", ratio * 100))
                }
                if let ratio = summary.depthwiseOfPeak {
                    print(String(format: "depthwise 7×7 fwd+bwd / FMA peak:                  %.0f%%  (bar ≥ 25%%)", ratio * 100))
                }
            }
        }

        private var families: Set<String> {
            Set((only ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }

        private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - text.count))
            return right ? fill + text : text + fill
        }
    }
}
