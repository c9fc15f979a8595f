import Foundation
import KaleidoTensor

/// Size and seed of the embedded synthetic dataset.
public struct SyntheticSpec: Sendable, Codable, Equatable {
    public var classes: Int = 10
    public var trainSize: Int = 2000
    public var valSize: Int = 500
    /// Side of every image, video frame and depth map in pixels.
    public var size: Int = 32
    /// Frames per video.
    public var frames: Int = 8
    /// Objects of the sample's class in every scene, each with its own colours, size, pose and
    /// texture phase, laid out on a √n×√n grid. With several, two crops of one image usually
    /// show different objects, so what views of a sample share is mostly the class (shape and
    /// texture) rather than one object's colours: the invariance self-supervision can learn in a
    /// few hundred steps. With 1, one large object (the layout of earlier versions).
    public var objects: Int = 4
    /// Seed of the scenes: the dataset itself, independent of the run's seed.
    public var seed: UInt64 = 0

    public init() {}

    /// The largest class count: every shape × texture combination.
    public static let maximumClasses = SyntheticShape.allCases.count * SyntheticTexture.allCases.count

    public func count(_ split: Split) -> Int { split == .train ? trainSize : valSize }
}

/// Object outlines of the synthetic classes.
public enum SyntheticShape: Int, CaseIterable, Sendable {
    case disk, square, triangle, cross, ring, halfDisk
    var name: String { ["disk", "square", "triangle", "cross", "ring", "halfdisk"][rawValue] }
}

/// Surface patterns of the synthetic classes; the two-colour ones come first so that with few
/// classes every class is two-coloured and pixel statistics alone do not separate them.
public enum SyntheticTexture: Int, CaseIterable, Sendable {
    case stripes, checker, dots, solid
    var name: String { ["stripes", "checker", "dots", "solid"][rawValue] }
}

/// The embedded dataset: procedurally drawn scenes, generated on the fly from (seed, modality,
/// split, index), so `kaleido pretrain` needs no download and every run sees the same data.
///
/// A class is a (shape, texture) pair, e.g. "triangle-checker"; with n classes the first
/// ⌈n/6⌉ textures and ⌈n/⌈n/6⌉⌉ shapes are crossed, so both shape and texture must be seen to
/// tell classes apart. A scene holds `spec.objects` objects of its class. Everything else is a
/// nuisance drawn per object or per sample: each object's two colours, position, size, rotation
/// and texture phase, the background gradient, 3–5 solid distractor shapes and lines (from the
/// same shape set), and pixel noise. Colour statistics therefore carry almost no class
/// information (a test checks this), so a pretrained encoder's linear probe has a lot to gain
/// over random features.
///
/// Videos: the same kind of scene with the object and distractors moving (bouncing off the
/// borders) and the object spinning. RGB-D: the scene with a depth map in millimetres: a
/// receding back plane, distractors in the middle distance and the object in front with a
/// shape-dependent relief (spherical for disks, tilted planes otherwise).
public struct SyntheticDataset: Dataset {
    public let spec: SyntheticSpec
    public let split: Split
    public let modality: Modality
    public let classes: [String]

    public init(spec: SyntheticSpec, split: Split, modality: Modality) {
        precondition(spec.classes >= 2 && spec.classes <= SyntheticSpec.maximumClasses,
                     "synthetic classes must be in 2…\(SyntheticSpec.maximumClasses)")
        self.spec = spec
        self.split = split
        self.modality = modality
        self.classes = (0..<spec.classes).map { c in
            let (shape, texture) = SyntheticDataset.parts(of: c, classes: spec.classes)
            return "\(shape.name)-\(texture.name)"
        }
    }

    /// Shape and texture of class `c`.
    public static func parts(of c: Int, classes: Int) -> (SyntheticShape, SyntheticTexture) {
        let textures = (classes + SyntheticShape.allCases.count - 1) / SyntheticShape.allCases.count
        let shapes = (classes + textures - 1) / textures
        return (SyntheticShape(rawValue: c % shapes)!, SyntheticTexture(rawValue: c / shapes)!)
    }

    public var count: Int { spec.count(split) }
    public func label(of index: Int) -> Int { index % spec.classes }
    public func frameCount(of index: Int) -> Int { modality == .video ? spec.frames : 1 }
    public func path(of index: Int) -> String { "synthetic:\(modality)/\(split.rawValue)/\(index)" }

