import Testing
@testable import kaleido

@Suite struct BLASCoreSelectionTests {
    let avx512: Set<String> = ["fma", "avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
    let avx2: Set<String> = ["fma", "avx2"]

    @Test func avx512CPUsLeftOnNarrowerKernelsGetSkylakeX() {
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell MAX_THREADS=64", environment: [:]) == "SkylakeX")
        // Emerald Rapids under Debian's 0.3.21: an unknown CPU falls back to Prescott.
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64", environment: [:]) == "SkylakeX")
    }

    @Test func avx2CPUsLeftWithoutAVX2KernelsGetHaswell() {
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx2, configuration: "OpenBLAS 0.3.21 DYNAMIC_ARCH Prescott MAX_THREADS=64", environment: [:]) == "Haswell")
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx2, configuration: "OpenBLAS 0.3.21 DYNAMIC_ARCH Sandybridge MAX_THREADS=64", environment: [:]) == "Haswell")
    }

    @Test func theUsersChoiceAndGoodChoicesAreLeftAlone() {
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "Prescott MAX_THREADS=64", environment: ["OPENBLAS_CORETYPE": "Zen"]) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx2, configuration: "OpenBLAS 0.3.21 DYNAMIC_ARCH Zen MAX_THREADS=64", environment: [:]) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx2, configuration: "OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell MAX_THREADS=64", environment: [:]) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS 0.3.21 DYNAMIC_ARCH Cooperlake MAX_THREADS=64", environment: [:]) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS SkylakeX", environment: [:]) == nil)
        // A CPU without AVX2 (or not x86: no flags) keeps whatever OpenBLAS chose.
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: ["sse4_2"], configuration: "OpenBLAS Nehalem MAX_THREADS=64", environment: [:]) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: [], configuration: "OpenBLAS NEOVERSEN1 MAX_THREADS=64", environment: [:]) == nil)
    }

    @Test func theCPUCapabilityCapsOpenBLASAsItCapsKaleidosKernels() {
        let cap = { (value: String) in ["KALEIDO_CPU_CAPABILITY": value] }
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS DYNAMIC_ARCH SkylakeX MAX_THREADS=64", environment: cap("avx2")) == "Haswell")
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS DYNAMIC_ARCH Prescott MAX_THREADS=64", environment: cap("AVX2")) == "Haswell")
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS DYNAMIC_ARCH Zen MAX_THREADS=64", environment: cap("avx2")) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS DYNAMIC_ARCH Haswell MAX_THREADS=64", environment: cap("avx512")) == "SkylakeX")
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx2, configuration: "OpenBLAS DYNAMIC_ARCH Haswell MAX_THREADS=64", environment: cap("default")) == "Prescott")
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx2, configuration: "OpenBLAS DYNAMIC_ARCH Prescott MAX_THREADS=64", environment: cap("default")) == nil)
        // The user's own OpenBLAS choice still wins.
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS SkylakeX MAX_THREADS=64", environment: cap("avx2").merging(["OPENBLAS_CORETYPE": "SkylakeX"]) { a, _ in a }) == nil)
    }

    @Test func theCoreNameIsTheWordBeforeMaxThreads() {
        #expect(BLASCoreSelection.coreName(configuration: "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64") == "Prescott")
        #expect(BLASCoreSelection.coreName(configuration: "OpenBLAS 0.3.26 DYNAMIC_ARCH Haswell") == "Haswell")
        #expect(BLASCoreSelection.coreName(configuration: "MAX_THREADS=64") == nil)
    }
}
