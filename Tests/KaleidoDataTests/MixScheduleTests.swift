import Testing
@testable import KaleidoData

@Suite struct MixScheduleTests {
    @Test func alternationFollowsTheSharesAndSpreadsSteps() {
        let schedule = MixSchedule(shares: [.image: 0.5, .video: 0.3, .rgbd: 0.2], mode: .alternate, globalBatch: 16)
        let steps = (0..<100).map { schedule.groups($0) }
        #expect(steps.allSatisfy { $0.count == 1 && $0[0].count == 16 })
        let modalities = steps.map { $0[0].modality }
        #expect(modalities.filter { $0 == .image }.count == 50)
        #expect(modalities.filter { $0 == .video }.count == 30)
        #expect(modalities.filter { $0 == .rgbd }.count == 20)
        // Within every 10-step period the counts are 5/3/2, never bunched up.
        for start in stride(from: 0, to: 100, by: 10) {
            #expect(modalities[start..<(start + 10)].filter { $0 == .video }.count == 3)
        }
    }

    @Test func streamStartsAreTheRunningSumsOfEarlierSteps() {
        for mode in MixMode.allCases {
            let schedule = MixSchedule(shares: [.image: 2, .video: 1, .rgbd: 1], mode: mode, globalBatch: 10)
            var consumed: [Modality: Int] = [:]
            for step in 0..<57 {
                for group in schedule.groups(step) {
                    #expect(group.streamStart == consumed[group.modality, default: 0], "\(mode) step \(step)")
                    consumed[group.modality, default: 0] += group.count
                }
                for m in Modality.allCases { #expect(schedule.consumed(before: step + 1, m) == consumed[m, default: 0]) }
            }
        }
    }

    @Test func jointStepsSplitTheBatchByLargestRemainder() {
        let schedule = MixSchedule(shares: [.image: 1, .video: 1, .rgbd: 1], mode: .joint, globalBatch: 64)
        let groups = schedule.groups(5)
        #expect(groups.map(\.count) == [22, 21, 21])
        #expect(groups.map(\.modality) == [.image, .video, .rgbd])
        let imageOnly = MixSchedule(shares: [.image: 1, .video: 0], mode: .joint, globalBatch: 64)
        #expect(imageOnly.modalities == [.image])
    }
}
