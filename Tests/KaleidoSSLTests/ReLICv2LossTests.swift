import Foundation
import Testing
import KaleidoSafeTensors
import KaleidoTensor
@testable import KaleidoSSL

@Suite struct ReLICv2LossTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func tensor(_ file: SafeTensorsFile, _ name: String) throws -> Tensor {
        let (shape, values) = try file.floats(name)
        return Tensor(shape: shape, values: values)
    }

    /// Loss value and gradient with respect to the online predictions equal an independent
    /// PyTorch autograd implementation of the same formula (tools/fixtures/make_relic_fixtures.py),
    /// within 1e-5 relative: the reference is float64, Kaleido float32.
    @Test(arguments: ["two_views", "multicrop_queue", "beta_zero"])
    func matchesThePyTorchReference(_ name: String) throws {
        let file = try SafeTensorsFile(contentsOf: Self.fixtures.appendingPathComponent("relicv2_\(name).safetensors"))
        let metadata = file.metadata
        let large = Int(metadata["large"]!)!, small = Int(metadata["small"]!)!
        let loss = ReLICv2Loss(temperature: Float(metadata["temperature"]!)!, alpha: Float(metadata["alpha"]!)!,
                               beta: Float(metadata["beta"]!)!)
        let views = large + small
        let predictions = try (0..<views).map { try tensor(file, "prediction_\($0)") }
        let globals = try (0..<views).map { try tensor(file, "global_prediction_\($0)") }
        let targets = try (0..<large).map { try tensor(file, "target_\($0)") }
        let queue = file.tensors["queue"] == nil ? nil : try tensor(file, "queue")
        let gradients = predictions.map { Tensor(zeros: $0.shape) }
        let value = loss.compute(predictions: predictions, globalPredictions: globals, targets: targets, queue: queue,
                                 offset: Int(metadata["offset"]!)!, dPredictions: gradients, pool: ComputePool(threads: 2))
        let expected = try file.floats("loss").values[0]
        #expect(abs(value.total - expected) <= 1e-5 * max(1, abs(expected)), "loss \(value.total) vs \(expected)")
        #expect(abs(value.contrastive - (try file.floats("contrastive").values[0])) < 1e-5)
        for view in 0..<views {
            let reference = try file.floats("grad_prediction_\(view)").values
            let scale = reference.map(abs).max()!
            let error = zip(gradients[view].array, reference).map { abs($0 - $1) }.max()!
            #expect(error <= 1e-5 * max(1, scale), "view \(view): max error \(error) of \(scale)")
        }
    }

    @Test func betaZeroIsThePlainContrastiveLoss() {
        var rng = SplitMix64(seed: 4)
        let views = (0..<2).map { _ in Tensor(randomNormal: [5, 4], rng: &rng) }
        let targets = (0..<2).map { _ in Tensor(randomNormal: [5, 4], rng: &rng) }
        func run(beta: Float) -> ReLICv2Loss.Value {
            ReLICv2Loss(temperature: 0.2, alpha: 1, beta: beta).compute(
                predictions: views, globalPredictions: views, targets: targets, queue: nil, offset: 0,
                dPredictions: views.map { Tensor(zeros: $0.shape) }, pool: .serial)
        }
        let plain = run(beta: 0), full = run(beta: 1)
        #expect(plain.total == plain.contrastive)
        #expect(full.divergence > 0 && abs(full.total - (full.contrastive + full.divergence)) < 1e-6)
    }

    @Test func alignedViewsScoreBetterThanRandomOnes() {
        var rng = SplitMix64(seed: 6)
        let base = Tensor(randomNormal: [16, 8], rng: &rng)
        let noise = Tensor(randomNormal: [16, 8], rng: &rng)
        // Two views: each view's prediction is scored against the other view's target.
        func loss(_ targets: Tensor) -> Float {
            ReLICv2Loss().compute(predictions: [base, base], globalPredictions: [base, base], targets: [targets, targets],
                                  queue: nil, offset: 0, dPredictions: [Tensor(zeros: base.shape), Tensor(zeros: base.shape)],
                                  pool: .serial).total
        }
        #expect(loss(base) < loss(noise) - 1)
    }
}
