import Foundation

/// Listing helpers shared by the folder readers.
enum Listing {
    static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    static func isDirectory(_ path: String) -> Bool {
        var directory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
    }

    /// Visible entries of a folder, sorted by name.
    static func entries(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    static func subdirectories(_ path: String) -> [String] {
        entries(path).filter { isDirectory(path + "/" + $0) }
    }

    static func isImage(_ name: String) -> Bool {
        guard let dot = name.lastIndex(of: ".") else { return false }
        return imageExtensions.contains(name[name.index(after: dot)...].lowercased()) && !isMask(name)
    }

    static func isMask(_ name: String) -> Bool { name.lowercased().hasSuffix(".mask.png") }

    /// `a/b.jpg` → `a/b.mask.png`: where a foreground mask for an image lives.
    static func maskPath(for image: String) -> String {
        guard let dot = image.lastIndex(of: "."), !image[dot...].contains("/") else { return image + ".mask.png" }
        return String(image[..<dot]) + ".mask.png"
    }

    /// The folder of one split: `root/<split>` when the root has split folders (ImageNet's
    /// `train/` and `val/`), else the root itself for training.
    static func splitRoot(_ root: String, split: Split) throws -> String {
        let trimmed = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
        guard isDirectory(trimmed) else { throw DataError.missingRoot(path: trimmed) }
        let candidate = trimmed + "/" + split.rawValue
        if isDirectory(candidate) { return candidate }
        if split == .train, !isDirectory(trimmed + "/" + Split.val.rawValue) { return trimmed }
        throw DataError.missingRoot(path: candidate)
    }

    /// Class folders of a root, or a clear error.
    static func classes(_ root: String) throws -> [String] {
        guard isDirectory(root) else { throw DataError.missingRoot(path: root) }
        let classes = subdirectories(root)
        guard !classes.isEmpty else { throw DataError.emptyRoot(path: root) }
        return classes
    }

    static func loadMask(_ path: String?, context: DecodeContext) -> Image8? {
        guard let path else { return nil }
        return try? ImageCodec.readGrayPNG(path)
    }
}

/// `root/<class>/<image>.jpg|jpeg|png`, the ImageNet layout (with `root/train` and `root/val`
/// split folders when present). Classes are the sorted folder names. A `name.mask.png` beside an
/// image is its foreground mask for background removal.
public struct ImageFolderDataset: Dataset {
    public let root: String
    public let classes: [String]
    public let files: [String]
    public let labels: [Int32]
    let masks: [String?]
    public var modality: Modality { .image }

    public init(root: String) throws {
        self.root = root
        let classes = try Listing.classes(root)
        var files: [String] = [], labels: [Int32] = [], masks: [String?] = []
        for (label, name) in classes.enumerated() {
            let folder = root + "/" + name
            let entries = Listing.entries(folder)
            let maskNames = Set(entries.filter(Listing.isMask))
            let images = entries.filter(Listing.isImage)
            guard !images.isEmpty else { throw DataError.emptyClass(path: folder, expected: "*.jpg, *.jpeg or *.png files") }
            for image in images {
                let path = folder + "/" + image
                files.append(path)
                labels.append(Int32(label))
                let mask = Listing.maskPath(for: image)
                masks.append(maskNames.contains(mask) ? folder + "/" + mask : nil)
            }
        }
        self.classes = classes
        self.files = files
        self.labels = labels
        self.masks = masks
    }

    public var count: Int { files.count }
    public func label(of index: Int) -> Int { Int(labels[index]) }
    public func frameCount(of index: Int) -> Int { 1 }
    public func path(of index: Int) -> String { files[index] }

    public func load(_ index: Int, frames: [Int], context: DecodeContext) throws -> DecodedSample {
        let image = try context.readImage(files[index])
        return DecodedSample(frames: [image], mask: Listing.loadMask(masks[index], context: context), label: label(of: index))
    }
}

/// `root/<class>/<video_id>/000001.jpg, 000002.jpg, …`: one folder of frames per video, frames
/// in name order.
public struct VideoFrameDataset: Dataset {
    public let root: String
    public let classes: [String]
    public let videos: [String]
    public let frames: [[String]]
    public let labels: [Int32]
    public var modality: Modality { .video }

