import Foundation

/// Linear warmup from 0 to `base`, then cosine decay to `final` at `totalSteps`.
///
///   lr(s) = base · (s + 1) / warmup                                     s < warmup
///   lr(s) = final + (base − final) · ½ (1 + cos(π (s − warmup) / (total − warmup)))
public struct WarmupCosineSchedule: Sendable, Equatable {
    public var base: Double
    public var final: Double
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(base: Double, final: Double = 0, warmupSteps: Int, totalSteps: Int) {
        self.base = base
        self.final = final
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    public func value(at step: Int) -> Double {
        if step < warmupSteps { return base * Double(step + 1) / Double(warmupSteps) }
        let span = max(1, totalSteps - warmupSteps)
        let progress = min(1, Double(step - warmupSteps) / Double(span))
        return final + (base - final) * 0.5 * (1 + cos(Double.pi * progress))
    }
}

/// The target network's EMA momentum, rising from γ₀ to 1 on a cosine (BYOL, ReLICv2):
///   γ(s) = 1 − (1 − γ₀) · ½ (cos(π s / total) + 1)
public struct MomentumSchedule: Sendable, Equatable {
    public var base: Double
    public var totalSteps: Int

    public init(base: Double, totalSteps: Int) {
        self.base = base
        self.totalSteps = totalSteps
    }

    public func value(at step: Int) -> Double {
        let progress = min(1, Double(step) / Double(max(1, totalSteps)))
        return 1 - (1 - base) * 0.5 * (cos(Double.pi * progress) + 1)
    }
}
