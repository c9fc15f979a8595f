import CPNG
import CTurboJPEG
import Foundation
import KaleidoTensor

/// A file that could not be read or decoded; the path is always named.
public struct ImageDecodeError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// PNG (libpng's simplified API) and JPEG (libjpeg-turbo's TurboJPEG API) reading and writing.
public enum ImageCodec {
    /// Version of the libpng actually loaded, e.g. "1.6.39".
    public static var libpngVersion: String {
        let v = Int(png_access_version_number())  // encoded as xxyyzz
        return "\(v / 10000).\((v / 100) % 100).\(v % 100)"
    }

    /// True when a TurboJPEG handle can be created, i.e. libturbojpeg is linked and loads.
    public static var turboJPEGAvailable: Bool {
        guard let handle = tjInitDecompress() else { return false }
        tjDestroy(handle)
        return true
    }

    // MARK: - PNG

    /// Reads a PNG as 8-bit RGB (gray and palette files are expanded, alpha is dropped).
    public static func readPNG(_ path: String) throws -> Image8 {
        let data = try readFile(path)
        return try decodePNG(data, path: path)
    }

    /// Decodes PNG bytes as 8-bit RGB; `path` names the source in errors.
    public static func decodePNG(_ data: [UInt8], path: String) throws -> Image8 {
        let (width, height, pixels) = try decodePNGPixels(data, path: path, format: png_uint_32(PNG_FORMAT_RGB), channels: 3, as: UInt8.self)
        return Image8(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// Reads a 16-bit grayscale PNG without any value conversion (depth maps store millimetres or
    /// scaled units; the scale is the dataset's business, not the codec's).
    public static func readPNG16(_ path: String) throws -> Image16 {
        try decodePNG16(try readFile(path), path: path)
    }

    /// `readPNG16` of bytes in memory (a depth map inside a WebDataset shard); `path` names them.
    public static func decodePNG16(_ data: [UInt8], path: String) throws -> Image16 {
        let (width, height, pixels) = try decodePNGPixels(data, path: path, format: png_uint_32(PNG_FORMAT_LINEAR_Y),
                                                          channels: 1, as: UInt16.self) { stored in
            stored & png_uint_32(PNG_FORMAT_FLAG_LINEAR) != 0 && stored & png_uint_32(PNG_FORMAT_FLAG_COLOR) == 0
                ? nil : "expected a 16-bit grayscale PNG (depth map)"
        }
        return Image16(width: width, height: height, pixels: pixels)
    }

    /// Writes 8-bit gray (1 channel) or RGB (3 channels) PNG.
    public static func writePNG(_ picture: Image8, to path: String) throws {
        precondition(picture.channels == 1 || picture.channels == 3, "PNG writer takes 1 or 3 channels")
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(picture.width)
        image.height = png_uint_32(picture.height)
        image.format = picture.channels == 3 ? png_uint_32(PNG_FORMAT_RGB) : png_uint_32(PNG_FORMAT_GRAY)
        let ok = picture.pixels.withUnsafeBytes { bytes in
            png_image_write_to_file(&image, path, 0, bytes.baseAddress, Int32(picture.width * picture.channels), nil)
        }
        guard ok != 0 else { throw ImageDecodeError(path: path, reason: "cannot write PNG (\(message(of: &image)))") }
    }

    /// PNG bytes of an 8-bit gray or RGB image, or of a 16-bit depth map (members of WebDataset shards).
    public static func encodePNG(_ picture: Image8) throws -> [UInt8] {
        precondition(picture.channels == 1 || picture.channels == 3, "PNG writer takes 1 or 3 channels")
        return try encodePNG(width: picture.width, height: picture.height,
                             format: picture.channels == 3 ? png_uint_32(PNG_FORMAT_RGB) : png_uint_32(PNG_FORMAT_GRAY),
                             rowStride: picture.width * picture.channels, pixels: picture.pixels)
    }

    public static func encodePNG16(_ picture: Image16) throws -> [UInt8] {
        try encodePNG(width: picture.width, height: picture.height, format: png_uint_32(PNG_FORMAT_LINEAR_Y),
                      rowStride: picture.width, pixels: picture.pixels)
    }

    private static func encodePNG<Pixel>(width: Int, height: Int, format: png_uint_32, rowStride: Int, pixels: [Pixel]) throws -> [UInt8] {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        image.format = format
        return try pixels.withUnsafeBytes { source in
            var size: png_alloc_size_t = 0
            guard png_image_write_to_memory(&image, nil, &size, 0, source.baseAddress, Int32(rowStride), nil) != 0 else {
                throw ImageDecodeError(path: "(memory)", reason: "cannot encode PNG (\(message(of: &image)))")
            }
            var bytes = [UInt8](repeating: 0, count: Int(size))
            let ok = bytes.withUnsafeMutableBytes { png_image_write_to_memory(&image, $0.baseAddress, &size, 0, source.baseAddress, Int32(rowStride), nil) }
            guard ok != 0 else { throw ImageDecodeError(path: "(memory)", reason: "cannot encode PNG (\(message(of: &image)))") }
            return Array(bytes.prefix(Int(size)))
        }
    }

    /// Writes a 16-bit grayscale PNG.
    public static func writePNG16(_ picture: Image16, to path: String) throws {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(picture.width)
        image.height = png_uint_32(picture.height)
        image.format = png_uint_32(PNG_FORMAT_LINEAR_Y)
        let ok = picture.pixels.withUnsafeBytes { bytes in
            png_image_write_to_file(&image, path, 0, bytes.baseAddress, Int32(picture.width), nil)
        }
        guard ok != 0 else { throw ImageDecodeError(path: path, reason: "cannot write PNG (\(message(of: &image)))") }
    }

    // MARK: - JPEG

    /// Reads a JPEG as 8-bit RGB.
    public static func readJPEG(_ path: String) throws -> Image8 {
        try decodeJPEG(readFile(path), path: path)
    }

    /// Decodes JPEG bytes as 8-bit RGB; `path` names the source in errors.
    public static func decodeJPEG(_ data: [UInt8], path: String) throws -> Image8 {
        guard let handle = tjInitDecompress() else { throw ImageDecodeError(path: path, reason: "TurboJPEG init failed") }
        defer { tjDestroy(handle) }
        return try decodeJPEG(data, path: path, handle: handle)
    }

    /// Decodes JPEG bytes with a decompressor the caller keeps (one per decode thread, which saves
    /// creating and destroying libjpeg-turbo's state for every file).
    static func decodeJPEG(_ data: [UInt8], path: String, handle: tjhandle?) throws -> Image8 {
        guard let handle else { throw ImageDecodeError(path: path, reason: "TurboJPEG init failed") }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        let header = data.withUnsafeBufferPointer { bytes in
            tjDecompressHeader3(handle, bytes.baseAddress, UInt(bytes.count), &width, &height, &subsampling, &colorspace)
        }
        guard header == 0, width > 0, height > 0 else {
            throw ImageDecodeError(path: path, reason: "not a readable JPEG (\(jpegError(handle)))")
        }
        var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * 3)
        let status = data.withUnsafeBufferPointer { bytes in
            pixels.withUnsafeMutableBufferPointer { out in
                tjDecompress2(handle, bytes.baseAddress, UInt(bytes.count), out.baseAddress,
                              width, width * 3, height, Int32(TJPF_RGB.rawValue), 0)
            }
        }
        // A warning (e.g. premature end of data) still yields pixels; only errors are fatal.
        if status != 0, tjGetErrorCode(handle) == Int32(TJERR_FATAL.rawValue) {
            throw ImageDecodeError(path: path, reason: "corrupt JPEG (\(jpegError(handle)))")
        }
        return Image8(width: Int(width), height: Int(height), channels: 3, pixels: pixels)
    }

    /// Encodes 8-bit RGB as JPEG, with 4:2:0 chroma subsampling (what cameras and ImageNet use)
    /// unless `fullChroma` asks for 4:4:4.
    public static func encodeJPEG(_ picture: Image8, quality: Int = 95, fullChroma: Bool = false) throws -> [UInt8] {
        precondition(picture.channels == 3, "JPEG writer takes RGB")
        guard let handle = tjInitCompress() else { throw ImageDecodeError(path: "<memory>", reason: "TurboJPEG init failed") }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let status = picture.pixels.withUnsafeBufferPointer { pixels in
            tjCompress2(handle, pixels.baseAddress, Int32(picture.width), Int32(picture.width * 3), Int32(picture.height),
                        Int32(TJPF_RGB.rawValue), &output, &size,
                        Int32((fullChroma ? TJSAMP_444 : TJSAMP_420).rawValue), Int32(quality), 0)
        }
        defer { if let output { tjFree(output) } }
        guard status == 0, let output else { throw ImageDecodeError(path: "<memory>", reason: jpegError(handle)) }
        return Array(UnsafeBufferPointer(start: output, count: Int(size)))
    }

    // MARK: - Helpers

    /// Reads a whole file with open/fstat/read: for the small files of a dataset this is several
    /// times cheaper than going through Foundation's `Data`.
    static func readFile(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw ImageDecodeError(path: path, reason: "cannot read file (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw ImageDecodeError(path: path, reason: "cannot read file (not a regular file)")
        }
        let size = Int(info.st_size)
        var failed = false
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            var done = 0
            while done < size {
                let got = read(fd, buffer.baseAddress! + done, size - done)
                if got < 0, errno == EINTR { continue }
                if got <= 0 { failed = got < 0; break }
                done += got
            }
            initialized = done
        }
        guard !failed else { throw ImageDecodeError(path: path, reason: "cannot read file (\(String(cString: strerror(errno))))") }
        return bytes
    }