    public init(root: String) throws {
        self.root = root
        let classes = try Listing.classes(root)
        var videos: [String] = [], frames: [[String]] = [], labels: [Int32] = []
        for (label, name) in classes.enumerated() {
            let folder = root + "/" + name
            let ids = Listing.subdirectories(folder)
            guard !ids.isEmpty else { throw DataError.emptyClass(path: folder, expected: "one folder of frames per video") }
            for id in ids {
                let video = folder + "/" + id
                let names = Listing.entries(video).filter(Listing.isImage)
                guard !names.isEmpty else { throw DataError.emptyVideo(path: video) }
                videos.append(video)
                frames.append(names.map { video + "/" + $0 })
                labels.append(Int32(label))
            }
        }
        self.classes = classes
        self.videos = videos
        self.frames = frames
        self.labels = labels
    }

    public var count: Int { videos.count }
    public func label(of index: Int) -> Int { Int(labels[index]) }
    public func frameCount(of index: Int) -> Int { frames[index].count }
    public func path(of index: Int) -> String { videos[index] }

    public func load(_ index: Int, frames wanted: [Int], context: DecodeContext) throws -> DecodedSample {
        var images: [Image8] = []
        for f in wanted {
            let image = try context.readImage(frames[index][f])
            if let first = images.first, first.width != image.width || first.height != image.height {
                throw ImageDecodeError(path: frames[index][f], reason: "frame is \(image.width)×\(image.height), "
                                       + "the video's first frame \(first.width)×\(first.height)")
            }
            images.append(image)
        }
        return DecodedSample(frames: images, label: label(of: index))
    }
}

/// `root/<class>/<sample_id>/image/<name>.jpg|png` plus `root/<class>/<sample_id>/depth/<name>.png`,
/// the per-sample folders of SUN RGB-D. Depth maps must be 16-bit grayscale PNGs; raw values are
/// divided by `depthScale` to get metres (1000 for millimetres). SUN RGB-D's own files rotate
/// the 16 bits (a 3-bit shift); convert those once with a script before training.
public struct RGBDDataset: Dataset {
    public let root: String
    public let classes: [String]
    public let images: [String]
    public let depths: [String]
    public let labels: [Int32]
    public let depthScale: Float
    public var modality: Modality { .rgbd }

    /// Lists every sample and checks every depth map's PNG header (26 bytes per file), so a
    /// dataset of 8-bit depth maps is an error at start, naming the first bad file.
    public init(root: String, depthScale: Float) throws {
        self.root = root
        self.depthScale = depthScale
        let classes = try Listing.classes(root)
        var images: [String] = [], depths: [String] = [], labels: [Int32] = []
        for (label, name) in classes.enumerated() {
            let folder = root + "/" + name
            let ids = Listing.subdirectories(folder)
            guard !ids.isEmpty else {
                throw DataError.emptyClass(path: folder, expected: "one folder per sample with image/ and depth/")
            }
            for id in ids {
                let sample = folder + "/" + id
                guard let image = Listing.entries(sample + "/image").first(where: Listing.isImage) else {
                    throw DataError.missingFile(path: sample + "/image", what: "RGB image (*.jpg or *.png)")
                }
                guard let depth = Listing.entries(sample + "/depth").first(where: { $0.lowercased().hasSuffix(".png") }) else {
                    throw DataError.missingFile(path: sample + "/depth", what: "16-bit depth PNG")
                }
                let depthPath = sample + "/depth/" + depth
                guard let header = ImageCodec.pngHeader(depthPath) else {
                    throw DataError.depthBitDepth(path: depthPath, found: "a file that is not a PNG")
                }
                guard header.bitDepth == 16, header.colorType == 0 else {
                    let kind = [0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"][header.colorType] ?? "colour type \(header.colorType)"
                    throw DataError.depthBitDepth(path: depthPath, found: "\(header.bitDepth)-bit \(kind)")
                }
                images.append(sample + "/image/" + image)
                depths.append(depthPath)
                labels.append(Int32(label))
            }
        }
        self.classes = classes
        self.images = images
        self.depths = depths
        self.labels = labels
    }

    public var count: Int { images.count }
    public func label(of index: Int) -> Int { Int(labels[index]) }
    public func frameCount(of index: Int) -> Int { 1 }
    public func path(of index: Int) -> String { images[index] }

    public func load(_ index: Int, frames: [Int], context: DecodeContext) throws -> DecodedSample {
        let image = try context.readImage(images[index])
        let depth = try ImageCodec.readPNG16(depths[index])
        guard depth.width == image.width, depth.height == image.height else {
            throw ImageDecodeError(path: depths[index], reason: "depth is \(depth.width)×\(depth.height), "
                                   + "the RGB image \(image.width)×\(image.height)")
        }
        return DecodedSample(frames: [image], depth: depth, depthScale: depthScale,
                             mask: Listing.loadMask(Listing.maskPath(for: images[index]), context: context),
                             label: label(of: index))
    }
}
