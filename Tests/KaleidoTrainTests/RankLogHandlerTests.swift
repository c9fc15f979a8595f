import Foundation
import Logging
import Synchronization
import Testing
@testable import KaleidoTrain

@Suite struct RankLogHandlerTests {
    @Test func linesCarryRankLevelLabelAndMetadata() {
        let lines = Mutex<[String]>([])
        let handler = RankLogHandler(label: "kaleido.test", identity: RankIdentity(rank: 2, worldSize: 4), level: .info,
                                     sink: { line in lines.withLock { $0.append(line) } })
        var logger = Logger(label: "kaleido.test", factory: { _ in handler })
        logger[metadataKey: "step"] = "12"
        logger.info("hello", metadata: ["loss": "1.5"])
        logger.debug("hidden below the level")
        let captured = lines.withLock { $0 }
        #expect(captured.count == 1)
        #expect(captured[0].contains("[rank 2/4] info kaleido.test: hello loss=1.5 step=12"))
    }

    @Test func identityComesFromTheLauncher() {
        #expect(RankIdentity.fromLauncher(environment: ["OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"])
                == RankIdentity(rank: 3, worldSize: 4))
        #expect(RankIdentity.fromLauncher(environment: ["SLURM_PROCID": "1", "SLURM_NTASKS": "2"])
                == RankIdentity(rank: 1, worldSize: 2))
        #expect(RankIdentity.fromLauncher(environment: [:]) == RankIdentity(rank: 0, worldSize: 1))
        #expect(RankIdentity.fromLauncher(environment: ["PMI_RANK": "5", "PMI_SIZE": "2"]) == RankIdentity(rank: 0, worldSize: 1))
    }
}
