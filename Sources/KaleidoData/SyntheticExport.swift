import Foundation
import KaleidoTensor

/// Writes the synthetic dataset to disk in the layouts the folder readers take, so they can be
/// tested on it and so users can look at (or train other tools on) exactly what Kaleido sees:
///
///     DIR/image/{train,val}/<NN-class>/<index>.png
///     DIR/video/{train,val}/<NN-class>/<index>/000001.png …
///     DIR/rgbd/{train,val}/<NN-class>/<index>/image/<index>.png  +  depth/<index>.png (16-bit, mm)
///
/// Class folders are prefixed with the label (`03-cross-stripes`) so sorted folder order is
/// label order; file names carry the in-memory index (six digits).
public struct SyntheticExport {
    public enum Format: String, Sendable, CaseIterable {
        case png, jpeg
        /// WebDataset shards (`WebDataset`) of PNG members: `DIR/<modality>/{train,val}/shard-*.tar`
        /// and `DIR/<modality>/classes.txt`.
        case webdataset
        var fileExtension: String { self == .jpeg ? "jpg" : "png" }
    }

    public var spec: SyntheticSpec
    public var format: Format = .png
    public var quality: Int = 95
    public var modalities: [Modality] = Modality.allCases
    /// Also write each image's true object mask as `<index>.mask.png`.
    public var masks = false
    public var threads = 1
    /// Shard size of the `webdataset` format.
    public var shardBytes = 1 << 30

    public init(spec: SyntheticSpec) { self.spec = spec }

    public static func classFolder(_ label: Int, _ name: String) -> String {
        (label < 10 ? "0" : "") + "\(label)-\(name)"
    }

    public static func fileName(_ index: Int) -> String {
        let digits = String(index)
        return String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    /// Writes everything under `directory`; returns the number of files written.
    @discardableResult
    public func write(to directory: String) throws -> Int {
        if format == .webdataset { return try writeShards(to: directory) }
        let pool = ComputePool(threads: threads)
        var written = 0
        for modality in modalities {
            for split in Split.allCases {
                let dataset = SyntheticDataset(spec: spec, split: split, modality: modality)
                let base = "\(directory)/\(modality)/\(split.rawValue)"
                for (label, name) in dataset.classes.enumerated() {
                    try FileManager.default.createDirectory(atPath: base + "/" + Self.classFolder(label, name),
                                                            withIntermediateDirectories: true)
                }
                let errors = ErrorBox()
                let shared = UncheckedSendable(UnsafeMutableBufferPointer<Int>.allocate(capacity: pool.threads))
                shared.value.initialize(repeating: 0)
                defer { shared.value.deallocate() }
                pool.forEachPart(dataset.count) { part, range in
                    for index in range where !errors.failed {
                        do { shared.value[part] += try writeSample(dataset, index, base: base) } catch { errors.record(error) }
                    }
                }
                if let error = errors.first { throw error }
                written += shared.value.reduce(0, +)
            }
        }
        return written
    }

    private func writeSample(_ dataset: SyntheticDataset, _ index: Int, base: String) throws -> Int {
        let label = dataset.label(of: index)
        let folder = base + "/" + Self.classFolder(label, dataset.classes[label])
        let name = Self.fileName(index)
        let rendered = dataset.renderAll(index)
        switch dataset.modality {
        case .image:
            try writeImage(rendered.frames[0], to: "\(folder)/\(name).\(format.fileExtension)")
            if masks { try ImageCodec.writePNG(rendered.mask, to: "\(folder)/\(name).mask.png") }
            return masks ? 2 : 1
        case .video:
            let video = folder + "/" + name
            try FileManager.default.createDirectory(atPath: video, withIntermediateDirectories: true)
            for (t, frame) in rendered.frames.enumerated() {
                try writeImage(frame, to: "\(video)/\(Self.fileName(t + 1)).\(format.fileExtension)")
            }
            return rendered.frames.count
        case .rgbd:
            let sample = folder + "/" + name
            try FileManager.default.createDirectory(atPath: sample + "/image", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: sample + "/depth", withIntermediateDirectories: true)
            try writeImage(rendered.frames[0], to: "\(sample)/image/\(name).\(format.fileExtension)")
            try ImageCodec.writePNG16(rendered.depth!, to: "\(sample)/depth/\(name).png")
            if masks { try ImageCodec.writePNG(rendered.mask, to: "\(sample)/image/\(name).mask.png") }
            return masks ? 3 : 2
        }
    }

    /// The WebDataset layout: samples rendered and encoded in parallel, a chunk at a time, and
    /// written in index order. Returns the number of samples written.
    private func writeShards(to directory: String) throws -> Int {
        let pool = ComputePool(threads: threads)
        var written = 0
        for modality in modalities {
            for split in Split.allCases {
                let dataset = SyntheticDataset(spec: spec, split: split, modality: modality)
                let writer = try ShardSequenceWriter(directory: "\(directory)/\(modality)/\(split.rawValue)", shardBytes: shardBytes)
                let chunk = 256
                for start in stride(from: 0, to: dataset.count, by: chunk) {
                    let range = start..<min(dataset.count, start + chunk)
                    let encoded = UncheckedSendable(UnsafeMutableBufferPointer<[(String, [UInt8])]>.allocate(capacity: range.count))
                    encoded.value.initialize(repeating: [])
                    defer { encoded.value.deinitialize(); encoded.value.deallocate() }
                    let errors = ErrorBox()
                    pool.forEachRange(range.count) { part in
                        for i in part where !errors.failed {
                            do { encoded.value[i] = try shardMembers(dataset, range.lowerBound + i) } catch { errors.record(error) }
                        }
                    }
                    if let error = errors.first { throw error }
                    for (i, members) in encoded.value.enumerated() {
                        try writer.add(key: Self.fileName(range.lowerBound + i), members: members)
                    }
                }
                try writer.finish()
                written += writer.samples
            }
            try (SyntheticDataset(spec: spec, split: .train, modality: modality).classes.joined(separator: "\n") + "\n")
                .write(toFile: "\(directory)/\(modality)/classes.txt", atomically: true, encoding: .utf8)
        }
        return written
    }

    private func shardMembers(_ dataset: SyntheticDataset, _ index: Int) throws -> [(String, [UInt8])] {
        let rendered = dataset.renderAll(index)
        var members: [(String, [UInt8])]
        switch dataset.modality {
        case .image: members = [("png", try ImageCodec.encodePNG(rendered.frames[0]))]
        case .video: members = try rendered.frames.enumerated().map { t, frame in (String(format: "%03d.png", t), try ImageCodec.encodePNG(frame)) }
        case .rgbd: members = [("png", try ImageCodec.encodePNG(rendered.frames[0])), ("depth.png", try ImageCodec.encodePNG16(rendered.depth!))]
        }
        return members + [("cls", Array("\(dataset.label(of: index))".utf8))]
    }

    private func writeImage(_ image: Image8, to path: String) throws {
        switch format {
        case .png, .webdataset: try ImageCodec.writePNG(image, to: path)
        case .jpeg:
            // 4:4:4: tiny images lose too much colour to 4:2:0 for the files to stand in for the originals.
            let bytes = try ImageCodec.encodeJPEG(image, quality: quality, fullChroma: true)
            guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
                throw ImageDecodeError(path: path, reason: "cannot write file")
            }
        }
    }
}

/// The first error of a parallel loop.
final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private var error: Error?
    var failed: Bool { lock.withLock { error != nil } }
    var first: Error? { lock.withLock { error } }
    func record(_ e: Error) { lock.withLock { if error == nil { error = e } } }
}
