import Foundation
import Testing
@testable import KaleidoData

@Suite struct FolderDatasetTests {
    /// Index of a synthetic sample from its exported file or folder name.
    func syntheticIndex(_ path: String) -> Int {
        let components = path.split(separator: "/")
        // image: .../<class>/<index>.png; video and rgbd: .../<class>/<index>[/image/<index>.png]
        let name = components.last { Int($0.prefix(6)) != nil && $0.count >= 6 }!
        return Int(name.prefix(6))!
    }

    @Test func exportedPNGDatasetDecodesEqualToTheInMemoryOne() throws {
        let spec = smallSpec(classes: 4, train: 12, val: 4, size: 20, frames: 3)
        let directory = temporaryDirectory("export-png")
        var export = SyntheticExport(spec: spec)
        export.masks = true
        export.threads = 2
        let written = try export.write(to: directory)
        #expect(written == 16 * 2 + 16 * 3 + 16 * 3)
        let context = DecodeContext()
        for split in Split.allCases {
            let images = try ImageFolderDataset(root: Listing.splitRoot(directory + "/image", split: split))
            let memory = SyntheticDataset(spec: spec, split: split, modality: .image)
            #expect(images.count == memory.count)
            #expect(images.classes.map { String($0.dropFirst(3)) } == memory.classes)
            for i in 0..<images.count {
                let index = syntheticIndex(images.path(of: i))
                let loaded = try images.load(i, frames: [0], context: context)
                #expect(loaded.frames == [memory.renderAll(index).frames[0]])
                #expect(loaded.label == memory.label(of: index))
                #expect(loaded.mask == memory.renderAll(index).mask, "mask file beside the image is read")
            }
            let videos = try VideoFrameDataset(root: Listing.splitRoot(directory + "/video", split: split))
            let memoryVideo = SyntheticDataset(spec: spec, split: split, modality: .video)
            #expect(videos.count == memoryVideo.count)
            for i in 0..<videos.count {
                let index = syntheticIndex(videos.path(of: i))
                #expect(videos.frameCount(of: i) == 3)
                #expect(try videos.load(i, frames: [0, 1, 2], context: context).frames == memoryVideo.renderAll(index).frames)
            }
            let rgbd = try RGBDDataset(root: Listing.splitRoot(directory + "/rgbd", split: split), depthScale: 1000)
            let memoryRGBD = SyntheticDataset(spec: spec, split: split, modality: .rgbd)
            for i in 0..<rgbd.count {
                let index = syntheticIndex(rgbd.path(of: i))
                let loaded = try rgbd.load(i, frames: [0], context: context)
                let expected = memoryRGBD.renderAll(index)
                #expect(loaded.frames == expected.frames)
                #expect(loaded.depth == expected.depth)
            }
        }
    }

    @Test func exportedJPEGDatasetIsCloseToTheInMemoryOne() throws {
        let spec = smallSpec(classes: 2, train: 6, val: 2, size: 32)
        let directory = temporaryDirectory("export-jpeg")
        var export = SyntheticExport(spec: spec)
        export.format = .jpeg
        export.quality = 95
        export.modalities = [.image]
        try export.write(to: directory)
        let images = try ImageFolderDataset(root: directory + "/image/train")
        let memory = SyntheticDataset(spec: spec, split: .train, modality: .image)
        let context = DecodeContext()
        for i in 0..<images.count {
            #expect(images.path(of: i).hasSuffix(".jpg"))
            let loaded = try images.load(i, frames: [0], context: context).frames[0]
            let expected = memory.renderAll(syntheticIndex(images.path(of: i))).frames[0]
            let meanError = zip(loaded.pixels, expected.pixels).map { Double(abs(Int($0) - Int($1))) }.reduce(0, +)
                / Double(loaded.pixels.count)
            #expect(meanError < 4, "mean absolute JPEG error \(meanError)")
            #expect(zip(loaded.pixels, expected.pixels).allSatisfy { abs(Int($0) - Int($1)) < 64 })
        }
    }

    // MARK: - Clear errors

    func expectError(_ body: () throws -> Void, naming path: String, _ phrase: String) {
        do {
            try body()
            Issue.record("expected an error naming \(path)")
        } catch {
            #expect("\(error)".contains(path), "\(error)")
            #expect("\(error)".contains(phrase), "\(error)")
        }
    }

