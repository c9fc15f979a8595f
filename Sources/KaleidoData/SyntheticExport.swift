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
        var fileExtension: String { self == .png ? "png" : "jpg" }
    }

    public var spec: SyntheticSpec
    public var format: Format = .png
    public var quality: Int = 95
    public var modalities: [Modality] = Modality.allCases
    /// Also write each image's true object mask as `<index>.mask.png`.
    public var masks = false
    public var threads = 1

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

    private func writeImage(_ image: Image8, to path: String) throws {
        switch format {
        case .png: try ImageCodec.writePNG(image, to: path)
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
