import CKernels

/// The widest vector instructions Kaleido's own kernels run with on this machine: what the CPU
/// has, lowered by `KALEIDO_CPU_CAPABILITY` (`avx512`, `avx2`, `default`) so that one binary
/// runs and measures its AVX2 kernels on an AVX-512 CPU (see `cpu_capability.h`).
public enum CPUCapability: Int32, Sendable, Comparable, CustomStringConvertible {
    case plain = 0, avx2 = 1, avx512 = 2

    /// What this CPU runs.
    public static var detected: CPUCapability { CPUCapability(rawValue: kaleido_cpu_capability_detected()) ?? .plain }

    /// What the kernels use: `detected`, capped by the environment.
    public static var active: CPUCapability { CPUCapability(rawValue: kaleido_cpu_capability()) ?? .plain }

    /// The environment's cap, or nil when `KALEIDO_CPU_CAPABILITY` holds something else.
    public static var requested: CPUCapability? { CPUCapability(rawValue: kaleido_cpu_capability_request()) }

    /// The values `KALEIDO_CPU_CAPABILITY` takes, widest first.
    public static let environmentValues = ["avx512", "avx2", "default"]

    public static func < (a: CPUCapability, b: CPUCapability) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .avx512: return "AVX-512F"
        case .avx2: return "AVX2 + FMA"
        case .plain: return "plain loops"
        }
    }

    /// One line for `kaleido version` and the benchmarks' headers, e.g. "AVX2 + FMA (capped by
    /// KALEIDO_CPU_CAPABILITY; the CPU has AVX-512F)".
    public static var summary: String {
        active == detected ? active.description
            : "\(active) (capped by KALEIDO_CPU_CAPABILITY; the CPU has \(detected))"
    }
}
