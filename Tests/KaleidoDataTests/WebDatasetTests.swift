import Foundation
import Testing
import KaleidoTensor
@testable import KaleidoData

@Suite struct WebDatasetTests {
    let spec = smallSpec(classes: 4, train: 40, val: 8, size: 20, frames: 3)

    /// The synthetic dataset written as shards of about `shardBytes` (several per split).
    func exportShards(_ name: String, shardBytes: Int = 16 << 10, modalities: [Modality] = Modality.allCases) throws -> String {
        let directory = temporaryDirectory(name)
        var export = SyntheticExport(spec: spec)
        export.format = .webdataset
        export.shardBytes = shardBytes
        export.modalities = modalities
        export.threads = 2
        try export.write(to: directory)
        return directory
    }

    @Test func exportedShardsDecodeEqualToTheInMemoryDataset() throws {
        let directory = try exportShards("roundtrip")
        let context = DecodeContext()
        for modality in Modality.allCases {
            for split in Split.allCases {
                let shards = try WebDataset(location: "\(directory)/\(modality)", split: split, modality: modality)
                let memory = SyntheticDataset(spec: spec, split: split, modality: modality)
                #expect(shards.count == memory.count)
                #expect(shards.classes == memory.classes, "classes.txt gives the names")
                if split == .train && modality == .image { #expect(shards.shards.count > 1, "several shards: \(shards.shards)") }
                for i in 0..<shards.count {
                    // Keys are the in-memory index; shards hold samples in index order.
                    #expect(shards.path(of: i).hasSuffix("/" + SyntheticExport.fileName(i)))
                    let expected = memory.renderAll(i)
                    let loaded = try shards.load(i, frames: Array(0..<shards.frameCount(of: i)), context: context)
                    #expect(loaded.label == memory.label(of: i))
                    #expect(loaded.frames == expected.frames, "\(modality) \(split) \(i)")
                    #expect(loaded.depth == expected.depth)
                }
            }
        }
    }

    @Test func archivesWrittenByGNUTarWithLongNamesAreListed() throws {
        let directory = temporaryDirectory("gnu-tar")
        let long = String(repeating: "d", count: 120)
        let folder = "\(directory)/files/\(long)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let contents: [String: [UInt8]] = ["a.cls": Array("3\n".utf8), "b.txt": Array(repeating: 7, count: 1000), "c.bin": []]
        for (name, bytes) in contents { try Data(bytes).write(to: URL(fileURLWithPath: "\(folder)/\(name)")) }
        for format in ["gnu", "pax", "ustar"] where format != "ustar" {
            let archive = "\(directory)/\(format).tar"
            let tar = Process()
            tar.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            tar.arguments = ["tar", "--format=\(format)", "-cf", archive, "-C", "\(directory)/files", long]
            try tar.run()
            tar.waitUntilExit()
            try #require(tar.terminationStatus == 0)
            let (members, damage) = try TarArchive.members(of: archive)
            #expect(damage == nil)
            #expect(Set(members.map(\.name)) == Set(contents.keys.map { "\(long)/\($0)" }), "\(format)")
            let fd = open(archive, O_RDONLY)
            defer { close(fd) }
            for member in members {
                let name = String(member.name.split(separator: "/").last!)
                #expect(try TarArchive.read(fd, member: member, path: archive) == contents[name], "\(format) \(name)")
            }
        }
    }

    @Test func aDamagedHeaderKeepsTheMembersBeforeItAndATruncatedMemberIsNamedWhenRead() throws {
        let directory = try exportShards("damage", modalities: [.image])
        let shard = "\(directory)/image/train/shard-000000.tar"
        let (members, _) = try TarArchive.members(of: shard)
        let handle = try #require(FileHandle(forUpdatingAtPath: shard))
        // Overwrite the header of the fifth member: its checksum no longer adds up.
        try handle.seek(toOffset: UInt64(members[4].offset - TarArchive.block + 10))
        try handle.write(contentsOf: Array("garbage".utf8))
        try handle.close()
        let (kept, damage) = try TarArchive.members(of: shard)
        #expect(kept == Array(members.prefix(4)))
        #expect(damage?.contains(shard) == true && damage?.contains("byte \(members[4].offset - TarArchive.block)") == true, "\(damage ?? "")")

        // A shard cut inside a member's data: listed, and reading it names the shard and member.
        let second = "\(directory)/image/train/shard-000001.tar"
        let (secondMembers, _) = try TarArchive.members(of: second)
        let cut = secondMembers[2]
        try #require(truncate(second, off_t(cut.offset + cut.size / 2)) == 0)
        let (listed, cutDamage) = try TarArchive.members(of: second)
        #expect(listed.last == cut)
        #expect(cutDamage == nil, "a cut inside a member's data is found when the member is read")
        // Cut inside the header after it: the members before are kept, and the damage says where.
        let (third, _) = try TarArchive.members(of: "\(directory)/image/train/shard-000002.tar")
        let headerStart = third[3].offset - TarArchive.block
        try #require(truncate("\(directory)/image/train/shard-000002.tar", off_t(headerStart + 100)) == 0)
        let (beforeCut, headerDamage) = try TarArchive.members(of: "\(directory)/image/train/shard-000002.tar")
        #expect(beforeCut == Array(third.prefix(3)))
        #expect(headerDamage?.contains("ends inside the header at byte \(headerStart)") == true, "\(headerDamage ?? "")")
        let fd = open(second, O_RDONLY)
        defer { close(fd) }
        #expect {
            try TarArchive.read(fd, member: cut, path: second)
        } throws: { error in
            "\(error)".contains("\(second)/\(cut.name)") && "\(error)".contains("truncated")
        }
    }

