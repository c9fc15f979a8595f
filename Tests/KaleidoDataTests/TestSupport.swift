import Foundation
import KaleidoTensor
import Logging
@testable import KaleidoData

/// A fresh temporary folder per call.
func temporaryDirectory(_ name: String) -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-data-\(name)-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

/// A small synthetic spec that renders quickly in debug builds.
func smallSpec(classes: Int = 4, train: Int = 24, val: Int = 8, size: Int = 24, frames: Int = 4) -> SyntheticSpec {
    var spec = SyntheticSpec()
    spec.classes = classes
    spec.trainSize = train
    spec.valSize = val
    spec.size = size
    spec.frames = frames
    return spec
}

/// The 4-view debug recipe (2 × large + 2 × small).
func recipe(large: Int = 16, small: Int = 8, saliency: Float = 0.1, clip: Int = 2) -> MultiCropRecipe {
    MultiCropRecipe.relicv2(largeCrops: 2, largeSize: large, largeScale: 0.2...1, smallCrops: 2, smallSize: small,
                            smallScale: 0.05...0.3, saliencyProbability: saliency, clipFrames: clip)
}

func configuration(_ source: DataConfiguration.Source, batch: Int = 8, shares: [Modality: Double] = [.image: 1],
                   mode: MixMode = .joint, seed: UInt64 = 7) -> DataConfiguration {
    var c = DataConfiguration(source: source, recipe: recipe())
    c.globalBatch = batch
    c.shares = shares
    c.mixMode = mode
    c.seed = seed
    c.finetune = FineTuneRecipe(size: 16)
    return c
}

/// Every float of a batch, group by group, for equality checks.
func flatten(_ batch: Batch) -> [Float] {
    batch.groups.flatMap { g in g.large.array + (g.small?.array ?? []) + (g.largeDepth?.array ?? []) + (g.smallDepth?.array ?? []) }
}

/// A dataset built from pixels in memory, for tests that need exact control.
struct MemoryDataset: Dataset {
    var modality: Modality
    var classes: [String]
    var samples: [DecodedSample]
    var count: Int { samples.count }
    func label(of index: Int) -> Int { samples[index].label }
    func frameCount(of index: Int) -> Int { samples[index].frames.count }
    func path(of index: Int) -> String { "memory/\(index)" }
    func load(_ index: Int, frames: [Int], context: DecodeContext) throws -> DecodedSample {
        var sample = samples[index]
        sample.frames = frames.map { samples[index].frames[$0] }
        return sample
    }
}

func solid(_ size: Int, _ r: UInt8, _ g: UInt8, _ b: UInt8) -> Image8 {
    Image8(width: size, height: size, channels: 3, pixels: [UInt8]((0..<(size * size)).flatMap { _ in [r, g, b] }))
}

/// A log handler that keeps messages, to check what the loader reports.
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    var messages: [String] { lock.withLock { lines } }
    func append(_ line: String) { lock.withLock { lines.append(line) } }

    var logger: Logger {
        Logger(label: "test.data") { _ in CaptureHandler(capture: self) }
    }

    struct CaptureHandler: LogHandler {
        let capture: LogCapture
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            capture.append("\(event.level) \(event.message) \(fields)")
        }
    }
}
