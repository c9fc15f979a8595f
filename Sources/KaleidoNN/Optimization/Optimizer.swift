import Foundation
import KaleidoTensor

/// Updates an arena's trainable entries from its gradients. Optimiser state (momenta, moments)
/// lives in further arenas of the same layout, so checkpoints and resharding treat it like the
/// weights: one flat array each.
public protocol Optimizer: AnyObject {
    /// Named state arrays, each `arena.count` floats, for checkpoints.
    var state: [(name: String, storage: TensorStorage)] { get }
    /// Steps taken (Adam's bias correction depends on it); restored from checkpoints.
    var stepCount: Int { get set }
    /// One update with learning rate `lr`. Buffers (BN statistics) are never touched.
    func step(_ arena: ParameterArena, learningRate lr: Float, pool: ComputePool)
}

/// Which optimiser and its hyper-parameters; the learning rate comes from the schedule.
public enum OptimizerKind: String, Sendable, CaseIterable {
    case lars, adamw, sgd
}

public struct OptimizerSettings: Sendable {
    public var kind: OptimizerKind
    public var weightDecay: Float
    public var momentum: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var trustCoefficient: Float

    public init(kind: OptimizerKind, weightDecay: Float = 0, momentum: Float = 0.9, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, trustCoefficient: Float = 0.001) {
        self.kind = kind; self.weightDecay = weightDecay; self.momentum = momentum
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.trustCoefficient = trustCoefficient
    }

    public func make(for arena: ParameterArena) -> Optimizer {
        switch kind {
        case .sgd: return SGDMomentum(arena: arena, settings: self)
        case .adamw: return AdamW(arena: arena, settings: self)
        case .lars: return LARS(arena: arena, settings: self)
        }
    }
}

/// Entries to update, split over threads by entry so each thread owns whole parameters.
private func forEachTrainable(_ arena: ParameterArena, pool: ComputePool, _ body: (ParameterArena.Entry) -> Void) {
    precondition(arena.hasGradients, "an optimiser step on an arena copy, which has no gradients")
    let entries = arena.entries.filter { $0.spec.role.isTrainable }
    pool.forEachRange(entries.count) { range in
        for index in range { body(entries[index]) }
    }
}

/// Heavy-ball momentum on the arena, the shared core of SGD and LARS:
///   u = g + λ w;   v ← μ v + r · u;   w ← w − lr · v
/// with λ and the trust ratio r = η ‖w‖ / ‖u‖ (1 when either norm is 0) applied to `.weight`
/// entries only, and r = 1 throughout when the trust ratio is off (plain SGD).
public class MomentumOptimizer: Optimizer {
    let settings: OptimizerSettings
    let adaptsTrustRatio: Bool
    let velocity: TensorStorage
    public var stepCount = 0
    public var state: [(name: String, storage: TensorStorage)] { [("momentum", velocity)] }

    init(arena: ParameterArena, settings: OptimizerSettings, adaptsTrustRatio: Bool) {
        self.settings = settings
        self.adaptsTrustRatio = adaptsTrustRatio
        velocity = TensorStorage(count: arena.count)
    }

    public func step(_ arena: ParameterArena, learningRate lr: Float, pool: ComputePool) {
        forEachTrainable(arena, pool: pool) { entry in
            let w = arena.values.pointer + entry.offset, g = arena.gradients.pointer + entry.offset
            let v = velocity.pointer + entry.offset
            let decayed = entry.spec.role == .weight
            let lambda = decayed ? settings.weightDecay : 0
            var trust: Float = 1
            if adaptsTrustRatio && decayed {
                var weightNorm: Double = 0, updateNorm: Double = 0
                for i in 0..<entry.count {
                    let u = Double(g[i] + lambda * w[i])
                    weightNorm += Double(w[i]) * Double(w[i])
                    updateNorm += u * u
                }
                if weightNorm > 0 && updateNorm > 0 {
                    trust = settings.trustCoefficient * Float(weightNorm.squareRoot() / updateNorm.squareRoot())
                }
            }
            for i in 0..<entry.count {
                v[i] = settings.momentum * v[i] + trust * (g[i] + lambda * w[i])
                w[i] -= lr * v[i]
            }
        }
        stepCount += 1
    }
}

