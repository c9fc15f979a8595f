import Foundation
import Testing
@testable import KaleidoData

@Suite struct SyntheticDatasetTests {
    @Test func samplesAreDeterministicAndSplitsDiffer() throws {
        let spec = smallSpec()
        let a = SyntheticDataset(spec: spec, split: .train, modality: .image)
        let b = SyntheticDataset(spec: spec, split: .train, modality: .image)
        let val = SyntheticDataset(spec: spec, split: .val, modality: .image)
        let context = DecodeContext()
        for index in 0..<4 {
            #expect(try a.load(index, frames: [0], context: context).frames == b.load(index, frames: [0], context: context).frames)
            #expect(try a.load(index, frames: [0], context: context).frames != val.load(index, frames: [0], context: context).frames)
        }
        var other = spec
        other.seed = 1
        let reseeded = SyntheticDataset(spec: other, split: .train, modality: .image)
        #expect(try a.load(0, frames: [0], context: context).frames != reseeded.load(0, frames: [0], context: context).frames)
    }

    @Test func everyModalityHasTheSameBalancedClasses() {
        let spec = smallSpec(classes: 10, train: 50)
        let sets = Modality.allCases.map { SyntheticDataset(spec: spec, split: .train, modality: $0) }
        #expect(sets.allSatisfy { $0.classes == sets[0].classes })
        #expect(Set(sets[0].classes).count == 10)
        // Shape and texture are both needed: 10 classes = 5 shapes × 2 textures.
        #expect(sets[0].classes.contains("disk-stripes") && sets[0].classes.contains("disk-checker"))
        var counts = [Int](repeating: 0, count: 10)
        for i in 0..<sets[0].count { counts[sets[0].label(of: i)] += 1 }
        #expect(counts.allSatisfy { $0 == 5 })
    }

    @Test func videosMoveAndRGBDPutsTheObjectInFront() throws {
        let spec = smallSpec(size: 32, frames: 8)
        let video = SyntheticDataset(spec: spec, split: .train, modality: .video)
        let frames = video.renderAll(3).frames
        #expect(frames.count == 8)
        #expect(frames[0] != frames[7])
        let rgbd = SyntheticDataset(spec: spec, split: .train, modality: .rgbd)
        for index in 0..<6 {
            let rendered = rgbd.renderAll(index)
            let depth = rendered.depth!
            var objectDepth = 0.0, objectCount = 0.0, backDepth = 0.0, backCount = 0.0
            for i in 0..<depth.pixels.count {
                if rendered.mask.pixels[i] == 255 { objectDepth += Double(depth.pixels[i]); objectCount += 1 }
                if rendered.mask.pixels[i] == 0 { backDepth += Double(depth.pixels[i]); backCount += 1 }
            }
            #expect(objectCount > 10)
            #expect(objectDepth / objectCount < 2300 && objectDepth / objectCount > 900, "object depth in mm")
            #expect(backDepth / backCount > objectDepth / objectCount + 500)
        }
    }

    /// Colour alone must not solve the task: a nearest-centroid classifier on mean RGB and on a
    /// coarse colour histogram stays close to chance.
    @Test(arguments: [1, 4, 9])
    func everySceneHoldsTheConfiguredObjectsOfItsClassInTheirOwnColours(objects: Int) {
        var spec = smallSpec()
        spec.objects = objects
        let dataset = SyntheticDataset(spec: spec, split: .train, modality: .image)
        for index in 0..<6 {
            let scene = dataset.scene(index)
            let (shape, texture) = SyntheticDataset.parts(of: dataset.label(of: index), classes: spec.classes)
            #expect(scene.objects.count == objects)
            #expect(scene.objects.allSatisfy { $0.shape == shape && $0.texture == texture })
            // Colours are drawn per object: the class, not one colour scheme, is what they share.
            #expect(Set(scene.objects.map { "\($0.colorA)" }).count == objects)
            // Every object is drawn: the true mask covers a share that grows with the objects' area.
            let mask = dataset.render(scene, time: 0).mask
            let covered = mask.pixels.filter { $0 > 127 }.count
            #expect(covered >= objects * 4, "index \(index): \(covered) object pixels for \(objects) objects")
        }
    }

    @Test func colourStatisticsDoNotRevealTheClass() {
        let classes = 10
        let spec = smallSpec(classes: classes, train: 400, val: 200, size: 24)
        func features(_ split: Split) -> [(label: Int, feature: [Double])] {
            let dataset = SyntheticDataset(spec: spec, split: split, modality: .image)
            return (0..<dataset.count).map { i in
                let image = dataset.renderAll(i).frames[0]
                var histogram = [Double](repeating: 0, count: 27)
                for p in 0..<(image.width * image.height) {
                    let r = Int(image.pixels[3 * p]) * 3 / 256, g = Int(image.pixels[3 * p + 1]) * 3 / 256
                    let b = Int(image.pixels[3 * p + 2]) * 3 / 256
                    histogram[(r * 3 + g) * 3 + b] += 1 / Double(image.width * image.height)
                }
                return (dataset.label(of: i), histogram)
            }
        }
        let train = features(.train), val = features(.val)
        var centroids = [[Double]](repeating: [Double](repeating: 0, count: 27), count: classes)
        var counts = [Double](repeating: 0, count: classes)
        for (label, f) in train {
            counts[label] += 1
            for k in 0..<27 { centroids[label][k] += f[k] }
        }
        for c in 0..<classes { centroids[c] = centroids[c].map { $0 / counts[c] } }
        var correct = 0
        for (label, f) in val {
            let best = (0..<classes).min { a, b in
                zip(centroids[a], f).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) < zip(centroids[b], f).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
            }!
            if best == label { correct += 1 }
        }
        let accuracy = Double(correct) / Double(val.count)
        #expect(accuracy < 2.0 / Double(classes), "colour histogram nearest-centroid accuracy \(accuracy)")
    }
}
