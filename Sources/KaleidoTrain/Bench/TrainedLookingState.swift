import KaleidoCheckpoint
import KaleidoNN
import KaleidoTensor

/// A model arena after a few AdamW steps on synthetic gradients, with an EMA target: values
/// spread like trained weights (not the narrow initial distributions), moments like real ones.
public struct TrainedLookingState {
    public let online: ParameterArena
    public let target: ParameterArena
    public let optimizer: Optimizer

    public init(model: String, threads: Int, steps: Int = 10) throws {
        let builder = ParameterBuilder()
        _ = try ModelZoo.make(model, options: ModelOptions(classes: 0), builder: builder)
        online = builder.makeArena(seed: 1)
        target = online.copy()
        optimizer = OptimizerSettings(kind: .adamw, weightDecay: 0.05).make(for: online)
        let pool = ComputePool(threads: threads)
        var rng = SplitMix64(seed: 42)
        let w = online.values.pointer, g = online.gradients.pointer, t = target.values.pointer
        for _ in 0..<steps {
            // Gradients: a pull towards zero plus per-parameter noise of varying scale.
            for entry in online.entries {
                let scale = Float(1e-3) * (1 + rng.uniform() * 10)
                for i in entry.offset..<(entry.offset + entry.count) { g[i] = 0.01 * w[i] + scale * rng.normal() }
            }
            optimizer.step(online, learningRate: 1e-2, pool: pool)
            for i in 0..<online.count { t[i] = 0.99 * t[i] + 0.01 * w[i] }
        }
        // BN statistics as a trained network has them, not zeros and ones.
        for entry in online.entries where entry.spec.role == .buffer {
            let isVariance = entry.spec.name.hasSuffix("running_var")
            for i in entry.offset..<(entry.offset + entry.count) {
                w[i] = isVariance ? 0.5 + abs(rng.normal()) : 0.2 * rng.normal()
                t[i] = w[i]
            }
        }
    }

    /// Online, target and the optimiser state, as a checkpoint holds them.
    public var arrays: [SavedArray] {
        [SavedArray(name: "online", arena: online), SavedArray(name: "target", arena: target)]
            + optimizer.state.map { SavedArray(name: "optimizer." + $0.name, borrowing: UnsafeBufferPointer(start: $0.storage.pointer, count: $0.storage.count)) }
    }
}
