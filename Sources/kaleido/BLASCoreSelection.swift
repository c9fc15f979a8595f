import Foundation
import KaleidoTensor

/// Which of OpenBLAS's kernels to run on this CPU.
///
/// Debian's OpenBLAS 0.3.21 picks its kernel from CPUID at load time, and picks badly on CPUs
/// newer than it:
/// - on the AMD Zen 4 machines we run on it takes its Haswell (AVX2) kernels although the CPU
///   has AVX-512; its SkylakeX kernels are much faster for convolution-shaped products there
///   (`kaleido bench kernels`: conv 3×3 on ResNet-18 CIFAR shapes 172 → 296 GFLOP/s, 2 threads);
/// - on Intel Xeon family 6 model 207 (Emerald Rapids, AVX-512) it knows nothing of the CPU and
///   falls back to Prescott (SSE3): one-thread sgemm 1024³ made 28 GFLOP/s where SkylakeX's
///   kernels made 143 on the same machine.
/// OpenBLAS only reads `OPENBLAS_CORETYPE` while loading, so the choice has to be in the
/// environment before the process starts: `kaleido` re-executes itself once with it set. A
/// user's own `OPENBLAS_CORETYPE` always wins.
enum BLASCoreSelection {
    /// OpenBLAS's x86 core names (`DYNAMIC_ARCH`) whose single-precision kernels use AVX-512.
    static let avx512Cores: Set<String> = ["SkylakeX", "Cooperlake", "SapphireRapids"]
    /// Those whose kernels use at least AVX2 with FMA.
    static let avx2Cores: Set<String> = avx512Cores.union(["Haswell", "Zen"])

    /// The core type to force, or nil to leave OpenBLAS's own choice: SkylakeX where the CPU has
    /// AVX-512 and OpenBLAS chose narrower kernels, Haswell where it has AVX2 and FMA and
    /// OpenBLAS chose kernels without them. `KALEIDO_CPU_CAPABILITY` caps OpenBLAS as it caps
    /// Kaleido's own kernels: `avx2` forces Haswell instead of AVX-512 kernels, `default` forces
    /// Prescott (SSE3) instead of AVX2 ones, so a capped run measures an AVX2 machine's kernels.
    static func preferredCoreType(cpuFlags: Set<String>, configuration: String, environment: [String: String]) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, let core = coreName(configuration: configuration) else { return nil }
        let cap = (try? CPUCapability.capFromEnvironment(environment)) ?? .avx512
        let avx512: Set<String> = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
        let hasAVX2 = Set(["avx2", "fma"]).isSubset(of: cpuFlags)
        switch cap {
        case .plain:
            return hasAVX2 && avx2Cores.contains(core) ? "Prescott" : nil
        case .avx2:
            guard hasAVX2 else { return nil }
            return avx2Cores.subtracting(avx512Cores).contains(core) ? nil : "Haswell"
        case .avx512:
            if avx512.isSubset(of: cpuFlags) { return avx512Cores.contains(core) ? nil : "SkylakeX" }
            if hasAVX2 { return avx2Cores.contains(core) ? nil : "Haswell" }
            return nil
        }
    }

    /// The kernel OpenBLAS chose, the word before `MAX_THREADS=` in its configuration string
    /// (`OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64`), or the
    /// last word when that is missing.
    static func coreName(configuration: String) -> String? {
        let words = configuration.split(separator: " ").map(String.init)
        if let index = words.firstIndex(where: { $0.hasPrefix("MAX_THREADS=") }) {
            return index > 0 ? words[index - 1] : nil
        }
        return words.last
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