    @Test func aCorruptMemberIsSkippedAndNamedLikeACorruptImage() throws {
        let directory = try exportShards("corrupt", modalities: [.image])
        let shard = "\(directory)/image/train/shard-000000.tar"
        let (members, _) = try TarArchive.members(of: shard)
        let image = try #require(members.first { $0.name.hasSuffix(".png") })
        let handle = try #require(FileHandle(forUpdatingAtPath: shard))
        try handle.seek(toOffset: UInt64(image.offset + 8))  // keep the PNG signature, break the chunks
        try handle.write(contentsOf: [UInt8](repeating: 0xAB, count: 32))
        try handle.close()
        let capture = LogCapture()
        var c = configuration(.shards(image: "\(directory)/image", video: nil, rgbd: nil), batch: 8)
        c.shuffle = false
        let pipeline = try DataPipeline(c, logger: capture.logger)
        var skipped = 0
        for step in 0..<5 { skipped += try pipeline.batch(step, context: DecodeContext()).skipped }
        #expect(skipped == 1)
        // The sample is named by shard and key; the log line names the member and what is wrong.
        #expect(pipeline.health.badFiles == ["\(shard)/\(WebDataset.splitKey(image.name).key)"])
        #expect(capture.messages.contains { $0.contains("\(shard)/\(image.name)") && $0.contains("PNG") }, "\(capture.messages)")
    }

    @Test func theEpochOrderVisitsShardsInTurnAndIsTheSameAtEveryWorldSize() throws {
        let directory = try exportShards("order", modalities: [.image])
        let pipeline = try DataPipeline(configuration(.shards(image: "\(directory)/image", video: nil, rgbd: nil), batch: 8))
        let dataset = try #require(pipeline.datasets[.image] as? WebDataset)
        let blocks = try #require(dataset.readBlocks)
        #expect(blocks.count >= 3)
        for epoch in 0..<2 {
            let order = pipeline.permutation(.image, epoch: epoch).map(Int.init)
            #expect(Set(order) == Set(0..<dataset.count), "a permutation")
            // Consecutive positions stay in one shard until it is used up.
            let shardOfPosition = order.map { index in blocks.firstIndex { $0.contains(index) }! }
            var runs: [Int] = []
            for shard in shardOfPosition where runs.last != shard { runs.append(shard) }
            #expect(runs.count == blocks.count && Set(runs).count == blocks.count, "each shard read in one run: \(runs)")
            #expect(order != Array(0..<dataset.count), "shuffled")
        }
        #expect(pipeline.permutation(.image, epoch: 0) != pipeline.permutation(.image, epoch: 1))
        // Every world size sees the same global batches: ranks' slices join into the one-rank batch.
        for step in [0, 4, 7] {
            let whole = try pipeline.batch(step, context: DecodeContext())
            for world in [2, 3] {
                let parts = try (0..<world).map { try pipeline.batch(step, rank: $0, worldSize: world, context: DecodeContext()) }
                #expect(parts.flatMap { $0.groups[0].labels } == whole.groups[0].labels)
                #expect(parts.flatMap { $0.groups[0].largeView(0).array } == whole.groups[0].largeView(0).array)
            }
        }
    }

