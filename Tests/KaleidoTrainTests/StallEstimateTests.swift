import Testing
@testable import KaleidoTrain

/// The per-save stall logged to metrics.jsonl: boundary time plus the window's steps over the
/// median of the quiet steps on both sides of the window.
@Suite struct StallEstimateTests {
    @Test func aSaveIsChargedWhatItsWindowAddsOverTheStepsAroundIt() throws {
        var estimate = StallEstimate()
        for _ in 0..<20 { _ = estimate.recordQuietStep(seconds: 2.00) }
        // The machine is drifting up (a shared VM): 2.10 before the save, 2.20 after it.
        for seconds in [2.10, 2.10, 2.10] { #expect(estimate.recordQuietStep(seconds: seconds).isEmpty) }
        #expect(estimate.saveCommitted(step: 5, window: [2.25], boundary: 0.02, values: ["commit_ms": 4]).isEmpty)
        // Not costed until as many quiet steps after the window as before it.
        #expect(estimate.recordQuietStep(seconds: 2.20).isEmpty)
        #expect(estimate.recordQuietStep(seconds: 2.20).isEmpty)
        let costed = estimate.recordQuietStep(seconds: 2.20)
        #expect(costed.map(\.step) == [5])
        #expect(costed.first?.values["commit_ms"] == 4)
        // The window step is 0.10 s over the middle of the drift (2.15), not the 0.15 s a baseline
        // of the steps before it alone would charge.
        let stall = try #require(costed.first.flatMap(StallEstimate.seconds))
        #expect(abs(stall - 0.12) < 1e-9, "\(stall)")
        #expect(estimate.waiting.isEmpty)
    }

    @Test func noiseBelowTheBaselineCostsOnlyTheBoundaryAndWindowStepsNetOut() throws {
        var estimate = StallEstimate()
        for _ in 0..<3 { _ = estimate.recordQuietStep(seconds: 2.35) }
        _ = estimate.saveCommitted(step: 5, window: [2.30, 2.33], boundary: 0.03, values: [:])
        _ = estimate.saveCommitted(step: 10, window: [2.45, 2.30], boundary: 0.02, values: [:])
        let costed = (0..<3).flatMap { _ in estimate.recordQuietStep(seconds: 2.35) }
        #expect(costed.map(\.step) == [5, 10])
        #expect(StallEstimate.seconds(costed[0]) == 0.03, "window steps faster than the baseline are noise")
        let netted = try #require(StallEstimate.seconds(costed[1]))
        #expect(abs(netted - 0.07) < 1e-9, "a slow and a fast window step net out: \(netted)")
    }

    @Test func frequentSavesAndTheEndOfTheRunAreCostedWithTheNeighboursThereAre() throws {
        var estimate = StallEstimate()
        #expect(estimate.saveCommitted(step: 1, window: [2.0], boundary: 0.01, values: [:]).isEmpty)
        #expect(estimate.drain().map { StallEstimate.seconds($0) } == [nil], "no quiet step at all: no estimate")
        for _ in 0..<3 { _ = estimate.recordQuietStep(seconds: 2.0) }
        // Saves back to back, no quiet step between: a third waiting save forces the first out.
        #expect(estimate.saveCommitted(step: 2, window: [2.1], boundary: 0.01, values: [:]).isEmpty)
        #expect(estimate.saveCommitted(step: 3, window: [2.1], boundary: 0.01, values: [:]).isEmpty)
        let forced = estimate.saveCommitted(step: 4, window: [2.1], boundary: 0.01, values: [:])
        #expect(forced.map(\.step) == [2])
        let first = try #require(forced.first.flatMap(StallEstimate.seconds))
        #expect(abs(first - 0.11) < 1e-9, "costed against the steps before it: \(first)")
        // One quiet step, then the run ends: the rest are costed with what they have.
        #expect(estimate.recordQuietStep(seconds: 2.2).isEmpty)
        let rest = estimate.drain()
        #expect(rest.map(\.step) == [3, 4])
        #expect(rest.allSatisfy { $0.after == [2.2] && $0.before == [2.0, 2.0, 2.0] })
        #expect(estimate.waiting.isEmpty)
    }
}