    /// Bit depth and colour type of a PNG from its IHDR chunk (the first 26 bytes), without
    /// decoding it; nil when the file is not a PNG.
    public static func pngHeader(_ path: String) -> (bitDepth: Int, colorType: Int)? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 26)
        let got = header.withUnsafeMutableBytes { read(fd, $0.baseAddress, 26) }
        guard got == 26, header[0] == 0x89, header[1] == 0x50, header[2] == 0x4E, header[3] == 0x47,
              header[12] == 0x49, header[13] == 0x48, header[14] == 0x44, header[15] == 0x52 else { return nil }
        return (Int(header[24]), Int(header[25]))
    }

    /// Reads a PNG as 8-bit gray (foreground masks).
    public static func readGrayPNG(_ path: String) throws -> Image8 {
        let (width, height, pixels) = try decodePNGPixels(try readFile(path), path: path, format: png_uint_32(PNG_FORMAT_GRAY),
                                                          channels: 1, as: UInt8.self)
        return Image8(width: width, height: height, channels: 1, pixels: pixels)
    }

    /// The one PNG reader: libpng's simplified API over the file's bytes, converting to `format`
    /// (`channels` samples of `Sample` per pixel). The bytes stay pinned until libpng has finished
    /// reading them; `refuse` may reject the stored format before any conversion.
    private static func decodePNGPixels<Sample: FixedWidthInteger>(
        _ data: [UInt8], path: String, format: png_uint_32, channels: Int, as: Sample.Type,
        refuse: (png_uint_32) -> String? = { _ in nil }
    ) throws -> (width: Int, height: Int, pixels: [Sample]) {
        try data.withUnsafeBytes { bytes in
            var image = png_image()
            image.version = png_uint_32(PNG_IMAGE_VERSION)
            guard png_image_begin_read_from_memory(&image, bytes.baseAddress, bytes.count) != 0 else {
                throw ImageDecodeError(path: path, reason: "not a readable PNG (\(message(of: &image)))")
            }
            defer { png_image_free(&image) }
            if let problem = refuse(image.format) { throw ImageDecodeError(path: path, reason: problem) }
            image.format = format
            let width = Int(image.width), height = Int(image.height)
            var pixels = [Sample](repeating: 0, count: width * height * channels)
            let ok = pixels.withUnsafeMutableBytes { out in
                png_image_finish_read(&image, nil, out.baseAddress, Int32(width * channels), nil)
            }
            guard ok != 0 else { throw ImageDecodeError(path: path, reason: "corrupt PNG (\(message(of: &image)))") }
            return (width, height, pixels)
        }
    }

    private static func message(of image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private static func jpegError(_ handle: tjhandle) -> String {
        guard let text = tjGetErrorStr2(handle) else { return "unknown error" }
        return String(cString: text)
    }
}
