import Foundation
import Testing
@testable import KaleidoData

@Suite struct ImageCodecTests {
    let directory: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-codec-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    func gradient(width: Int, height: Int) -> Image8 {
        var pixels = [UInt8]()
        for y in 0..<height {
            for x in 0..<width { pixels += [UInt8(x * 255 / width), UInt8(y * 255 / height), 128] }
        }
        return Image8(width: width, height: height, channels: 3, pixels: pixels)
    }

    @Test func pngRoundTripIsExact() throws {
        let image = gradient(width: 17, height: 9)
        let path = directory.appendingPathComponent("a.png").path
        try ImageCodec.writePNG(image, to: path)
        #expect(try ImageCodec.readPNG(path) == image)
    }

    @Test func sixteenBitDepthPNGKeepsRawValues() throws {
        let depth = Image16(width: 5, height: 3, pixels: (0..<15).map { UInt16($0 * 4000 + 7) })
        let path = directory.appendingPathComponent("d.png").path
        try ImageCodec.writePNG16(depth, to: path)
        #expect(try ImageCodec.readPNG16(path) == depth)
    }

    @Test func jpegRoundTripIsClose() throws {
        let image = gradient(width: 32, height: 24)
        let decoded = try ImageCodec.decodeJPEG(ImageCodec.encodeJPEG(image, quality: 98), path: "mem.jpg")
        #expect(decoded.width == 32 && decoded.height == 24)
        let error = zip(decoded.pixels, image.pixels).map { abs(Int($0) - Int($1)) }.max()!
        #expect(error < 12)
    }

    @Test func corruptFilesAreErrorsNamingTheFile() throws {
        let path = directory.appendingPathComponent("broken.png").path
        try Data([0x89, 0x50, 0x4E, 0x47, 1, 2, 3]).write(to: URL(fileURLWithPath: path))
        #expect { try ImageCodec.readPNG(path) } throws: { "\($0)".hasPrefix(path + ":") }
        #expect { try ImageCodec.decodeJPEG([0xFF, 0xD8, 0, 0], path: "x/broken.jpg") } throws: {
            "\($0)".hasPrefix("x/broken.jpg:")
        }
        #expect { try ImageCodec.readJPEG(directory.appendingPathComponent("missing.jpg").path) } throws: {
            "\($0)".contains("missing.jpg: cannot read file")
        }
    }

    @Test func librariesReportVersions() {
        #expect(ImageCodec.libpngVersion.hasPrefix("1.6"))
        #expect(ImageCodec.turboJPEGAvailable)
    }
}
