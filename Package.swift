// swift-tools-version: 6.0
// Kaleido: distributed self-supervised pretraining (ReLICv2 × Omnivore) on CPU BLAS and MPI.
// Layout and the one-way dependency order are described in docs/architecture.md.
import PackageDescription

/// OpenMPI's headers include a C++ binding guard only; nothing else is needed from C.
let systemLibraries: [Target] = [
    .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                   providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                   providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
    .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                   providers: [.apt(["libzstd-dev"])]),
    .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
                   providers: [.apt(["libpng-dev"])]),
    .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
                   providers: [.apt(["libturbojpeg0-dev"])]),
    // Header-only helpers of KaleidoCheckpoint: the CPU's CRC-32C instruction, Linux writeback hints.
    .systemLibrary(name: "CCheckpoint", path: "Sources/CCheckpoint"),
]

/// Kernels are written as plain loops over SIMD vectors; the compiler only emits AVX2 and FMA
/// instructions for them when told the CPU has them. Every x86-64 server of the last decade
/// does (x86-64-v3); elsewhere the baseline instruction set is used. `KALEIDO_MARCH=native swift build`
/// targets the building machine instead (AVX-512 where present: ConvNeXt +4 %, Swin +7 % in
/// `kaleido bench step`; the binary then runs only on such CPUs).
#if arch(x86_64)
let vectorISA: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-march=" + (Context.environment["KALEIDO_MARCH"] ?? "x86-64-v3")])]
#else
let vectorISA: [SwiftSetting] = []
#endif

/// Release builds of the kernels want the optimiser to see through generic code. They keep
/// Swift's checks (-O, not -Ounchecked): a broken invariant or a bad file stops instead of
/// becoming undefined behaviour, and `kaleido bench step` measured no difference (BENCHMARKS.md,
/// 2026-12-05). -O drops the standard library's precondition messages; KaleidoTensor's
/// `precondition` (Checks.swift), which every module sees instead, prints them.
let fast: [SwiftSetting] = vectorISA + [.unsafeFlags(["-wmo"], .when(configuration: .release))]

let package = Package(
    name: "Kaleido",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kaleido", targets: ["kaleido"]),
        .library(name: "KaleidoTrain", targets: ["KaleidoTrain"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: systemLibraries + [
        // Hand-vectorised C kernels (AVX-512 or AVX2, chosen at run time); optimised in debug builds too,
        // so tests run them at the speed they are benchmarked at.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "KaleidoTensor", dependencies: ["CBLAS", "CKernels"], exclude: ["Kernels/README.md"], swiftSettings: fast),
        .target(name: "KaleidoNN", dependencies: ["KaleidoTensor"], swiftSettings: fast),
        .target(name: "KaleidoSSL", dependencies: ["KaleidoNN", "KaleidoTensor"], swiftSettings: fast),
        .target(name: "KaleidoDist", dependencies: ["CMPI", "KaleidoTensor", .product(name: "Logging", package: "swift-log")]),
        // Foundation only: the tensor, NN and SSL tests read their parity fixtures with it.
        .target(name: "KaleidoSafeTensors"),
        .target(name: "KaleidoCheckpoint", dependencies: ["CZstd", "CCheckpoint", "KaleidoSafeTensors", "KaleidoTensor", "KaleidoNN", "KaleidoDist", .product(name: "Logging", package: "swift-log")]),
        .target(name: "KaleidoData", dependencies: ["CPNG", "CTurboJPEG", "KaleidoTensor", .product(name: "Logging", package: "swift-log")], swiftSettings: fast),
        .target(name: "KaleidoTrain", dependencies: [
            "KaleidoTensor", "KaleidoNN", "KaleidoSSL", "KaleidoDist", "KaleidoCheckpoint", "KaleidoData",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .executableTarget(name: "kaleido", dependencies: [
            "KaleidoTrain", "KaleidoCheckpoint", "KaleidoData", "KaleidoDist", "KaleidoNN", "KaleidoTensor",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Parity fixtures are safetensors files. The model parity tests also import PyTorch state
        // dicts into an arena, which is the checkpoint target's arena import.
        .testTarget(name: "KaleidoSafeTensorsTests", dependencies: ["KaleidoSafeTensors"], exclude: ["Fixtures"]),
        .testTarget(name: "KaleidoTensorTests", dependencies: ["KaleidoTensor", "KaleidoSafeTensors"], exclude: ["Fixtures"]),
        .testTarget(name: "KaleidoNNTests", dependencies: ["KaleidoNN", "KaleidoTensor", "KaleidoSafeTensors", "KaleidoCheckpoint"], exclude: ["Fixtures"]),
        .testTarget(name: "KaleidoSSLTests", dependencies: ["KaleidoSSL", "KaleidoNN", "KaleidoTensor", "KaleidoSafeTensors"], exclude: ["Fixtures"]),
        .testTarget(name: "KaleidoDistTests", dependencies: ["KaleidoDist"]),
        .testTarget(name: "KaleidoCheckpointTests", dependencies: ["KaleidoCheckpoint", "KaleidoSafeTensors", "KaleidoTensor", "KaleidoNN", "KaleidoDist", "CZstd"]),
        .testTarget(name: "KaleidoDataTests", dependencies: ["KaleidoData", "KaleidoTensor", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "KaleidoTrainTests", dependencies: [
            "KaleidoTrain", "KaleidoCheckpoint", "KaleidoData", "KaleidoDist", "KaleidoNN", "KaleidoSSL", "KaleidoTensor",
            .product(name: "Logging", package: "swift-log"),
        ], exclude: ["Fixtures"]),  // model.init state dicts written by PyTorch (tools/fixtures/make_init_fixtures.py)
        .testTarget(name: "KaleidoCLITests", dependencies: ["kaleido"]),
        // Runs `kaleido` under mpirun on this machine (2 and 4 ranks).
        .testTarget(name: "KaleidoMPITests", dependencies: ["kaleido"]),
    ]
)