    @Test func aResumedPipelineMakesTheBatchesOfTheUninterruptedOne() throws {
        let directory = try exportShards("resume")
        let c = configuration(.shards(image: "\(directory)/image", video: "\(directory)/video", rgbd: "\(directory)/rgbd"), batch: 9,
                              shares: [.image: 1, .video: 1, .rgbd: 1])
        let uninterrupted = try DataPipeline(c)
        let reference = try (0..<12).map { flatten(try uninterrupted.batch($0, rank: 1, worldSize: 2, context: DecodeContext())) }
        let state = uninterrupted.state(at: 7)
        let restarted = try DataPipeline(c)  // a new process: nothing carried over but the saved state
        let step = try restarted.resume(from: state)
        let loader = try DataLoader(pipeline: restarted, rank: 1, worldSize: 2, state: state, workers: 2)
        defer { loader.stop() }
        for expected in reference[step...] { #expect(flatten(try loader.next()) == expected) }

        // Resumed at another world size: the three ranks' slices join into the one-rank batch.
        let single = try (step..<(step + 3)).map { try uninterrupted.batch($0, context: DecodeContext()) }
        let ranks = try (0..<3).map { rank in try DataLoader(pipeline: DataPipeline(c), rank: rank, worldSize: 3, state: state, workers: 1) }
        defer { ranks.forEach { $0.stop() } }
        for whole in single {
            let parts = try ranks.map { try $0.next() }
            for (g, group) in whole.groups.enumerated() {
                #expect(parts.flatMap { $0.groups[g].labels } == group.labels)
                #expect(parts.flatMap { $0.groups[g].largeView(1).array } == group.largeView(1).array, "\(group.modality)")
            }
        }
    }

    @Test func aCompressedShardIsRefusedNamingIt() throws {
        let directory = try exportShards("gzip", modalities: [.image])
        let shard = "\(directory)/image/train/shard-000000.tar"
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        gzip.arguments = ["gzip", "-n", shard]
        try gzip.run()
        gzip.waitUntilExit()
        try FileManager.default.moveItem(atPath: shard + ".gz", toPath: shard)
        #expect {
            try WebDataset(location: "\(directory)/image", split: .train, modality: .image)
        } throws: { error in
            "\(error)".hasPrefix(shard) && "\(error)".contains("gzip")
        }
    }

