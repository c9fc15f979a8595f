import Testing
import KaleidoTensor
@testable import KaleidoNN

/// Finite-difference check of a whole network's backward pass.
///
/// The scalar checked is L = Σ out ⊙ R for a fixed random R. The network runs in training mode
/// (BatchNorm uses batch statistics, which are a deterministic function of the batch) with drop
/// path off. Derivatives are central differences with ε = 1e-3 on the input and on a sample of
/// parameters; a tolerance of |analytic − numeric| ≤ 5e-3 + 5e-2·max(|analytic|, |numeric|)
/// allows for Float32 forwards and for the occasional ReLU kink crossed by the step. (With
/// ε = 1e-2 a tiny ResNet's BatchNorm over 2–8 rows is too curved: 4–25% of the coordinates
/// disagree, all of them agreeing again at 3e-3 and below.)
struct ModelGradientCheck {
    var epsilon: Float = 1e-3
    var absoluteTolerance = 5e-3
    var relativeTolerance = 5e-2
    var inputSamples = 12
    var parameterSamples = 40
    /// Largest share of sampled coordinates allowed outside the tolerance (kinks).
    var allowedOutliers = 0.05

    func run(network: Layer, arena: ParameterArena, input: Tensor, sourceLocation: SourceLocation = #_sourceLocation) {
        let context = RunContext(arena: arena, pool: .serial, training: true)
        var rng = SplitMix64(seed: 99)

        func loss(weights: [Float]) -> Double {
            context.recordsForBackward = false
            defer { context.recordsForBackward = true; context.activations.reset() }
            let out = network.forward(input, context)
            return zip(out.array, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }

        // Analytic gradients.
        let output = network.forward(input, context)
        let weights = (0..<output.count).map { _ in rng.normal() }
        let dOutput = Tensor(shape: output.shape, values: weights)
        arena.zeroGradients()
        let dInput = network.backward(dOutput, context).array
        let parameterGradients = Array(UnsafeBufferPointer(start: arena.gradients.pointer, count: arena.count))
        context.activations.reset()

        var checked = 0, outliers = 0, firstFailure: String?
        func compare(_ what: String, analytic: Float, perturb: (Float) -> Void) {
            perturb(epsilon)
            let plus = loss(weights: weights)
            perturb(-2 * epsilon)
            let minus = loss(weights: weights)
            perturb(epsilon)
            let numeric = (plus - minus) / (2 * Double(epsilon))
            let value = Double(analytic)
            checked += 1
            if abs(value - numeric) > absoluteTolerance + relativeTolerance * max(abs(value), abs(numeric)) {
                outliers += 1
                firstFailure = firstFailure ?? "\(what): analytic \(value), numeric \(numeric)"
            }
        }

        for _ in 0..<inputSamples {
            let i = Int(rng.next() % UInt64(input.count))
            compare("input[\(i)]", analytic: dInput[i]) { input.pointer[i] += $0 }
        }
        let trainable = arena.entries.filter { $0.spec.role.isTrainable }
        for _ in 0..<parameterSamples {
            let entry = trainable[Int(rng.next() % UInt64(trainable.count))]
            let i = entry.offset + Int(rng.next() % UInt64(entry.count))
            compare("\(entry.spec.name)[\(i - entry.offset)]", analytic: parameterGradients[i]) { arena.values.pointer[i] += $0 }
        }
        let share = Double(outliers) / Double(checked)
        #expect(share <= allowedOutliers, "\(outliers) of \(checked) gradients off; first: \(firstFailure ?? "")",
                sourceLocation: sourceLocation)
    }
}
