import ArgumentParser
import Foundation
import KaleidoNN

extension Kaleido {
    struct Model: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inspect the backbones Kaleido can build.",
            subcommands: [List.self, Summary.self])
    }
}

extension Kaleido.Model {
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the model names configs and commands accept.")

        func run() {
            let width = ModelZoo.names.map(\.count).max() ?? 0
            for name in ModelZoo.names {
                print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + (ModelZoo.summary(of: name) ?? ""))
            }
        }
    }

    struct Summary: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a model's layers, output shapes, parameter counts and FLOPs.",
            discussion: "FLOPs count a multiply-add as two operations, for one forward pass of one sample.")

        @Argument(help: "Model name (see `kaleido model list`).")
        var name: String

        @Option(help: "Input side in pixels (default: the model's usual input).")
        var inputSize: Int?

        @Option(help: "Classifier outputs; 0 for the feature extractor.")
        var classes: Int = 1000

        @Option(help: "Levels of the layer tree to print.")
        var depth: Int = 2

        func validate() throws {
            guard ModelZoo.names.contains(name) else {
                throw ValidationError(ModelError.unknownModel(name, known: ModelZoo.names).description)
            }
            if let inputSize, inputSize < 1 { throw ValidationError("--input-size must be positive, got \(inputSize)") }
            let minimum = try ModelZoo.minimumInputSide(name)
            if let inputSize, inputSize < minimum.side {
                throw ValidationError("--input-size \(inputSize): \(name) needs at least \(minimum.side) pixels (\(minimum.reason))")
            }
            guard classes >= 0 else { throw ValidationError("--classes must be 0 or more, got \(classes)") }
        }

        func run() throws {
            let builder = ParameterBuilder()
            let built = try ModelZoo.make(name, options: ModelOptions(classes: classes), builder: builder)
            var input = built.exampleInputShape
            if let inputSize {
                input[input.count - 3] = inputSize
                input[input.count - 2] = inputSize
            }
            let description = built.network.describe(input)
            print("\(name): input \(shape(input))")
            print(pad("layer", 44) + pad("output", 22) + pad("params", 14, right: true) + pad("MFLOPs", 12, right: true))
            printTree(description, level: 0)
            let trainable = builder.specs.filter { $0.role.isTrainable }.reduce(0) { $0 + $1.count }
            let buffers = builder.specs.filter { !$0.role.isTrainable }.reduce(0) { $0 + $1.count }
            print("")
            print("parameters   \(grouped(trainable)) (\(String(format: "%.2f", Double(trainable) / 1e6)) M)")
            print("buffers      \(grouped(buffers))")
            print("tensors      \(builder.specs.count) named arrays")
            print("features     \(built.featureDimension)")
            print("GFLOPs       \(String(format: "%.3f", description.flops / 1e9)) per forward of one sample")
        }

        private func printTree(_ node: LayerDescription, level: Int) {
            guard level < depth else { return }
            let label = String(repeating: "  ", count: level) + node.name
            print(pad(label, 44) + pad(shape(node.outputShape), 22) + pad(grouped(node.parameters), 14, right: true)
                  + pad(String(format: "%.1f", node.flops / 1e6), 12, right: true))
            for child in node.children { printTree(child, level: level + 1) }
        }

        private func shape(_ dims: [Int]) -> String { "(" + dims.map(String.init).joined(separator: ", ") + ")" }

        private func grouped(_ n: Int) -> String {
            let digits = Array(String(n))
            return String(digits.enumerated().flatMap { index, digit in
                (index > 0 && (digits.count - index) % 3 == 0) ? [",", digit] : [digit]
            })
        }

        private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - text.count))
            return right ? fill + text : text + fill
        }
    }
}
