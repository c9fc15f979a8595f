import Foundation
import KaleidoTensor

/// Which of OpenBLAS's kernels to run on this CPU.
///
/// Debian's OpenBLAS 0.3.21 picks its kernel from CPUID at load time and, on the AMD Zen 4
/// machines we run on, falls back to Haswell (AVX2) kernels although the CPU has AVX-512. Its
/// SkylakeX kernels are much faster for convolution-shaped products here (`kaleido bench
/// kernels`: conv 3×3 on ResNet-18 CIFAR shapes 172 → 296 GFLOP/s, 2 threads). OpenBLAS only
/// reads `OPENBLAS_CORETYPE` while loading, so the choice has to be in the environment before
/// the process starts: `kaleido` re-executes itself once with it set. A user's own
/// `OPENBLAS_CORETYPE` always wins.
enum BLASCoreSelection {
    /// The core type to force, or nil to leave OpenBLAS's own choice.
    static func preferredCoreType(cpuFlags: Set<String>, configuration: String, environment: [String: String]) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil else { return nil }
        let avx512: Set<String> = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
        guard avx512.isSubset(of: cpuFlags), configuration.contains("Haswell") || configuration.contains("Zen") else { return nil }
        return "SkylakeX"
    }

    /// The CPU feature flags from /proc/cpuinfo (empty elsewhere).
    static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(separator: ":").last?.split(separator: " ").map(String.init) ?? [])
    }

    /// Re-executes this process with the preferred core type when OpenBLAS chose worse kernels.
    /// Returns only when no re-execution is needed (or it failed, which keeps the current kernels).
    static func reexecuteIfBeneficial(arguments: [String] = CommandLine.arguments) {
        let environment = ProcessInfo.processInfo.environment
        guard let coreType = preferredCoreType(cpuFlags: cpuFlags(), configuration: BLAS.configuration, environment: environment)
        else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        let argv = arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", argv)
    }
}