    public func load(_ index: Int, frames: [Int], context: DecodeContext) throws -> DecodedSample {
        let scene = self.scene(index)
        var images: [Image8] = []
        var depth: Image16? = nil
        for f in frames {
            let r = render(scene, time: f)
            images.append(r.rgb)
            if depth == nil { depth = r.depth }
        }
        // No mask: like a real photo without a mask file, background removal estimates one.
        return DecodedSample(frames: images, depth: depth, depthScale: 1000, mask: nil, label: scene.label)
    }

    // MARK: - Scenes

    struct Item {
        var shape: SyntheticShape
        var texture: SyntheticTexture
        var x: Float, y: Float  // centre, pixels
        var radius: Float       // pixels
        var angle: Float
        var textureAngle: Float
        var period: Float       // texture period in units of the radius
        var colorA: SIMD3<Float>, colorB: SIMD3<Float>
        var vx: Float = 0, vy: Float = 0, spin: Float = 0
        var depth: Float = 0    // metres (RGB-D)
    }

    struct Line {
        var x0: Float, y0: Float, x1: Float, y1: Float, width: Float
        var color: SIMD3<Float>
    }

    struct Scene {
        var label: Int
        var backgroundA: SIMD3<Float>, backgroundB: SIMD3<Float>
        var gradient: SIMD2<Float>
        var clutter: [Item]
        var lines: [Line]
        var objects: [Item]
        var noiseKey: UInt64
        var planeDepth: Float, planeSlope: Float
    }

    static func hsv(_ h: Float, _ s: Float, _ v: Float) -> SIMD3<Float> {
        let (r, g, b) = ColorOps.hsvToRGB(h - h.rounded(.down), s, v)
        return SIMD3(r, g, b)
    }

    /// Every random choice of sample `index`.
    func scene(_ index: Int) -> Scene {
        var rng = SplitMix64(keys: spec.seed, UInt64(modality.rawValue), split == .train ? 0 : 1, UInt64(index))
        func u(_ lo: Float, _ hi: Float) -> Float { lo + rng.uniform() * (hi - lo) }
        let side = Float(spec.size)
        let label = index % spec.classes
        let (shape, texture) = SyntheticDataset.parts(of: label, classes: spec.classes)
        let moving = modality == .video
        let backgroundA = SyntheticDataset.hsv(u(0, 1), u(0, 0.6), u(0.2, 0.9))
        let backgroundB = SyntheticDataset.hsv(u(0, 1), u(0, 0.6), u(0.2, 0.9))
        let theta = u(0, 2 * .pi)
        var clutter: [Item] = []
        for _ in 0..<(3 + Int(rng.next() % 3)) {
            let color = SyntheticDataset.hsv(u(0, 1), u(0.3, 1), u(0.3, 1))
            clutter.append(Item(shape: SyntheticShape(rawValue: Int(rng.next() % 6))!, texture: .solid,
                                x: u(0, side), y: u(0, side), radius: side * u(0.06, 0.13), angle: u(0, 2 * .pi),
                                textureAngle: 0, period: 1, colorA: color, colorB: color,
                                vx: moving ? side * u(-0.015, 0.015) : 0, vy: moving ? side * u(-0.015, 0.015) : 0,
                                spin: moving ? u(-0.1, 0.1) : 0, depth: u(2.4, 3.4)))
        }
        var lines: [Line] = []
        for _ in 0..<(1 + Int(rng.next() % 2)) {
            lines.append(Line(x0: u(0, side), y0: u(0, side), x1: u(0, side), y1: u(0, side), width: u(0.5, 1.5),
                              color: SyntheticDataset.hsv(u(0, 1), u(0, 1), u(0.2, 1))))
        }
        let count = spec.objects
        let grid = Int(Float(count).squareRoot().rounded(.up))
        var objects: [Item] = []
        for k in 0..<count {
            let hueA = u(0, 1), valueA = u(0.35, 1)
            let valueB = valueA > 0.65 ? valueA - u(0.3, 0.5) : valueA + u(0.3, 0.5)
            let radius = count == 1 ? side * u(0.2, 0.33) : side * u(0.8, 1.2) * 0.42 / Float(grid)
            let speed = side * u(0.02, 0.05), heading = u(0, 2 * .pi)
            let cell = side / Float(grid)
            let cx = count == 1 ? side * u(0.3, 0.7) : (Float(k % grid) + u(0.4, 0.6)) * cell
            let cy = count == 1 ? side * u(0.3, 0.7) : (Float(k / grid) + u(0.4, 0.6)) * cell
            objects.append(Item(shape: shape, texture: texture, x: cx, y: cy, radius: radius,
                              angle: u(0, 2 * .pi), textureAngle: u(0, 2 * .pi), period: max(u(0.45, 0.75), 3 / radius),
                              colorA: SyntheticDataset.hsv(hueA, u(0.4, 1), valueA),
                              colorB: SyntheticDataset.hsv(hueA + u(0.3, 0.7), u(0.2, 1), min(1, valueB)),
                              vx: moving ? speed * cos(heading) : 0, vy: moving ? speed * sin(heading) : 0,
                              spin: moving ? u(-0.15, 0.15) : 0, depth: u(1.2, 2.2)))
        }
        return Scene(label: label, backgroundA: backgroundA, backgroundB: backgroundB,
                     gradient: SIMD2(cos(theta), sin(theta)), clutter: clutter, lines: lines, objects: objects,
                     noiseKey: rng.next(), planeDepth: u(3.5, 5.5), planeSlope: u(0.5, 2.0))
    }

