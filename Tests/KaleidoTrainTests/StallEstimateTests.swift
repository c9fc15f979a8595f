import Testing
@testable import KaleidoTrain

/// The per-save stall logged to metrics.jsonl: boundary time plus the window's steps over the
/// median of the latest quiet steps.
@Suite struct StallEstimateTests {
    @Test func aSaveIsChargedOnlyWhatItsWindowAddsToTheLatestSpeed() throws {
        var estimate = StallEstimate()
        #expect(estimate.seconds(window: [2.0], boundary: 0.02) == nil, "no baseline before any quiet step")
        // A fast minute, then the machine slows down for good (a shared VM).
        for _ in 0..<20 { estimate.recordQuietStep(seconds: 2.10) }
        for seconds in [2.36, 2.34, 2.35, 2.35, 2.36, 2.34, 2.35, 2.35, 2.35] { estimate.recordQuietStep(seconds: seconds) }
        #expect(estimate.quietSteps.count == StallEstimate.baselineSteps)
        // A window step 0.12 s over the slow level costs 0.12 s, not the 0.37 s a baseline of the
        // fast steps would charge.
        let stall = try #require(estimate.seconds(window: [2.47], boundary: 0.03))
        #expect(abs(stall - 0.15) < 1e-9, "\(stall)")
        // Window steps faster than the baseline (noise) cost nothing beyond the boundary.
        #expect(estimate.seconds(window: [2.30, 2.33], boundary: 0.03) == 0.03)
        // Over a two-step window a slow and a fast step net out.
        let netted = try #require(estimate.seconds(window: [2.45, 2.30], boundary: 0.02))
        #expect(abs(netted - 0.07) < 1e-9, "\(netted)")
    }
}
