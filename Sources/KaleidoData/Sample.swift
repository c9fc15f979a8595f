import CTurboJPEG
import KaleidoTensor

/// The kind of input a sample is. The raw value is the modality id handed to the model
/// (Omnivore routes RGB-D through an extra depth patch embedding).
public enum Modality: Int, Codable, Sendable, CaseIterable, CustomStringConvertible {
    case image = 0
    case video = 1
    case rgbd = 2

    public var description: String {
        switch self {
        case .image: return "image"
        case .video: return "video"
        case .rgbd: return "rgbd"
        }
    }
}

/// Train or validation half of a dataset.
public enum Split: String, Codable, Sendable, CaseIterable {
    case train, val
}

/// The decoded pixels of one sample, before augmentation.
public struct DecodedSample: Sendable {
    /// The requested frames (one for images and RGB-D), 8-bit RGB, all the same size.
    public var frames: [Image8]
    /// RGB-D only: raw 16-bit depth, the same size as the RGB frame.
    public var depth: Image16?
    /// Raw depth units per metre (1000 for millimetres).
    public var depthScale: Float
    /// Foreground mask (one channel, 255 = object) from a mask file beside the image, if any.
    public var mask: Image8?
    public var label: Int

    public init(frames: [Image8], depth: Image16? = nil, depthScale: Float = 1000, mask: Image8? = nil, label: Int) {
        self.frames = frames
        self.depth = depth
        self.depthScale = depthScale
        self.mask = mask
        self.label = label
    }

    public var width: Int { frames[0].width }
    public var height: Int { frames[0].height }
}

/// A source of labelled samples of one modality, addressed by index.
///
/// Implementations are immutable after opening (listing files happens in `init`), so one value
/// is shared by every decode thread.
public protocol Dataset: Sendable {
    var modality: Modality { get }
    /// Class names; labels index into this list. The same list in every modality of a joint run.
    var classes: [String] { get }
    var count: Int { get }
    func label(of index: Int) -> Int
    /// Frames of sample `index` (1 for images and RGB-D).
    func frameCount(of index: Int) -> Int
    /// Where sample `index` lives, for log lines and errors.
    func path(of index: Int) -> String
    /// Decodes the frames `frames` (ascending, each < `frameCount(of:)`) of sample `index`.
    func load(_ index: Int, frames: [Int], context: DecodeContext) throws -> DecodedSample
    /// Index ranges best read together (a WebDataset's shards): the epoch order then visits them
    /// in turn, shuffling within each. nil: any order reads as well as another.
    var readBlocks: [Range<Int>]? { get }
}

extension Dataset {
    public var readBlocks: [Range<Int>]? { nil }
}

/// Per-thread resources reused across samples: a TurboJPEG handle and scratch buffers. Each
/// decode thread owns one; it is never shared.
public final class DecodeContext {
    private var jpegHandle: tjhandle?
    /// Scratch for separable resampling and blurs, grown on demand.
    var scratchA: [Float] = []
    var scratchB: [Float] = []
    var scratchC: [Float] = []

    public init() {}

    deinit { if let jpegHandle { tjDestroy(jpegHandle) } }

    /// The thread's decompressor, created on first use.
    func jpegDecompressor() -> tjhandle? {
        if jpegHandle == nil { jpegHandle = tjInitDecompress() }
        return jpegHandle
    }

    /// Decodes PNG or JPEG bytes (chosen by their signature, not the file name); bytes that are
    /// neither are named as such, whatever the file is called.
    public func decodeImage(_ data: [UInt8], path: String) throws -> Image8 {
        if data.starts(with: [0xFF, 0xD8]) {
            return try ImageCodec.decodeJPEG(data, path: path, handle: jpegDecompressor())
        }
        if data.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return try ImageCodec.decodePNG(data, path: path) }
        let start = data.prefix(4).map { String($0, radix: 16) }.joined(separator: " ")
        throw ImageDecodeError(path: path, reason: data.isEmpty ? "empty file, not an image"
                               : "neither a PNG nor a JPEG file (it starts with bytes \(start))")
    }

    /// Reads and decodes an image file.
    public func readImage(_ path: String) throws -> Image8 {
        try decodeImage(ImageCodec.readFile(path), path: path)
    }
}

@inline(__always) func ensureCapacity(_ buffer: inout [Float], _ count: Int) {
    if buffer.count < count { buffer = [Float](repeating: 0, count: count) }
}

/// An 8-bit image in memory, rows of interleaved channels (HWC), top row first.
public struct Image8: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixel buffer does not match \(width)×\(height)×\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// A 16-bit single-channel image (depth maps in the SUN RGB-D layout), top row first.
public struct Image16: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt16]

    public init(width: Int, height: Int, pixels: [UInt16]) {
        precondition(pixels.count == width * height, "pixel buffer does not match \(width)×\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}