    /// Signed distance (negative inside) to a shape of radius 1 at the origin; approximate away
    /// from the boundary, which is all antialiasing needs.
    @inline(__always) static func distance(_ shape: SyntheticShape, _ u: Float, _ v: Float) -> Float {
        switch shape {
        case .disk: return (u * u + v * v).squareRoot() - 1
        case .square: return max(abs(u), abs(v)) - 0.8
        case .triangle:
            let k: Float = 0.866_025_4
            return max(-v, max(k * u + 0.5 * v, -k * u + 0.5 * v)) - 0.5
        case .cross: return min(max(abs(u) - 0.95, abs(v) - 0.32), max(abs(u) - 0.32, abs(v) - 0.95))
        case .ring: return abs((u * u + v * v).squareRoot() - 0.68) - 0.32
        case .halfDisk:
            let w = v + 0.42
            return max((u * u + w * w).squareRoot() - 1, -w)
        }
    }

    /// Position of a moving item at frame t: straight motion folded back at the borders.
    @inline(__always) static func bounce(_ start: Float, _ velocity: Float, _ t: Float, lo: Float, hi: Float) -> Float {
        guard hi > lo else { return start }
        let span = hi - lo
        var p = (start + velocity * t - lo).truncatingRemainder(dividingBy: 2 * span)
        if p < 0 { p += 2 * span }
        return lo + (p <= span ? p : 2 * span - p)
    }

