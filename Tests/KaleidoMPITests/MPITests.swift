import Foundation
import Testing

/// Runs the built `kaleido` under `mpirun` with `ranks` processes on this machine.
func mpirun(ranks: Int, _ arguments: [String], timeout: TimeInterval = 600) throws -> (status: Int32, stdout: String, stderr: String) {
    let kaleido = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("kaleido")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    // --oversubscribe: more ranks than this machine's cores; --bind-to none: ranks share them.
    process.arguments = ["mpirun", "-np", String(ranks), "--oversubscribe", "--bind-to", "none", kaleido.path] + arguments
    var environment = ProcessInfo.processInfo.environment
    environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"  // containers without CMA
    process.environment = environment
    // Output goes to files: pipes could fill up and block the ranks while we wait.
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-mpirun-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outURL = directory.appendingPathComponent("stdout"), errURL = directory.appendingPathComponent("stderr")
    FileManager.default.createFile(atPath: outURL.path, contents: nil)
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    let stdoutData = try Data(contentsOf: outURL), stderrData = try Data(contentsOf: errURL)
    return (process.terminationStatus, String(decoding: stdoutData, as: UTF8.self), String(decoding: stderrData, as: UTF8.self))
}

@Suite(.serialized) struct MPITests {
    /// Every bucket cap (one tensor per bucket, 1 MiB, 4 MiB, 25 MiB, unbounded) gives
    /// bit-identical averaged gradients, on 2 and on 4 ranks, and runs repeat bit for bit.
    @Test(arguments: [2, 4])
    func bucketedAllReduceIsDeterministic(ranks: Int) throws {
        let arguments = ["bench", "allreduce", "--floats", "300007", "--tensor-floats", "7001", "--repetitions", "1", "--json"]
        let first = try mpirun(ranks: ranks, arguments)
        #expect(first.status == 0, "\(first.stderr)")
        let rows = first.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let checksums = rows.compactMap { $0["checksum"] as? String }.filter { $0 != "-" }
        #expect(checksums.count == 5 && Set(checksums).count == 1, "\(first.stdout)")
        #expect(rows.allSatisfy { ($0["world_size"] as? Int) == ranks })
        let second = try mpirun(ranks: ranks, arguments)
        let again = second.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["checksum"] as? String
        }.filter { $0 != "-" }
        #expect(again == checksums, "run to run")
    }
}
