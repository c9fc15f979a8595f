import Testing
import KaleidoNN
import KaleidoTensor
@testable import KaleidoSSL

/// Finite differences through the whole online network and the ReLICv2 loss: backbone →
/// projector → predictor → loss. The kernels have their own checks; this one catches a wrong
/// wiring between them (a gradient that never reaches the backbone, a head run on the wrong
/// rows), which only the self-supervised path exercises. β = 0: with β > 0 the reverse
/// distribution is stopped by design, so finite differences (which move it too) disagree.
/// Compared per part as the cosine between sampled analytic and numeric gradients: BatchNorm
/// over 12 rows and Float32 forwards make single coordinates noisy at ε = 3e-3.
@Suite struct ReLICv2GradientTests {
    @Test func lossGradientReachesEveryPartOfTheOnlineNetwork() throws {
        let model = try ReLICv2Model(backbone: "resnet18-cifar", options: ModelOptions(baseWidth: 4),
                                     heads: .init(projectorHidden: 16, projection: 8, predictorHidden: 16), seed: 5)
        let loss = ReLICv2Loss(temperature: 0.2, alpha: 1, beta: 0)
        // Two views of 6 random images: each image plus a little noise.
        let n = 6, side = 8
        var rng = SplitMix64(seed: 77)
        let images = (0..<n).map { _ in Tensor(randomNormal: [side, side, 3], rng: &rng) }
        let large = Tensor(zeros: [2 * n, side, side, 3])
        for v in 0..<2 {
            for (i, image) in images.enumerated() {
                let destination = large.pointer + (v * n + i) * image.count
                for k in 0..<image.count { destination[k] = image.pointer[k] + 0.1 * rng.normal() }
            }
        }
        let target = RunContext(arena: model.target, pool: .serial, training: true, recordsForBackward: false)
        let projected = model.project(large, target)
        let targets = (0..<2).map { v in Tensor(shape: [n, 8], values: Array(projected.array[(v * n * 8)..<((v + 1) * n * 8)])) }
        let online = RunContext(arena: model.online, pool: .serial, training: true)

        func value(_ predictions: Tensor, gradient: Tensor?) -> Double {
            let views = (0..<2).map { predictions.slice(($0 * n)..<(($0 + 1) * n)) }
            let scratch = gradient ?? Tensor(zeros: predictions.shape)
            let dViews = (0..<2).map { scratch.slice(($0 * n)..<(($0 + 1) * n)) }
            return Double(loss.compute(predictions: views, globalPredictions: views, targets: targets, queue: nil,
                                       offset: 0, dPredictions: dViews, pool: .serial).total)
        }
        func numericLoss() -> Double {
            online.recordsForBackward = false
            defer { online.recordsForBackward = true; online.resetActivations() }
            return value(model.predict(large, online).predictions, gradient: nil)
        }

        model.online.zeroGradients()
        let predictions = model.predict(large, online).predictions
        let dPredictions = Tensor(zeros: predictions.shape)
        _ = value(predictions, gradient: dPredictions)
        online.backward { _ = model.backward(dPredictions, online) }
        let analytic = Array(UnsafeBufferPointer(start: model.online.gradients.pointer, count: model.online.count))
        online.resetActivations()

        rng = SplitMix64(seed: 11)
        let epsilon: Float = 3e-3
        var report: [String] = []
        for part in ["conv1", "layer4", "projector", "predictor"] {
            let entries = model.online.entries.filter { $0.spec.role.isTrainable && $0.spec.name.hasPrefix(part) }
            var dot = 0.0, analyticNorm = 0.0, numericNorm = 0.0
            for _ in 0..<12 {
                let entry = entries[Int(rng.next() % UInt64(entries.count))]
                let i = entry.offset + Int(rng.next() % UInt64(entry.count))
                model.online.values.pointer[i] += epsilon
                let plus = numericLoss()
                model.online.values.pointer[i] -= 2 * epsilon
                let minus = numericLoss()
                model.online.values.pointer[i] += epsilon
                let numeric = (plus - minus) / Double(2 * epsilon)
                dot += numeric * Double(analytic[i]); analyticNorm += Double(analytic[i] * analytic[i]); numericNorm += numeric * numeric
                report.append("\(entry.spec.name): analytic \(analytic[i]) numeric \(numeric)")
            }
            let cosine = dot / max((analyticNorm * numericNorm).squareRoot(), 1e-30)
            #expect(cosine > 0.9, "\(part): cosine \(cosine)\n\(report.suffix(12).joined(separator: "\n"))")
        }
    }
}