    @Test func missingOrEmptyRootIsAnErrorNamingIt() throws {
        let missing = temporaryDirectory("missing") + "/nowhere"
        expectError({ _ = try ImageFolderDataset(root: missing) }, naming: missing, "does not exist")
        expectError({ _ = try Listing.splitRoot(missing, split: .train) }, naming: missing, "does not exist")
        let empty = temporaryDirectory("empty")
        expectError({ _ = try ImageFolderDataset(root: empty) }, naming: empty, "no class folders")
        expectError({ _ = try VideoFrameDataset(root: empty) }, naming: empty, "no class folders")
        // Through the pipeline, as the trainer opens it.
        let config = configuration(.folders(image: missing, video: nil, rgbd: nil))
        expectError({ _ = try DataPipeline(config) }, naming: missing, "does not exist")
    }

    @Test func emptyClassFolderIsAnErrorNamingIt() throws {
        let root = temporaryDirectory("empty-class")
        try FileManager.default.createDirectory(atPath: root + "/cat", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/dog", withIntermediateDirectories: true)
        try ImageCodec.writePNG(solid(4, 1, 2, 3), to: root + "/cat/a.png")
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: root + "/dog/readme.txt"))
        expectError({ _ = try ImageFolderDataset(root: root) }, naming: root + "/dog", "empty class folder")
    }

    @Test func videoFolderWithoutFramesIsAnErrorNamingIt() throws {
        let root = temporaryDirectory("empty-video")
        try FileManager.default.createDirectory(atPath: root + "/wave/v1", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/wave/v2", withIntermediateDirectories: true)
        try ImageCodec.writePNG(solid(4, 1, 2, 3), to: root + "/wave/v1/000001.png")
        expectError({ _ = try VideoFrameDataset(root: root) }, naming: root + "/wave/v2", "no frames")
    }

    @Test func depthMapOfTheWrongBitDepthIsAnErrorNamingIt() throws {
        let root = temporaryDirectory("depth8")
        for (id, eightBit) in [("s1", false), ("s2", true)] {
            let sample = root + "/kitchen/" + id
            try FileManager.default.createDirectory(atPath: sample + "/image", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: sample + "/depth", withIntermediateDirectories: true)
            try ImageCodec.writePNG(solid(4, 9, 9, 9), to: sample + "/image/rgb.png")
            if eightBit {
                try ImageCodec.writePNG(Image8(width: 4, height: 4, channels: 1, pixels: [UInt8](repeating: 7, count: 16)),
                                        to: sample + "/depth/d.png")
            } else {
                try ImageCodec.writePNG16(Image16(width: 4, height: 4, pixels: [UInt16](repeating: 1500, count: 16)),
                                          to: sample + "/depth/d.png")
            }
        }
        expectError({ _ = try RGBDDataset(root: root, depthScale: 1000) }, naming: root + "/kitchen/s2/depth/d.png", "8-bit gray")
        // A sample without its depth folder.
        try FileManager.default.removeItem(atPath: root + "/kitchen/s2/depth")
        expectError({ _ = try RGBDDataset(root: root, depthScale: 1000) }, naming: root + "/kitchen/s2/depth", "missing 16-bit depth PNG")
    }

    @Test func depthScaleConvertsRawUnitsToMetres() throws {
        let root = temporaryDirectory("depth-scale")
        let sample = root + "/room/s1"
        try FileManager.default.createDirectory(atPath: sample + "/image", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: sample + "/depth", withIntermediateDirectories: true)
        try ImageCodec.writePNG(solid(8, 100, 100, 100), to: sample + "/image/rgb.png")
        try ImageCodec.writePNG16(Image16(width: 8, height: 8, pixels: [UInt16](repeating: 4000, count: 64)), to: sample + "/depth/d.png")
        // 4000 raw units at 1000 per metre = 4 m; at 5000 per metre (SUN RGB-D's Kinect v2 scale) 0.8 m.
        for (scale, metres) in [(Float(1000), Float(4)), (5000, 0.8)] {
            var config = configuration(.folders(image: nil, video: nil, rgbd: root), batch: 1, shares: [.rgbd: 1])
            config.depthScale = scale
            let pipeline = try DataPipeline(config)
            let depth = try pipeline.batch(0, context: DecodeContext()).groups[0].largeDepth!.array
            let r = config.recipe
            for d in depth { #expect(abs(d * r.depthStd + r.depthMean - metres) < 1e-4) }
        }
    }

    // MARK: - Corrupt files

    @Test func onePercentCorruptFilesAreSkippedCountedAndLogged() throws {
        let root = temporaryDirectory("corrupt")
        let spec = smallSpec(classes: 4, train: 200, val: 4, size: 16)
        var export = SyntheticExport(spec: spec)
        export.modalities = [.image]
        try export.write(to: root)
        let dataset = try ImageFolderDataset(root: root + "/image/train")
        let broken = [dataset.path(of: 17), dataset.path(of: 151)]  // 1 % of 200
        try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13]).write(to: URL(fileURLWithPath: broken[0]))
        try Data().write(to: URL(fileURLWithPath: broken[1]))
        let capture = LogCapture()
        let pipeline = try DataPipeline(configuration(.folders(image: root + "/image", video: nil, rgbd: nil), batch: 20),
                                        logger: capture.logger)
        let loader = try DataLoader(pipeline: pipeline, workers: 2, depth: 4)
        var samples = 0, skipped = 0
        for _ in 0..<20 {  // two epochs
            let batch = try loader.next()
            samples += batch.sampleCount
            skipped += batch.skipped
            #expect(batch.groups[0].large.shape == [40, 16, 16, 3])
            #expect(!batch.groups[0].large.array.contains { !$0.isFinite })
        }
        loader.stop()
        #expect(samples == 400)
        #expect(skipped == 4, "each corrupt file is met once per epoch")
        // The workers may already have met more of them in batches made ahead of time.
        #expect(pipeline.health.skipped >= 4)
        #expect(pipeline.health.badFiles == broken.sorted())
        for path in broken {
            #expect(capture.messages.filter { $0.contains(path) }.count == 1, "logged once with its path")
        }
    }

    @Test func theInspectGridSkipsACorruptJPEGAndNamesItAsWhatItIs() throws {
        let root = temporaryDirectory("inspect-corrupt")
        var export = SyntheticExport(spec: smallSpec(classes: 2, train: 8, val: 2, size: 16))
        export.modalities = [.image]
        try export.write(to: root)
        let dataset = try ImageFolderDataset(root: root + "/image/train")
        let capture = LogCapture()
        let pipeline = try DataPipeline(configuration(.folders(image: root + "/image", video: nil, rgbd: nil), batch: 2),
                                        logger: capture.logger)
        // The first sample of epoch 0 becomes a .jpg holding neither JPEG nor PNG bytes.
        let first = dataset.path(of: pipeline.sample(.image, at: 0).index)
        let broken = (first as NSString).deletingPathExtension + ".jpg"
        try FileManager.default.removeItem(atPath: first)
        try Data("not an image at all".utf8).write(to: URL(fileURLWithPath: broken))
        let reopened = try DataPipeline(configuration(.folders(image: root + "/image", video: nil, rgbd: nil), batch: 2),
                                        logger: capture.logger)

        let grid = try InspectGrid.render(reopened, samples: 3, scale: 1)
        let rowHeight = reopened.configuration.recipe.large[0].size + 2
        #expect(grid.height == 2 + 3 * rowHeight, "three rows drawn: the broken sample's row went to the next one")
        #expect(reopened.health.badFiles == [broken])
        let logged = capture.messages.first { $0.contains(broken) } ?? ""
        #expect(logged.contains("neither a PNG nor a JPEG file") && !logged.contains("readable PNG"), "\(logged)")
    }

    @Test func aDatasetOfOnlyBrokenFilesStopsWithAClearError() throws {
        let root = temporaryDirectory("all-broken")
        try FileManager.default.createDirectory(atPath: root + "/a", withIntermediateDirectories: true)
        for i in 0..<40 { try Data("junk".utf8).write(to: URL(fileURLWithPath: root + "/a/\(i).jpg")) }
        let pipeline = try DataPipeline(configuration(.folders(image: root, video: nil, rgbd: nil), batch: 2),
                                        logger: LogCapture().logger)
        #expect { try pipeline.batch(0, context: DecodeContext()) } throws: { "\($0)".contains("unreadable samples in a row") }
    }
}
