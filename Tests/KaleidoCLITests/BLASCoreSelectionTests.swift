import Testing
@testable import kaleido

@Suite struct BLASCoreSelectionTests {
    let avx512: Set<String> = ["fma", "avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]

    @Test func avx512CPUsLeftOnHaswellKernelsGetSkylakeX() {
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell", environment: [:]) == "SkylakeX")
    }

    @Test func theUsersChoiceAndOtherCPUsAreLeftAlone() {
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "Haswell", environment: ["OPENBLAS_CORETYPE": "Zen"]) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: ["fma", "avx2"], configuration: "Haswell", environment: [:]) == nil)
        #expect(BLASCoreSelection.preferredCoreType(cpuFlags: avx512, configuration: "OpenBLAS SkylakeX", environment: [:]) == nil)
    }
}