/// SGD with heavy-ball momentum and L2 weight decay on `.weight` entries (torch.optim.SGD).
public final class SGDMomentum: MomentumOptimizer {
    public init(arena: ParameterArena, settings: OptimizerSettings) {
        super.init(arena: arena, settings: settings, adaptsTrustRatio: false)
    }
}

/// AdamW (Loshchilov & Hutter) with decoupled weight decay on `.weight` entries:
///   m ← β₁ m + (1−β₁) g;  v ← β₂ v + (1−β₂) g²
///   w ← w − lr · (m̂ / (√v̂ + ε) + λ w),   m̂ = m / (1−β₁ᵗ), v̂ = v / (1−β₂ᵗ)
public final class AdamW: Optimizer {
    let settings: OptimizerSettings
    let firstMoment, secondMoment: TensorStorage
    public var stepCount = 0
    public var state: [(name: String, storage: TensorStorage)] { [("exp_avg", firstMoment), ("exp_avg_sq", secondMoment)] }
    /// Per-entry multipliers of the learning rate, indexed like `arena.entries` (nil: all 1).
    /// Layer-wise learning-rate decay in fine-tuning gives early layers smaller steps this way,
    /// the weight decay scaled with them, as timm's parameter groups do.
    public var learningRateScales: [Float]?

    public init(arena: ParameterArena, settings: OptimizerSettings) {
        self.settings = settings
        firstMoment = TensorStorage(count: arena.count)
        secondMoment = TensorStorage(count: arena.count)
    }

    public func step(_ arena: ParameterArena, learningRate lr: Float, pool: ComputePool) {
        stepCount += 1
        let (b1, b2, eps) = (settings.beta1, settings.beta2, settings.epsilon)
        let correction1 = 1 - Float(pow(Double(b1), Double(stepCount)))
        let correction2 = 1 - Float(pow(Double(b2), Double(stepCount)))
        forEachTrainable(arena, pool: pool) { entry in
            let w = arena.values.pointer + entry.offset, g = arena.gradients.pointer + entry.offset
            let m = firstMoment.pointer + entry.offset, v = secondMoment.pointer + entry.offset
            let lambda = entry.spec.role == .weight ? settings.weightDecay : 0
            let rate = lr * (learningRateScales?[entry.ref.index] ?? 1)
            for i in 0..<entry.count {
                m[i] = b1 * m[i] + (1 - b1) * g[i]
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                let update = (m[i] / correction1) / ((v[i] / correction2).squareRoot() + eps)
                w[i] -= rate * (update + lambda * w[i])
            }
        }
    }
}

/// LARS (You et al. 2017) as used by BYOL and ReLICv2: the per-parameter trust ratio on
/// `.weight` entries; biases and norm parameters get neither weight decay nor the trust ratio.
public final class LARS: MomentumOptimizer {
    public init(arena: ParameterArena, settings: OptimizerSettings) {
        super.init(arena: arena, settings: settings, adaptsTrustRatio: true)
    }
}

/// The exponential moving average of weights:
///   θ_avg ← γ θ_avg + (1 − γ) θ
/// over the first `count` floats of two arenas of one layout. ReLICv2's target network is the
/// EMA of the online one over backbone and projector (which the layout puts before the
/// predictor); fine-tuning keeps an EMA of all its weights (timm's model EMA). Buffers are
/// averaged too, as timm does, so an averaged network's BatchNorm statistics follow the trained one's.
public enum ExponentialMovingAverage {
    public static func update(average: ParameterArena, toward current: ParameterArena, momentum: Float, count: Int,
                              pool: ComputePool) {
        precondition(count <= average.count && average.count == current.count, "EMA over \(count) of \(average.count) floats")
        let t = average.values.pointer, o = current.values.pointer
        let keep = momentum, take = 1 - momentum
        pool.forEachRange(count, minimumPerThread: 1 << 16) { range in
            for i in range { t[i] = keep * t[i] + take * o[i] }
        }
    }
}
