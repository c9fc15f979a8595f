import Foundation
import KaleidoSafeTensors
import Testing
@testable import KaleidoTensor

/// A PyTorch reference case written by tools/fixtures/make_kernel_fixtures.py: float32 inputs,
/// parameters, outputs, the upstream gradient `dout` and the `grad_<name>` gradients, already in
/// Kaleido's channels-last layouts, with the hyper-parameters as strings in the metadata.
struct Fixture {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    let name: String
    let file: SafeTensorsFile

    init(_ name: String) throws {
        self.name = name
        file = try SafeTensorsFile(contentsOf: Self.directory.appendingPathComponent("\(name).safetensors"))
    }

    /// Tensor `key` as Float32, row-major.
    func values(_ key: String) throws -> [Float] { try file.floats(key).values }

    func shape(_ key: String) throws -> [Int] { try file.entry(key).shape }

    /// Tensor `key` as Int32 (class labels).
    func labels(_ key: String) throws -> [Int32] { try file.integers(key).values.map { Int32($0) } }

    func has(_ key: String) -> Bool { file.tensors[key] != nil }

    /// Metadata `key` as an integer.
    func int(_ key: String) throws -> Int {
        guard let text = file.metadata[key], let value = Int(text) else {
            throw FixtureError(description: "\(name): metadata '\(key)' is missing or not an integer")
        }
        return value
    }

    func float(_ key: String) throws -> Float {
        guard let text = file.metadata[key], let value = Float(text) else {
            throw FixtureError(description: "\(name): metadata '\(key)' is missing or not a number")
        }
        return value
    }

    /// A zero-filled buffer with the shape of tensor `key` (for outputs and gradients).
    func zeros(like key: String) throws -> Tensor { Tensor(zeros: try shape(key)) }

    /// A buffer of `key`'s shape full of NaN: for a gradient the kernel must write, not add to,
    /// so that any read of its old contents shows in the result.
    func unwritten(like key: String) throws -> Tensor {
        let tensor = try zeros(like: key)
        tensor.pointer.update(repeating: .nan, count: tensor.count)
        return tensor
    }

    /// Compares `got` with the reference tensor `key`.
    func expectClose(_ got: Tensor, _ key: String, tolerance: Double = Parity.tolerance,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        try expectClose(got.array, key, tolerance: tolerance, sourceLocation: sourceLocation)
    }

    func expectClose(_ got: [Float], _ key: String, tolerance: Double = Parity.tolerance,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        Parity.expectClose(got, try values(key), "\(name).\(key)", tolerance: tolerance, sourceLocation: sourceLocation)
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
}

enum Parity {
    /// Max abs error allowed relative to the reference's scale: |got − ref|∞ ≤ tol · (1 + |ref|∞).
    /// The references are computed in float64 and rounded to float32; the kernels run in float32
    /// with sums of at most a few hundred terms, whose rounding error is ~1e-6 relative, so 1e-4
    /// leaves two orders of magnitude of headroom and still catches any indexing or formula slip.
    static let tolerance = 1e-4

    static func expectClose(_ got: [Float], _ reference: [Float], _ what: String, tolerance: Double = tolerance,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        guard got.count == reference.count else {
            Issue.record("\(what): \(got.count) values, reference has \(reference.count)", sourceLocation: sourceLocation)
            return
        }
        var worst = 0.0, worstIndex = 0, scale = 0.0
        for (i, (g, r)) in zip(got, reference).enumerated() {
            scale = max(scale, abs(Double(r)))
            let error = abs(Double(g) - Double(r))
            // NaN in the result must fail, so compare with `!(error <= worst)` semantics.
            if !(error <= worst) { worst = error.isNaN ? .infinity : error; worstIndex = i }
        }
        let allowed = tolerance * (1 + scale)
        #expect(worst <= allowed,
                "\(what): max |error| \(worst) at [\(worstIndex)] (got \(got[worstIndex]), expected \(reference[worstIndex])), allowed \(allowed)",
                sourceLocation: sourceLocation)
    }
}
