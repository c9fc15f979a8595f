import Testing
@testable import KaleidoDist

@Suite struct CommunicatorTests {
    @Test func localCommunicatorIsAWorldOfOne() throws {
        let comm: Communicator = LocalCommunicator()
        #expect(comm.rank == 0 && comm.worldSize == 1 && comm.isCoordinator)
        var values: [Float] = [1, 2, 3]
        try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
        #expect(values == [1, 2, 3])
    }

    @Test func mpiLibraryReportsOpenMPIAndAStandardVersion() {
        #expect(MPICommunicator.libraryVersion.contains("Open MPI"))
        // `kaleido version` prints it: no NUL or control character may follow the text.
        #expect(MPICommunicator.libraryVersion.unicodeScalars.allSatisfy { $0.value >= 0x20 })
        #expect(MPICommunicator.standardVersion.major >= 3)
    }

    @Test func launcherDetectionReadsOpenMPIAndPMIVariables() {
        #expect(MPICommunicator.launchedByMPI(environment: ["OMPI_COMM_WORLD_SIZE": "2"]))
        #expect(MPICommunicator.launchedByMPI(environment: ["PMI_RANK": "0"]))
        #expect(!MPICommunicator.launchedByMPI(environment: ["HOME": "/root"]))
    }
}
