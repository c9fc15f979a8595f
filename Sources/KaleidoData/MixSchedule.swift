import KaleidoTensor

/// How a joint (Omnivore) run splits its steps between modalities.
public enum MixMode: String, Sendable, CaseIterable {
    /// Each step is one modality; modalities take turns in proportion to their shares
    /// (Omnivore's default, which keeps each step's tensors one shape).
    case alternate
    /// Every step holds one group per modality, sized in proportion to the shares (Omnivore's
    /// joint batches).
    case joint
}

/// Which modality samples a step holds, as a closed-form function of the step index, so any
/// rank can compute any step (and a resumed run continues where it stopped) without replaying
/// the steps before it.
public struct MixSchedule: Sendable, Equatable {
    /// One slice of a global batch: `count` samples of `modality`, the next ones of that
    /// modality's sample stream from position `streamStart`.
    public struct Group: Equatable, Sendable {
        public var modality: Modality
        public var count: Int
        public var streamStart: Int
    }

    public let mode: MixMode
    public let globalBatch: Int
    /// Modalities with a positive share, in id order.
    public let modalities: [Modality]
    /// joint: samples of each modality per step.
    let perStep: [Int]
    /// alternate: the repeating pattern of step modalities (indices into `modalities`) and,
    /// for each position in it, how many steps of each modality came before.
    let pattern: [Int]
    let before: [[Int]]

    public init(shares: [Modality: Double], mode: MixMode, globalBatch: Int) {
        let modalities = Modality.allCases.filter { (shares[$0] ?? 0) > 0 }
        precondition(!modalities.isEmpty, "at least one modality needs a positive share")
        let weights = modalities.map { shares[$0]! }
        self.mode = mode
        self.globalBatch = globalBatch
        self.modalities = modalities
        switch mode {
        case .joint:
            perStep = MixSchedule.apportion(weights, total: globalBatch)
            pattern = []
            before = []
        case .alternate:
            // The shortest period (≤ 100 steps) in which the shares are whole numbers of steps.
            let total = weights.reduce(0, +)
            var period = 100
            for p in 1...100 {
                if weights.allSatisfy({ abs($0 / total * Double(p) - ($0 / total * Double(p)).rounded()) < 1e-6 }) {
                    period = p
                    break
                }
            }
            let counts = MixSchedule.apportion(weights, total: period)
            // Smooth weighted round-robin: spreads each modality's steps evenly over the period.
            var current = [Int](repeating: 0, count: counts.count)
            var pattern: [Int] = [], before: [[Int]] = []
            var seen = [Int](repeating: 0, count: counts.count)
            for _ in 0..<period {
                for m in counts.indices { current[m] += counts[m] }
                let pick = current.indices.max { current[$0] < current[$1] || (current[$0] == current[$1] && $0 > $1) }!
                current[pick] -= period
                before.append(seen)
                pattern.append(pick)
                seen[pick] += 1
            }
            perStep = counts  // steps of each modality per period
            self.pattern = pattern
            self.before = before
        }
    }

    /// Largest-remainder apportionment of `total` in proportion to `weights`.
    public static func apportion(_ weights: [Double], total: Int) -> [Int] {
        let sum = weights.reduce(0, +)
        let exact = weights.map { $0 / sum * Double(total) }
        var counts = exact.map { Int($0.rounded(.down)) }
        let order = exact.indices.sorted { (exact[$0] - Double(counts[$0]), -$0) > (exact[$1] - Double(counts[$1]), -$1) }
        var left = total - counts.reduce(0, +)
        for i in order where left > 0 { counts[i] += 1; left -= 1 }
        return counts
    }

    /// Samples of `modality` used by steps 0..<step.
    public func consumed(before step: Int, _ modality: Modality) -> Int {
        guard let m = modalities.firstIndex(of: modality) else { return 0 }
        switch mode {
        case .joint: return step * perStep[m]
        case .alternate:
            let period = pattern.count
            return ((step / period) * perStep[m] + before[step % period][m]) * globalBatch
        }
    }

    /// The groups of global batch `step`, in modality id order; empty groups are left out.
    public func groups(_ step: Int) -> [Group] {
        switch mode {
        case .joint:
            return modalities.indices.compactMap { m in
                perStep[m] > 0 ? Group(modality: modalities[m], count: perStep[m], streamStart: consumed(before: step, modalities[m])) : nil
            }
        case .alternate:
            let m = modalities[pattern[step % pattern.count]]
            return [Group(modality: m, count: globalBatch, streamStart: consumed(before: step, m))]
        }
    }
}
