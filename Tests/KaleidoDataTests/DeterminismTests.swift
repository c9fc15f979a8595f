import Dispatch
import Foundation
import Testing
import KaleidoTensor
@testable import KaleidoData

@Suite struct DeterminismTests {
    let spec = smallSpec(classes: 4, train: 30, val: 8, size: 20, frames: 4)

    func pipeline(_ shares: [Modality: Double] = [.image: 1, .video: 1, .rgbd: 1], batch: Int = 6,
                  mode: MixMode = .joint) throws -> DataPipeline {
        try DataPipeline(configuration(.synthetic(spec), batch: batch, shares: shares, mode: mode))
    }

    @Test func ranksTogetherMakeExactlyTheSingleProcessBatch() throws {
        let p = try pipeline(batch: 7)  // 7 = 3 + 2 + 2 over modalities: uneven shards on purpose
        for step in [0, 3, 9] {
            let whole = try p.batch(step, context: DecodeContext())
            for world in [2, 3, 4] {
                let parts = try (0..<world).map { try p.batch(step, rank: $0, worldSize: world, context: DecodeContext()) }
                for (g, group) in whole.groups.enumerated() {
                    let n = group.count
                    // Reassemble view v of every rank in rank order.
                    for v in 0..<2 {
                        let joined = parts.flatMap { $0.groups[g].largeView(v).array }
                        #expect(joined == group.largeView(v).array, "step \(step) world \(world) \(group.modality) view \(v)")
                        let small = parts.flatMap { $0.groups[g].smallView(v).array }
                        #expect(small == group.smallView(v).array)
                    }
                    #expect(parts.flatMap { $0.groups[g].labels } == group.labels)
                    #expect(parts.map { $0.groups[g].count }.reduce(0, +) == n)
                    #expect(parts.map { $0.groups[g].batchOffset } == (0..<world).map { DataPipeline.shard(n, rank: $0, worldSize: world).lowerBound })
                }
            }
        }
    }

