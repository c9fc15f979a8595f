import Foundation
import Testing

/// Runs the built `kaleido` executable, which sits next to the test bundle in the build folder.
func runKaleido(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let buildDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    let process = Process()
    process.executableURL = buildDirectory.appendingPathComponent("kaleido")
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

@Suite struct CLITests {
    @Test func helpListsTheSubcommandsThatExist() throws {
        let result = try runKaleido(["--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("version") && result.stdout.contains("config"))
    }

    @Test func versionReportsTheLinkedLibraries() throws {
        let result = try runKaleido(["version"])
        #expect(result.status == 0)
        for needle in ["OpenBLAS", "Open MPI", "zstd", "libpng", "openblas threads"] {
            #expect(result.stdout.contains(needle), "missing \(needle) in \(result.stdout)")
        }
        let json = try runKaleido(["version", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect((object?["zstd"] as? String)?.hasPrefix("1.") == true)
    }

    @Test func configShowPrintsTheResolvedConfig() throws {
        let result = try runKaleido(["config", "show", "--set", "optim.lr=0.5"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("lr: 0.5"))
    }

    @Test func badConfigValueFailsNamingTheKey() throws {
        let result = try runKaleido(["config", "show", "--set", "optim.lr=fast"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("optim.lr: expected a number, got \"fast\""))
    }

    @Test func benchKernelsPrintsJSONLinesAndASummary() throws {
        let result = try runKaleido(["bench", "kernels", "--only", "sgemm", "--seconds", "0.01", "--threads", "1", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let objects = try result.stdout.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let kernels = objects.compactMap { $0?["kernel"] as? String }
        #expect(kernels.contains("fma_peak") && kernels.contains("sgemm") && !kernels.contains("conv3x3"))
        #expect(objects.allSatisfy { ($0?["gflops"] as? Double).map { $0 > 0 } ?? ($0?["kernel"] == nil) })
    }

    @Test func benchRejectsAnUnknownKernelFamily() throws {
        let result = try runKaleido(["bench", "kernels", "--only", "convolution"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("unknown kernel family convolution"))
    }

    @Test func modelSummaryPrintsTheReferenceParameterCount() throws {
        let result = try runKaleido(["model", "summary", "resnet50"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("25,557,032 (25.56 M)"))
        #expect(result.stdout.contains("layer4.2"))
        let unknown = try runKaleido(["model", "summary", "resnet51"])
        #expect(unknown.status != 0 && unknown.stderr.contains("unknown model \"resnet51\""))
    }
}
