import CKernels

/// The widest vector instructions Kaleido's own kernels run with on this machine: what the CPU
/// has, lowered by `cap` so that one binary runs and measures its AVX2 kernels on an AVX-512 CPU
/// (see `cpu_capability.h`; the CLI sets it from `KALEIDO_CPU_CAPABILITY`).
public enum CPUCapability: Int32, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case plain = 0, avx2 = 1, avx512 = 2

    /// What this CPU runs.
    public static var detected: CPUCapability { CPUCapability(rawValue: kaleido_cpu_capability_detected()) ?? .plain }

    /// What the kernels use: `detected`, capped.
    public static var active: CPUCapability { CPUCapability(rawValue: kaleido_cpu_capability()) ?? .plain }

    /// Lowers every kernel family to at most `cap`. Set once at startup, before any layer is
    /// built or kernel runs (dispatchers that have chosen keep their choice), as `Conv2DDirect.path` is.
    public static func setCap(_ cap: CPUCapability) { kaleido_cpu_capability_set_cap(cap.rawValue) }

    /// The name `KALEIDO_CPU_CAPABILITY` gives it: `avx512`, `avx2`, `default` (the plain loops).
    public var environmentName: String {
        switch self {
        case .avx512: return "avx512"
        case .avx2: return "avx2"
        case .plain: return "default"
        }
    }

    public static func < (a: CPUCapability, b: CPUCapability) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .avx512: return "AVX-512F"
        case .avx2: return "AVX2 + FMA"
        case .plain: return "plain loops"
        }
    }

    /// One line for `kaleido version`, e.g. "AVX2 + FMA (capped by KALEIDO_CPU_CAPABILITY; the
    /// CPU has AVX-512F)".
    public static var summary: String {
        active == detected ? active.description
            : "\(active) (capped by KALEIDO_CPU_CAPABILITY; the CPU has \(detected))"
    }
}