    /// Renders frame `time` of a scene: RGB, the object's coverage (the true foreground mask)
    /// and, for RGB-D, depth in millimetres.
    func render(_ scene: Scene, time: Int) -> (rgb: Image8, mask: Image8, depth: Image16?) {
        let size = spec.size, side = Float(size), t = Float(time)
        var rgb = [UInt8](repeating: 0, count: size * size * 3)
        var mask = [UInt8](repeating: 0, count: size * size)
        let withDepth = modality == .rgbd
        var depth = [UInt16](repeating: 0, count: withDepth ? size * size : 0)
        struct Placed { var item: Item; var x: Float; var y: Float; var cosA: Float; var sinA: Float; var cosT: Float; var sinT: Float }
        func place(_ item: Item, margin: Float) -> Placed {
            let x = SyntheticDataset.bounce(item.x, item.vx, t, lo: margin, hi: side - margin)
            let y = SyntheticDataset.bounce(item.y, item.vy, t, lo: margin, hi: side - margin)
            let a = item.angle + item.spin * t
            return Placed(item: item, x: x, y: y, cosA: cos(a), sinA: sin(a),
                          cosT: cos(item.textureAngle + a), sinT: sin(item.textureAngle + a))
        }
        let clutter = scene.clutter.map { place($0, margin: 0) }
        let objects = scene.objects.map { place($0, margin: $0.radius * 0.6) }
        for py in 0..<size {
            for px in 0..<size {
                let fx = Float(px) + 0.5, fy = Float(py) + 0.5
                let g = ((fx / side - 0.5) * scene.gradient.x + (fy / side - 0.5) * scene.gradient.y) + 0.5
                var color = scene.backgroundA + (scene.backgroundB - scene.backgroundA) * min(max(g, 0), 1)
                var d = scene.planeDepth + scene.planeSlope * (0.5 - fy / side)
                for c in clutter {
                    let dx = fx - c.x, dy = fy - c.y, reach = c.item.radius + 1
                    if abs(dx) > reach || abs(dy) > reach { continue }
                    let u = (dx * c.cosA + dy * c.sinA) / c.item.radius, v = (-dx * c.sinA + dy * c.cosA) / c.item.radius
                    let cover = min(max(0.5 - SyntheticDataset.distance(c.item.shape, u, v) * c.item.radius, 0), 1)
                    if cover > 0 {
                        color += (c.item.colorA - color) * cover
                        if cover > 0.5 { d = c.item.depth }
                    }
                }
                for line in scene.lines {
                    let ex = line.x1 - line.x0, ey = line.y1 - line.y0
                    let along = min(max(((fx - line.x0) * ex + (fy - line.y0) * ey) / max(ex * ex + ey * ey, 1e-6), 0), 1)
                    let qx = line.x0 + along * ex - fx, qy = line.y0 + along * ey - fy
                    let cover = min(max(line.width / 2 + 0.5 - (qx * qx + qy * qy).squareRoot(), 0), 1)
                    if cover > 0 { color += (line.color - color) * cover }
                }
                for object in objects {
                    let o = object.item, dx = fx - object.x, dy = fy - object.y
                    let u = (dx * object.cosA + dy * object.sinA) / o.radius, v = (-dx * object.sinA + dy * object.cosA) / o.radius
                    let cover = min(max(0.5 - SyntheticDataset.distance(o.shape, u, v) * o.radius, 0), 1)
                    if cover > 0 {
                        let tu = (dx * object.cosT + dy * object.sinT) / o.radius, tv = (-dx * object.sinT + dy * object.cosT) / o.radius
                        let p = o.period
                        let second: Bool
                        switch o.texture {
                        case .stripes: second = sin(2 * .pi * tu / p) < 0
                        case .checker: second = (Int((tu / p + 64).rounded(.down)) + Int((tv / p + 64).rounded(.down))) & 1 == 1
                        case .dots:
                            let a = tu / p - (tu / p).rounded(), b = tv / p - (tv / p).rounded()
                            second = a * a + b * b < 0.09
                        case .solid: second = false
                        }
                        var surface = second ? o.colorB : o.colorA
                        if o.texture == .solid { surface *= 0.85 + 0.15 * min(max(v, -1), 1) }
                        color += (surface - color) * cover
                        mask[py * size + px] = max(mask[py * size + px], UInt8((cover * 255).rounded()))
                        if cover > 0.5 {
                            let rho2 = min(u * u + v * v, 1)
                            d = o.shape == .disk ? o.depth - 0.25 * (1 - rho2).squareRoot() : o.depth + 0.1 * u
                        }
                    }
                }
                if withDepth {
                    // Distance darkens the colour a little: a cue that ties RGB to depth.
                    color *= max(0.55, 1.08 - 0.08 * d)
                    depth[py * size + px] = UInt16(min(max(d * 1000, 0), 65535).rounded())
                }
                // Pixel noise, keyed by pixel and frame so every frame has its own.
                var noise = SplitMix64(keys: scene.noiseKey, UInt64(time), UInt64(py * size + px))
                let n = (noise.uniform() - 0.5) * 0.08
                let p = (py * size + px) * 3
                rgb[p] = UInt8((min(max(color.x + n, 0), 1) * 255).rounded())
                rgb[p + 1] = UInt8((min(max(color.y + n, 0), 1) * 255).rounded())
                rgb[p + 2] = UInt8((min(max(color.z + n, 0), 1) * 255).rounded())
            }
        }
        return (Image8(width: size, height: size, channels: 3, pixels: rgb),
                Image8(width: size, height: size, channels: 1, pixels: mask),
                withDepth ? Image16(width: size, height: size, pixels: depth) : nil)
    }

    /// The rendered pixels of sample `index`: every frame, the object mask of frame 0 and depth.
    public func renderAll(_ index: Int) -> (frames: [Image8], mask: Image8, depth: Image16?) {
        let scene = self.scene(index)
        var frames: [Image8] = []
        var first: (rgb: Image8, mask: Image8, depth: Image16?)? = nil
        for t in 0..<frameCount(of: index) {
            let r = render(scene, time: t)
            if t == 0 { first = r }
            frames.append(r.rgb)
        }
        return (frames, first!.mask, first!.depth)
    }
}
