import KaleidoCheckpoint
import KaleidoData
import KaleidoDist
import KaleidoTensor

/// Kaleido's own version.
public let kaleidoVersion = "0.1.0"

/// What this binary actually linked and loaded, read from the libraries themselves at run time
/// (not from headers at build time): proof that the system libraries are present and usable.
public struct LinkedLibraries: Codable, Sendable {
    public var kaleido: String
    /// The vector instructions of Kaleido's own kernels (`CPUCapability.summary`).
    public var kernels: String
    public var openblasConfig: String
    public var openblasThreads: Int
    public var mpiLibrary: String
    public var mpiStandard: String
    public var zstd: String
    public var libpng: String
    public var turbojpeg: String

    public static func probe() -> LinkedLibraries {
        let standard = MPICommunicator.standardVersion
        return LinkedLibraries(
            kaleido: kaleidoVersion,
            kernels: CPUCapability.summary,
            openblasConfig: BLAS.configuration,
            openblasThreads: BLAS.threadCount,
            mpiLibrary: MPICommunicator.libraryVersion,
            mpiStandard: "\(standard.major).\(standard.minor)",
            zstd: Zstd.version,
            libpng: ImageCodec.libpngVersion,
            turbojpeg: ImageCodec.turboJPEGAvailable ? "loaded (TurboJPEG API)" : "failed to initialise")
    }

    /// `key: value` lines for a terminal.
    public var table: [(String, String)] {
        [("kaleido", kaleido), ("kernels", kernels), ("openblas", openblasConfig), ("openblas threads", String(openblasThreads)),
         ("mpi", mpiLibrary), ("mpi standard", mpiStandard), ("zstd", zstd), ("libpng", libpng),
         ("turbojpeg", turbojpeg)]
    }
}
