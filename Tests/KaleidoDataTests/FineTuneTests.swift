import Foundation
import Testing
import KaleidoTensor
@testable import KaleidoData

@Suite struct FineTuneTests {
    @Test func mixupAndCutmixMixTargetsByTheMixedArea() {
        var recipe = FineTuneRecipe(size: 8)
        recipe.labelSmoothing = 0
        var sawMixup = false, sawCutmix = false
        for seed in 0..<40 {
            let images = Tensor(zeros: [4, 8, 8, 3])
            for i in 0..<4 { images.slice(i..<(i + 1)).fill(Float(i)) }
            var rng = SplitMix64(seed: UInt64(seed))
            let result = MixAugment.apply(images: images, labels: [0, 1, 2, 3], classes: 5, recipe: recipe, rng: &rng)
            let targets = result.targets.array
            for i in 0..<4 {
                let row = Array(targets[(i * 5)..<(i * 5 + 5)])
                #expect(abs(row.reduce(0, +) - 1) < 1e-5)
                #expect(abs(row[i] - result.lambda) < 1e-5 || (i == 3 - i))
                // The image holds λ of its own value and 1 − λ of its partner's, on average.
                let mean = images.slice(i..<(i + 1)).array.reduce(0, +) / 192
                let expected = result.lambda * Float(i) + (1 - result.lambda) * Float(3 - i)
                #expect(abs(mean - expected) < 1e-4, "cutmix \(result.cutmix) λ \(result.lambda)")
            }
            if result.cutmix { sawCutmix = true } else { sawMixup = true }
        }
        #expect(sawMixup && sawCutmix)
    }

    @Test func randAugmentOperationsKeepPixelsInRange() {
        var rng = SplitMix64(seed: 4)
        var scratch: [Float] = []
        for operation in RandAugment.Operation.allCases {
            // A low-contrast image (values in [0.2, 0.6]) so that autocontrast and equalize have work to do.
            var image = (0..<(32 * 32 * 3)).map { _ in 0.2 + 0.4 * rng.uniform() }
            let before = image
            image.withUnsafeMutableBufferPointer {
                RandAugment.apply(operation, magnitude: 9, negate: false, image: $0.baseAddress!, size: 32, scratch: &scratch)
            }
            #expect(image.allSatisfy { $0 >= -1e-6 && $0 <= 1 + 1e-6 }, "\(operation)")
            let change = zip(image, before).map { abs($0 - $1) }.max()!
            #expect(change > 0.01, "\(operation) changes the image")
        }
    }

    @Test func labelledAndEvaluationBatchesHaveShapesAndDeterminism() throws {
        let spec = smallSpec(classes: 4, train: 16, val: 8, size: 20, frames: 4)
        let pipeline = try DataPipeline(configuration(.synthetic(spec), batch: 6, shares: [.image: 1, .video: 1]))
        let groups = try pipeline.labelledBatch(2, context: DecodeContext())
        #expect(groups.map(\.images.shape) == [[3, 16, 16, 3], [3, 2, 16, 16, 3]])
        #expect(groups.allSatisfy { $0.targets!.shape == [3, 4] })
        let again = try pipeline.labelledBatch(2, context: DecodeContext())
        #expect(groups[0].images.array == again[0].images.array)
        let val = try DataPipeline(configuration(.synthetic(spec), batch: 6), split: .val)
        let a = try val.evaluationBatch(.image, indices: 0..<8, context: DecodeContext())
        let b = try val.evaluationBatch(.image, indices: 4..<8, context: DecodeContext())
        #expect(a.sampleIndices == Array(0..<8) && a.labels == (0..<8).map { Int32($0 % 4) })
        #expect(Array(a.images.array[(4 * 16 * 16 * 3)...]) == b.images.array, "evaluation views do not depend on the batch")
    }

    @Test func inspectGridHasOneRowPerSampleAndACellPerView() throws {
        let spec = smallSpec(classes: 4, train: 8, val: 4, size: 20, frames: 4)
        let pipeline = try DataPipeline(configuration(.synthetic(spec), batch: 4, shares: [.image: 1, .video: 1, .rgbd: 1]))
        let grid = try InspectGrid.render(pipeline, samples: 2, scale: 2)
        // Columns: source + 2 large + 2 small + background-removed + 2 depth (RGB-D) = 8.
        let side = 16 * 2 + 2
        #expect(grid.width == 8 * side + 2 && grid.height == 6 * side + 2)
        let path = temporaryDirectory("grid") + "/grid.png"
        try ImageCodec.writePNG(grid, to: path)
        #expect(try ImageCodec.readPNG(path) == grid)
    }
}
