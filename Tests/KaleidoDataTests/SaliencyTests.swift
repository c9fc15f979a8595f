import Foundation
import Testing
@testable import KaleidoData

@Suite struct SaliencyTests {
    @Test func boundaryPriorFindsAnObjectOnAPlainBackground() {
        let size = 40
        var pixels: [UInt8] = [], truth: [Bool] = []
        for y in 0..<size {
            for x in 0..<size {
                let inside = (x - 22) * (x - 22) + (y - 18) * (y - 18) < 100
                truth.append(inside)
                pixels += inside ? [200, 60, 40] : [UInt8(60 + x), 110, UInt8(130 + y / 2)]
            }
        }
        let mask = Saliency.estimate(Image8(width: size, height: size, channels: 3, pixels: pixels))
        #expect(mask.width == size && mask.height == size)
        var intersection = 0, union = 0
        for i in 0..<(size * size) {
            let predicted = mask.values[i] > 0.5
            if predicted && truth[i] { intersection += 1 }
            if predicted || truth[i] { union += 1 }
        }
        #expect(Double(intersection) / Double(union) > 0.8)
    }

    @Test func aMaskFileBesideTheImageDecidesTheBackground() throws {
        let root = temporaryDirectory("mask")
        try FileManager.default.createDirectory(atPath: root + "/a", withIntermediateDirectories: true)
        try ImageCodec.writePNG(solid(16, 250, 10, 10), to: root + "/a/x.png")
        // An all-background mask: the whole view becomes the replacement gray level.
        try ImageCodec.writePNG(Image8(width: 16, height: 16, channels: 1, pixels: [UInt8](repeating: 0, count: 256)),
                                to: root + "/a/x.mask.png")
        let dataset = try ImageFolderDataset(root: root)
        #expect(dataset.count == 1, "mask files are not samples")
        var forced = recipe(large: 8, small: 4, saliency: 1)
        forced.large[0].jitterProbability = 0
        forced.large[0].grayscaleProbability = 0
        forced.large[0].blurProbability = 0
        let maker = ViewMaker(recipe: forced)
        let key = SampleKey(seed: 0, epoch: 0, dataset: 0, position: 0)
        let views = try maker.views(of: dataset, index: 0, key: key)
        let level = maker.params(width: 16, height: 16, key: key)[0].backgroundLevel
        let view = views.rgb[0]
        for i in 0..<64 {
            let r = view[3 * i] * forced.std.x + forced.mean.x, g = view[3 * i + 1] * forced.std.y + forced.mean.y
            let expected = maker.params(width: 16, height: 16, key: key)[0].solarize && level >= 0.5 ? 1 - level : level
            #expect(abs(r - expected) < 1e-4 && abs(g - expected) < 1e-4)
        }
    }
}
