import ArgumentParser
import Foundation
import KaleidoCheckpoint
import KaleidoTensor
import KaleidoTrain

/// The environment variables `kaleido` reads; the libraries only receive their typed values.
extension FaultInjection {
    /// The faults the process-level tests ask for:
    /// - `KALEIDO_FAULT_PAUSE_AT=POINT@STEP` stops the save of step STEP at POINT (`shard-write`,
    ///   `before-rename`) and creates `KALEIDO_FAULT_PAUSE_MARKER`, if set, before sleeping;
    /// - `KALEIDO_FAULT_STALL=RANK:STEP` makes that rank stop before that step, alive;
    /// - `KALEIDO_FAULT_PERTURB_TARGET=RANK:STEP` makes that rank's target network drift there.
    /// A value that does not parse injects nothing, as a value naming no reachable step does.
    static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> FaultInjection {
        var faults = FaultInjection()
        if let value = environment["KALEIDO_FAULT_PAUSE_AT"], let (point, step) = split(value, at: "@"),
           let point = SavePause.Point(rawValue: point), let step = Int(step) {
            faults.savePause = SavePause(point: point, step: step, marker: environment["KALEIDO_FAULT_PAUSE_MARKER"])
        }
        faults.stall = environment["KALEIDO_FAULT_STALL"].flatMap(rankStep)
        faults.perturbTarget = environment["KALEIDO_FAULT_PERTURB_TARGET"].flatMap(rankStep)
        return faults
    }

    private static func rankStep(_ value: String) -> RankStep? {
        guard let (rank, step) = split(value, at: ":"), let rank = Int(rank), let step = Int(step) else { return nil }
        return RankStep(rank: rank, step: step)
    }

    private static func split(_ value: String, at separator: Character) -> (String, String)? {
        guard let index = value.lastIndex(of: separator) else { return nil }
        return (String(value[..<index]), String(value[value.index(after: index)...]))
    }
}

extension Conv2DDirect.Path {
    /// `KALEIDO_CONV=im2col`, `direct` (no Winograd) or `avx2`; anything else, or nothing, is the
    /// widest kernels.
    static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Conv2DDirect.Path {
        environment["KALEIDO_CONV"].flatMap(Conv2DDirect.Path.init(rawValue:)) ?? .widest
    }
}

extension CPUCapability {
    /// `KALEIDO_CPU_CAPABILITY=avx512`, `avx2` or `default` (any case); unset or empty is no cap.
    /// Anything else is refused, naming the variable and what it takes.
    static func capFromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> CPUCapability {
        guard let value = environment["KALEIDO_CPU_CAPABILITY"], !value.isEmpty else { return .avx512 }
        guard let cap = allCases.first(where: { $0.environmentName == value.lowercased() }) else {
            throw ValidationError("KALEIDO_CPU_CAPABILITY=\(value): expected one of "
                                  + allCases.reversed().map(\.environmentName).joined(separator: ", "))
        }
        return cap
    }
}
