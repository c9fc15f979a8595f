import Foundation

/// A picture of what the model sees, for `kaleido data inspect`.
///
/// One row per sample (the first `samples` samples of epoch 0 of every modality in use); the
/// columns are the source image (first frame), the large views, the small views (enlarged to the
/// same cell), one large view with background removal forced on, and then, for RGB-D, the depth
/// of each large view (near = bright), for video, the remaining frames of the first large view's
/// clip. Cells are `scale` times enlarged, nearest-neighbour, with a 2-px gutter.
public enum InspectGrid {
    public static func render(_ pipeline: DataPipeline, samples: Int, scale: Int = 4,
                              context: DecodeContext = DecodeContext()) throws -> Image8 {
        let recipe = pipeline.configuration.recipe
        let cell = recipe.large[0].size
        var forced = recipe
        forced.large[0].saliencyProbability = 1
        let forcedMaker = ViewMaker(recipe: forced)
        var rows: [[[Float]]] = []  // rows of cells, each cell × cell × 3 in [0, 1]
        for modality in pipeline.schedule.modalities {
            let dataset = pipeline.datasets[modality]!
            var drawn = 0
            // As in training, an unreadable file is skipped (and logged with its path by
            // `pipeline.health`), and the next sample of the epoch takes its row.
            for position in 0..<dataset.count where drawn < samples {
                do {
                    rows.append(try row(pipeline, dataset, position: position, forcedMaker: forcedMaker, context: context))
                    drawn += 1
                } catch {
                    pipeline.health.record(path: dataset.path(of: pipeline.sample(modality, at: position).index), error: error)
                }
            }
        }
        let columns = rows.map(\.count).max() ?? 1
        let side = cell * scale, gutter = 2
        let width = columns * (side + gutter) + gutter, height = rows.count * (side + gutter) + gutter
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        for (r, row) in rows.enumerated() {
            for (c, values) in row.enumerated() {
                let x0 = gutter + c * (side + gutter), y0 = gutter + r * (side + gutter)
                for y in 0..<side {
                    for x in 0..<side {
                        let s = ((y / scale) * cell + x / scale) * 3, d = ((y0 + y) * width + x0 + x) * 3
                        for k in 0..<3 { pixels[d + k] = UInt8((min(max(values[s + k], 0), 1) * 255).rounded()) }
                    }
                }
            }
        }
        return Image8(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// The cells of the sample at stream `position`: source, every view, the forced background
    /// removal, then depth (RGB-D) or the first view's other frames (video).
    static func row(_ pipeline: DataPipeline, _ dataset: any Dataset, position: Int, forcedMaker: ViewMaker,
                    context: DecodeContext) throws -> [[Float]] {
        let recipe = pipeline.configuration.recipe, cell = recipe.large[0].size, modality = dataset.modality
        let (epoch, index) = pipeline.sample(modality, at: position)
        let key = SampleKey(seed: pipeline.configuration.seed, epoch: epoch, dataset: modality.rawValue, position: position)
        let sample = try dataset.load(index, frames: [0], context: context)
        var row: [[Float]] = [source(sample.frames[0], cell: cell, context: context)]
        let views = try pipeline.maker.views(of: dataset, index: index, key: key, context: context)
        for (v, view) in recipe.views.enumerated() {
            row.append(enlarge(denormalize(Array(views.rgb[v].prefix(view.size * view.size * 3)), recipe), from: view.size, to: cell))
        }
        let removed = try forcedMaker.views(of: dataset, index: index, key: key, context: context)
        row.append(denormalize(Array(removed.rgb[0].prefix(cell * cell * 3)), recipe))
        if modality == .rgbd {
            for v in 0..<recipe.large.count { row.append(depthCell(views.depth[v])) }
        }
        if modality == .video {
            for t in 1..<pipeline.maker.frames(for: modality) {
                let n = cell * cell * 3
                row.append(denormalize(Array(views.rgb[0][(t * n)..<((t + 1) * n)]), recipe))
            }
        }
        return row
    }

    static func source(_ image: Image8, cell: Int, context: DecodeContext) -> [Float] {
        let x = AxisTaps(sourceSize: image.width, start: 0, length: Float(image.width), outputs: cell)
        let y = AxisTaps(sourceSize: image.height, start: 0, length: Float(image.height), outputs: cell)
        var out = [Float](repeating: 0, count: cell * cell * 3)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                Resample.run(src.baseAddress!, width: image.width, channels: 3, x: x, y: y, gain: 1 / 255,
                             out: dst.baseAddress!, scratch: &context.scratchA)
            }
        }
        return out
    }

    static func denormalize(_ values: [Float], _ recipe: MultiCropRecipe) -> [Float] {
        var out = values
        for i in 0..<(values.count / 3) {
            out[3 * i] = values[3 * i] * recipe.std.x + recipe.mean.x
            out[3 * i + 1] = values[3 * i + 1] * recipe.std.y + recipe.mean.y
            out[3 * i + 2] = values[3 * i + 2] * recipe.std.z + recipe.mean.z
        }
        return out
    }

    static func enlarge(_ values: [Float], from size: Int, to cell: Int) -> [Float] {
        guard size != cell else { return values }
        var out = [Float](repeating: 0, count: cell * cell * 3)
        for y in 0..<cell {
            for x in 0..<cell {
                let s = ((y * size / cell) * size + x * size / cell) * 3
                for k in 0..<3 { out[(y * cell + x) * 3 + k] = values[s + k] }
            }
        }
        return out
    }

    static func depthCell(_ depth: [Float]) -> [Float] {
        let lo = depth.min() ?? 0, hi = depth.max() ?? 1
        let range = max(hi - lo, 1e-6)
        return depth.flatMap { d -> [Float] in
            let v = 1 - (d - lo) / range
            return [v, v, v]
        }
    }
}