    @Test func threadsMakeTheSameViewsAsOneThread() throws {
        let p = try pipeline()
        let reference = try (0..<6).map { flatten(try p.batch($0, context: DecodeContext())) }
        let results = UncheckedSendable(UnsafeMutableBufferPointer<[Float]>.allocate(capacity: 24))
        results.value.initialize(repeating: [])
        defer { results.value.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            let context = DecodeContext()
            // Each thread visits the steps in a different order.
            for k in 0..<6 {
                let step = thread % 2 == 0 ? (k + thread) % 6 : (5 - k + thread) % 6
                results.value[thread * 6 + step] = flatten(try! p.batch(step, context: context))
            }
        }
        for thread in 0..<4 {
            for step in 0..<6 { #expect(results.value[thread * 6 + step] == reference[step]) }
        }
    }

    @Test func sameSeedAndPositionGiveTheSameViewsWhateverElseIsDrawn() throws {
        let p = try pipeline([.image: 1])
        let dataset = p.datasets[.image]!
        let key = SampleKey(seed: 7, epoch: 2, dataset: 0, position: 61)
        let a = try p.maker.views(of: dataset, index: 5, key: key)
        _ = try p.maker.views(of: dataset, index: 9, key: SampleKey(seed: 7, epoch: 2, dataset: 0, position: 62))
        let b = try p.maker.views(of: dataset, index: 5, key: key)
        #expect(a.rgb == b.rgb)
        var other = key
        other.seed = 8
        #expect(try p.maker.views(of: dataset, index: 5, key: other).rgb != a.rgb)
        #expect(a.rgb[0] != a.rgb[1], "two large views differ")
    }

    @Test func prefetchingLoaderMatchesDirectBatchesAndResumes() throws {
        let p = try pipeline()
        let loader = try DataLoader(pipeline: p, rank: 1, worldSize: 2, workers: 3, depth: 5)
        var seen: [[Float]] = []
        for _ in 0..<8 { seen.append(flatten(try loader.next())) }
        let saved = loader.state
        loader.stop()
        #expect(saved.step == 8)
        for step in [0, 5, 7] {
            #expect(seen[step] == flatten(try p.batch(step, rank: 1, worldSize: 2, context: DecodeContext())))
        }
        // Through JSON, as a checkpoint stores it.
        let data = try JSONEncoder().encode(saved)
        let restored = try JSONDecoder().decode(LoaderState.self, from: data)
        #expect(restored == saved)
        let resumed = try DataLoader(pipeline: p, rank: 1, worldSize: 2, state: restored, workers: 2)
        let next = try resumed.next()
        resumed.stop()
        #expect(next.step == 8)
        #expect(flatten(next) == flatten(try p.batch(8, rank: 1, worldSize: 2, context: DecodeContext())))
    }

    @Test func loaderStateTracksEpochsAndRejectsAChangedConfiguration() throws {
        let p = try pipeline([.image: 1], batch: 6)  // 30 train samples: 5 steps per epoch
        #expect(p.stepsPerEpoch == 5)
        let state = p.state(at: 7)
        #expect(state.streams == [LoaderState.Stream(modality: .image, epoch: 1, position: 12)])
        let other = try pipeline([.image: 1], batch: 4)
        #expect { try other.resume(from: state) } throws: { "\($0)".contains("loader state does not match") }
        #expect(try p.resume(from: state) == 7)
    }

    @Test func everySampleAppearsOncePerEpochInShuffledOrder() throws {
        let p = try pipeline([.image: 1], batch: 6)
        var indices: [Int] = []
        for step in 0..<5 { indices += try p.batch(step, context: DecodeContext()).groups[0].sampleIndices }
        #expect(indices.sorted() == Array(0..<30))
        #expect(indices != Array(0..<30))
        var next: [Int] = []
        for step in 5..<10 { next += try p.batch(step, context: DecodeContext()).groups[0].sampleIndices }
        #expect(next.sorted() == Array(0..<30) && next != indices, "a new order each epoch")
    }

    @Test func alternatingStepsHoldOneModalityEachAndShardIt() throws {
        let p = try pipeline([.image: 2, .video: 1], batch: 6, mode: .alternate)
        let modalities = try (0..<6).map { step -> Modality in
            let whole = try p.batch(step, context: DecodeContext())
            #expect(whole.groups.count == 1 && whole.groups[0].count == 6)
            let half = try p.batch(step, rank: 1, worldSize: 2, context: DecodeContext())
            #expect(half.groups[0].count == 3 && half.groups[0].batchOffset == 3)
            #expect(half.groups[0].largeView(0).array == Array(whole.groups[0].largeView(0).array[(3 * 16 * 16 * 3 * (whole.groups[0].modality == .video ? 2 : 1))...]))
            return whole.groups[0].modality
        }
        #expect(modalities.filter { $0 == .image }.count == 4 && modalities.filter { $0 == .video }.count == 2)
    }

    @Test func aModalityWithoutAFolderIsAClearError() throws {
        let root = temporaryDirectory("images-only")
        try FileManager.default.createDirectory(atPath: root + "/a", withIntermediateDirectories: true)
        try ImageCodec.writePNG(solid(8, 1, 2, 3), to: root + "/a/x.png")
        let config = configuration(.folders(image: root, video: nil, rgbd: nil), shares: [.image: 1, .video: 1])
        #expect { try DataPipeline(config) } throws: { "\($0)".contains("data.mix.video is positive") && "\($0)".contains("data.video_root") }
    }

    @Test func batchTensorsHaveTheDocumentedShapes() throws {
        let p = try pipeline(batch: 6)
        let batch = try p.batch(0, context: DecodeContext())
        #expect(batch.groups.map(\.modality) == [.image, .video, .rgbd])
        let image = batch.groups[0], video = batch.groups[1], rgbd = batch.groups[2]
        #expect(image.large.shape == [4, 16, 16, 3] && image.small!.shape == [4, 8, 8, 3])
        #expect(video.large.shape == [4, 2, 16, 16, 3] && video.small!.shape == [4, 2, 8, 8, 3])
        #expect(rgbd.large.shape == [4, 16, 16, 3] && rgbd.largeDepth!.shape == [4, 16, 16, 1] && rgbd.smallDepth!.shape == [4, 8, 8, 1])
        #expect(image.largeDepth == nil)
        #expect(video.modalityIds == [1, 1] && rgbd.datasetIds == [2, 2])
        #expect(image.labels.allSatisfy { (0..<4).contains($0) })
        // Normalised with ImageNet statistics: roughly zero-centred, unit-ish spread.
        let values = image.large.array
        let mean = values.reduce(0, +) / Float(values.count)
        #expect(abs(mean) < 1.5)
        #expect(values.allSatisfy { $0 > -2.2 && $0 < 2.7 })
    }
}
