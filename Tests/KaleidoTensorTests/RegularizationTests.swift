import Testing
@testable import KaleidoTensor

@Suite struct RegularizationTests {
    func dropPath(_ input: [Float], batch: Int, probability: Float, training: Bool = true,
                  rng: inout SplitMix64) -> (output: [Float], mask: [Float]) {
        let results = withPointers([input.map { _ in 0 }, [Float](repeating: -1, count: batch)]) { p in
            DropPath.forward(output: p[0], mask: p[1], input: input, batch: batch, sampleSize: input.count / batch,
                             probability: probability, training: training, rng: &rng, pool: .serial)
        }
        return (results[0], results[1])
    }

    func dropout(_ input: [Float], probability: Float, training: Bool = true, rng: inout SplitMix64,
                 pool: ComputePool = .serial) -> (output: [Float], mask: [Float]) {
        let results = withPointers([input.map { _ in 0 }, input.map { _ in -1 }]) { p in
            Dropout.forward(output: p[0], mask: p[1], input: input, count: input.count, probability: probability,
                            training: training, rng: &rng, pool: pool)
        }
        return (results[0], results[1])
    }

    @Test(arguments: [(Float(0), true), (0.5, false)])
    func dropPathIsTheIdentityWithoutDropOrOutsideTraining(probability: Float, training: Bool) {
        let input = randomValues(24, seed: 1)
        var rng = SplitMix64(seed: 7)
        let (output, mask) = dropPath(input, batch: 4, probability: probability, training: training, rng: &rng)
        #expect(output == input)
        #expect(mask == [1, 1, 1, 1])
        #expect(rng == SplitMix64(seed: 7), "an inactive drop must not consume random numbers")
    }

    @Test func dropPathMasksWholeSamplesReproduciblyFromTheSeed() {
        let (batch, sampleSize, probability) = (64, 5, Float(0.25))
        let input = randomValues(batch * sampleSize, seed: 2).map { $0 + 2 }  // never zero
        var rng = SplitMix64(seed: 3), sameSeed = SplitMix64(seed: 3)
        let (output, mask) = dropPath(input, batch: batch, probability: probability, rng: &rng)
        #expect(dropPath(input, batch: batch, probability: probability, rng: &sameSeed).mask == mask)
        #expect(rng != SplitMix64(seed: 3))
        let dropped = mask.filter { $0 == 0 }.count
        #expect(mask.allSatisfy { $0 == 0 || $0 == 1 / (1 - probability) })
        #expect(dropped > 4 && dropped < 32, "\(dropped) of \(batch) samples dropped at p = \(probability)")
        for n in 0..<batch {
            let sample = (n * sampleSize)..<((n + 1) * sampleSize)
            for i in sample { #expect(output[i] == input[i] * mask[n]) }
        }
    }

    @Test func dropPathBackwardMatchesFiniteDifferences() {
        let (batch, sampleSize) = (6, 3)
        GradientCheck().run(inputs: ["input": randomValues(batch * sampleSize, seed: 4)], forward: { v in
            var rng = SplitMix64(seed: 5)
            return dropPath(v["input"]!, batch: batch, probability: 0.5, rng: &rng).output
        }, backward: { v, dOut in
            var rng = SplitMix64(seed: 5)
            let mask = dropPath(v["input"]!, batch: batch, probability: 0.5, rng: &rng).mask
            let dInput = withPointers([v["input"]!.map { _ in .nan }]) { p in  // written, not added to
                DropPath.backward(dInput: p[0], dOutput: dOut, mask: mask, batch: batch, sampleSize: sampleSize, pool: .serial)
            }[0]
            return ["input": dInput]
        })
    }

    @Test func dropoutDropsAboutPOfTheValuesAndScalesTheRest() {
        let input = [Float](repeating: 1, count: 20_000)
        var rng = SplitMix64(seed: 6)
        let (output, mask) = dropout(input, probability: 0.3, rng: &rng)
        #expect(output == mask)
        #expect(mask.allSatisfy { $0 == 0 || $0 == 1 / Float(0.7) })
        let droppedFraction = Double(mask.filter { $0 == 0 }.count) / Double(input.count)
        #expect(abs(droppedFraction - 0.3) < 0.02)
    }

    @Test func dropoutMaskIsTheSameForOneAndTwoThreads() {
        let input = randomValues(50_000, seed: 7)
        var serialRNG = SplitMix64(seed: 8), parallelRNG = SplitMix64(seed: 8)
        let serial = dropout(input, probability: 0.5, rng: &serialRNG)
        let parallel = dropout(input, probability: 0.5, rng: &parallelRNG, pool: ComputePool(threads: 2))
        #expect(serial.mask == parallel.mask && serial.output == parallel.output)
        #expect(serialRNG == parallelRNG)
    }

    @Test(arguments: [(Float(0), true), (0.5, false), (1, true)])
    func dropoutEdgeProbabilities(probability: Float, training: Bool) {
        let input = randomValues(9, seed: 9).map { $0 + 2 }
        var rng = SplitMix64(seed: 10)
        let (output, _) = dropout(input, probability: probability, training: training, rng: &rng)
        #expect(output == (probability == 1 && training ? input.map { _ in 0 } : input))
    }

    @Test func dropoutBackwardMatchesFiniteDifferences() {
        GradientCheck().run(inputs: ["input": randomValues(11, seed: 11)], forward: { v in
            var rng = SplitMix64(seed: 12)
            return dropout(v["input"]!, probability: 0.4, rng: &rng).output
        }, backward: { v, dOut in
            var rng = SplitMix64(seed: 12)
            let mask = dropout(v["input"]!, probability: 0.4, rng: &rng).mask
            let dInput = withPointers([v["input"]!.map { _ in 0 }]) { p in
                Dropout.backward(dInput: p[0], dOutput: dOut, mask: mask, count: dOut.count, pool: .serial)
            }[0]
            return ["input": dInput]
        })
    }
}
