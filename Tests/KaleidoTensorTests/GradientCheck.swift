import Testing
@testable import KaleidoTensor

/// Finite-difference check of a kernel's backward.
///
/// The scalar checked is L = Σ out ⊙ R for a fixed random R, so dL/dout = R is what the backward
/// receives. For sampled coordinates x_i of each input the numeric derivative is
/// (L(x_i + ε) − L(x_i − ε)) / 2ε, with L summed in Float64. Kernels run in Float32, so with
/// ε = 1e-2 on O(1) inputs the central difference is accurate to about 1e-3 relative; the
/// default tolerance |analytic − numeric| ≤ 2e-3 + 2e-2·max(|analytic|, |numeric|) states that.
struct GradientCheck {
    var epsilon: Float = 1e-2
    var absoluteTolerance: Double = 2e-3
    var relativeTolerance: Double = 2e-2
    /// Coordinates checked per input (all of them when the input is smaller).
    var samplesPerInput = 40

    /// - Parameters:
    ///   - inputs: named inputs (and parameters) the gradient is taken with respect to.
    ///   - forward: computes the output from the inputs.
    ///   - backward: given the inputs and dL/dout, returns dL/d(input) for each name it checks.
    func run(
        inputs: [String: [Float]],
        forward: ([String: [Float]]) -> [Float],
        backward: ([String: [Float]], [Float]) -> [String: [Float]],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        var rng = SplitMix64(seed: 1234)
        let output = forward(inputs)
        let weights = output.map { _ in rng.normal() }
        let analytic = backward(inputs, weights)

        func loss(_ values: [String: [Float]]) -> Double {
            zip(forward(values), weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }

        for (name, gradient) in analytic.sorted(by: { $0.key < $1.key }) {
            guard let input = inputs[name] else {
                Issue.record("backward returned a gradient for unknown input \(name)", sourceLocation: sourceLocation)
                continue
            }
            #expect(gradient.count == input.count, "gradient of \(name) has \(gradient.count) values for \(input.count) inputs",
                    sourceLocation: sourceLocation)
            let indices = input.count <= samplesPerInput
                ? Array(0..<input.count)
                : (0..<samplesPerInput).map { _ in Int(rng.next() % UInt64(input.count)) }
            var worst = 0.0
            for index in indices {
                var plus = inputs, minus = inputs
                plus[name]![index] += epsilon
                minus[name]![index] -= epsilon
                let numeric = (loss(plus) - loss(minus)) / (2 * Double(epsilon))
                let value = Double(gradient[index])
                let error = abs(value - numeric)
                let allowed = absoluteTolerance + relativeTolerance * max(abs(value), abs(numeric))
                worst = max(worst, error / allowed)
                if error > allowed {
                    Issue.record("d\(name)[\(index)]: analytic \(value), numeric \(numeric)", sourceLocation: sourceLocation)
                    return
                }
            }
        }
    }
}

/// Random values in [-1, 1] from a fixed seed, for test inputs.
func randomValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in (rng.uniform() * 2 - 1) * scale }
}

/// Runs `body` with mutable pointers to copies of `arrays`, returning the (possibly modified) copies.
func withPointers(_ arrays: [[Float]], _ body: ([UnsafeMutablePointer<Float>]) -> Void) -> [[Float]] {
    let tensors = arrays.map { Tensor(shape: [$0.count], values: $0) }
    body(tensors.map(\.pointer))
    return tensors.map(\.array)
}

/// Like `withPointers`, plus zeroed scratch buffers of the given sizes (workspaces, caches) that
/// stay alive until `body` returns — a pointer taken from a temporary tensor would dangle.
func withPointers(_ arrays: [[Float]], scratch sizes: [Int],
                  _ body: ([UnsafeMutablePointer<Float>], [UnsafeMutablePointer<Float>]) -> Void) -> [[Float]] {
    let scratch = sizes.map { Tensor(zeros: [$0]) }
    return withExtendedLifetime(scratch) {
        withPointers(arrays) { body($0, scratch.map(\.pointer)) }
    }
}
