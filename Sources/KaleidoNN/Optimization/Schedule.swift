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

/// The target network's EMA momentum, rising from γ₀ to γ_end (1 in BYOL and ReLICv2) on a cosine:
///   γ(s) = γ_end − (γ_end − γ₀) · ½ (cos(π s / total) + 1)
/// γ_end < 1 keeps the target moving to the last step; with γ_end = 1 the target freezes while
/// the learning rate decays, and the loss stops falling before the run ends.
public struct MomentumSchedule: Sendable, Equatable {
    public var base: Double
    public var final: Double
    public var totalSteps: Int

    public init(base: Double, final: Double = 1, totalSteps: Int) {
        self.base = base
        self.final = final
        self.totalSteps = totalSteps
    }

    public func value(at step: Int) -> Double {
        let progress = min(1, Double(step) / Double(max(1, totalSteps)))
        return final - (final - base) * 0.5 * (cos(Double.pi * progress) + 1)
    }
}