    @Test func listingsAreCachedAndRedoneWhenAShardChanges() throws {
        let directory = try exportShards("cache", modalities: [.image])
        let cache = temporaryDirectory("cache-index")
        let first = try WebDataset(location: "\(directory)/image", split: .train, modality: .image, indexCache: cache)
        let cached = Listing.entries(cache).filter { $0.hasSuffix(".json") }
        #expect(cached.count == first.shards.count)
        // A cached listing is used as it is: a planted one (every member renamed) shows through.
        let shard = first.shards[0]
        let file = "\(cache)/\(String(format: "%016llx", FNV1a.hash(shard))).json"
        var listing = try JSONDecoder().decode(ShardListing.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
        let renamed = listing.labels.count
        listing.labels = Dictionary(uniqueKeysWithValues: listing.labels.map { ($0.key, Int32(3)) })
        try JSONEncoder().encode(listing).write(to: URL(fileURLWithPath: file))
        let fromCache = try WebDataset(location: "\(directory)/image", split: .train, modality: .image, indexCache: cache)
        #expect((0..<renamed).allSatisfy { fromCache.label(of: $0) == 3 })
        // Touching the shard (new modification time) makes the listing stale: it is read again.
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(60)], ofItemAtPath: shard)
        let relisted = try WebDataset(location: "\(directory)/image", split: .train, modality: .image, indexCache: cache)
        #expect((0..<relisted.count).map(relisted.label(of:)) == (0..<first.count).map(first.label(of:)))
    }

    @Test func bracePatternsNameTheShardsAndTheirValSplit() throws {
        #expect(try BracePattern.expand("/d/train-{000..002}.tar") == ["/d/train-000.tar", "/d/train-001.tar", "/d/train-002.tar"])
        // A range is padded to its lower bound's width, as the shell does.
        #expect(try BracePattern.expand("/d/{a,b}-{8..10}.tar") == ["/d/a-8.tar", "/d/a-9.tar", "/d/a-10.tar",
                                                                     "/d/b-8.tar", "/d/b-9.tar", "/d/b-10.tar"])
        #expect(throws: DataError.self) { try BracePattern.expand("/d/train-{3..1}.tar") }

        let directory = try exportShards("pattern", modalities: [.image])
        let train = Listing.entries("\(directory)/image/train").filter { $0.hasSuffix(".tar") }
        let val = Listing.entries("\(directory)/image/val").filter { $0.hasSuffix(".tar") }
        // The same shards under flat names: train-000000.tar … and val-000000.tar ….
        let flat = temporaryDirectory("pattern-flat")
        for (split, names) in [("train", train), ("val", val)] {
            for name in names {
                try FileManager.default.copyItem(atPath: "\(directory)/image/\(split)/\(name)",
                                                 toPath: "\(flat)/\(name.replacingOccurrences(of: "shard", with: split))")
            }
        }
        let last = String(format: "%06d", train.count - 1)
        let pattern = "\(flat)/train-{000000..\(last)}.tar"
        let fromPattern = try WebDataset(location: pattern, split: .train, modality: .image)
        let fromFolder = try WebDataset(location: "\(directory)/image", split: .train, modality: .image)
        #expect(fromPattern.count == fromFolder.count)
        #expect((0..<fromPattern.count).map(fromPattern.label(of:)) == (0..<fromFolder.count).map(fromFolder.label(of:)))
        let valSet = try WebDataset(location: "\(flat)/train-{000000..\(String(format: "%06d", val.count - 1))}.tar",
                                    split: .val, modality: .image)
        #expect(valSet.count == spec.valSize)
        #expect(throws: DataError.badShard(path: "\(flat)/train-999998.tar", reason: "no such shard")) {
            try WebDataset(location: "\(flat)/train-{999998..999999}.tar", split: .train, modality: .image)
        }
    }

    @Test func aSampleWithoutItsClassIsAnErrorNamingShardAndKey() throws {
        let directory = temporaryDirectory("no-class")
        try FileManager.default.createDirectory(atPath: "\(directory)/train", withIntermediateDirectories: true)
        let writer = try TarArchive.Writer(path: "\(directory)/train/shard-000000.tar")
        let png = try ImageCodec.encodePNG(Image8(width: 2, height: 2, channels: 3, pixels: Array(repeating: 9, count: 12)))
        try writer.add(name: "k1.png", bytes: png)
        try writer.add(name: "k1.cls", bytes: Array("0".utf8))
        try writer.add(name: "k2.png", bytes: png)
        try writer.finish()
        #expect(throws: DataError.missingFile(path: "\(directory)/train/shard-000000.tar/k2",
                                             what: "class (k2.cls holding a class number)")) {
            try WebDataset(location: directory, split: .train, modality: .image)
        }
    }

    @Test func packingAnImageFolderKeepsEveryImageAndLabel() throws {
        let directory = temporaryDirectory("pack")
        var export = SyntheticExport(spec: spec)
        export.modalities = [.image]
        try export.write(to: directory)
        var pack = WebDatasetPack()
        pack.shardBytes = 20 << 10
        let summary = try pack.pack(folder: "\(directory)/image", into: "\(directory)/shards")
        #expect(summary.samples[.train] == spec.trainSize && summary.samples[.val] == spec.valSize)
        #expect((summary.shards[.train] ?? 0) > 1)
        let context = DecodeContext()
        for split in Split.allCases {
            let folder = try ImageFolderDataset(root: Listing.splitRoot("\(directory)/image", split: split))
            let shards = try WebDataset(location: "\(directory)/shards", split: split, modality: .image)
            #expect(shards.classes == folder.classes)
            var fromFolder: [String: Int] = [:], fromShards: [String: Int] = [:]
            for i in 0..<folder.count {
                let sample = try folder.load(i, frames: [0], context: context)
                fromFolder[sample.frames[0].pixels.description, default: 0] += sample.label + 1
            }
            for i in 0..<shards.count {
                let sample = try shards.load(i, frames: [0], context: context)
                fromShards[sample.frames[0].pixels.description, default: 0] += sample.label + 1
            }
            #expect(fromShards == fromFolder, "the same images with the same labels")
            #expect((0..<shards.count).map(shards.label(of:)) != (0..<folder.count).map(folder.label(of:)).sorted(),
                    "shuffled once when packed, not class by class")
        }
    }
}
