import Testing
import KaleidoTensor
@testable import KaleidoNN

@Suite struct SwinTests {
    func trainable(_ config: SwinTransformer3D.Config) -> Int {
        let builder = ParameterBuilder()
        _ = SwinTransformer3D.make(config, builder)
        return builder.specs.filter { $0.role.isTrainable }.reduce(0) { $0 + $1.count }
    }

    func build(_ config: SwinTransformer3D.Config, seed: UInt64 = 1) -> (SwinTransformer3DNetwork, ParameterArena) {
        let builder = ParameterBuilder()
        let network = SwinTransformer3D.make(config, builder)
        return (network, builder.makeArena(seed: seed))
    }

    /// embed 8, heads (1, 2), patch and window 2 in every dimension.
    func tinyConfig(depths: [Int] = [1, 1], window: [Int] = [2, 2, 2]) -> SwinTransformer3D.Config {
        SwinTransformer3D.Config(embedDimension: 8, depths: depths, heads: [1, 2], window: window, patch: [2, 2, 2])
    }

    func inference(_ network: Layer, _ arena: ParameterArena, _ input: Tensor) -> Tensor {
        network.forward(input, RunContext(arena: arena, pool: .serial, training: false, recordsForBackward: false))
    }

    // MARK: - Parameter counts and names

    @Test func parameterCountsMatchReferences() {
        // timm swin_tiny_patch4_window7_224 (and torchvision swin_t), 1000 classes: 2-D = the T = 1 case.
        var image = SwinTransformer3D.Config.imageTiny
        image.classes = 1000
        #expect(trainable(image) == 28_288_354)
        // torchvision swin3d_t / _s / _b, Kinetics-400 head (counted in /work/venv-torch).
        for (base, count) in [(SwinTransformer3D.Config.tiny, 28_158_070), (.small, 49_816_678), (.base, 88_048_984)] {
            var video = base
            video.classes = 400
            #expect(trainable(video) == count)
        }
        // Omnivore Swin-T: swin3d_t's trunk (27,850,470) + depth_patch_embed (3,360) + heads
        // image 1000, video 400, rgbd 19 (1,091,211).
        #expect(trainable(.omnivoreTiny) == 28_945_041)
    }

    @Test func namesAndShapesFollowTorchvision() {
        var config = SwinTransformer3D.Config.omnivoreTiny
        config.datasetHeads = SwinTransformer3D.Config.omnivoreHeads
        let builder = ParameterBuilder()
        _ = SwinTransformer3D.make(config, builder)
        let specs = Dictionary(uniqueKeysWithValues: builder.specs.map { ($0.name, $0) })
        let expected: [String: [Int]] = [
            "patch_embed.proj.weight": [96, 3, 2, 4, 4], "patch_embed.proj.bias": [96], "patch_embed.norm.weight": [96],
            "depth_patch_embed.proj.weight": [96, 1, 2, 4, 4], "depth_patch_embed.norm.bias": [96],
            "features.0.0.norm1.weight": [96], "features.0.0.attn.qkv.weight": [288, 96], "features.0.0.attn.qkv.bias": [288],
            "features.0.0.attn.proj.weight": [96, 96], "features.0.1.attn.relative_position_bias_table": [2535, 3],
            "features.0.1.attn.relative_position_index": [392, 392], "features.0.1.norm2.bias": [96],
            "features.0.1.mlp.0.weight": [384, 96], "features.0.1.mlp.3.weight": [96, 384],
            "features.1.reduction.weight": [192, 384], "features.1.norm.weight": [384],
            "features.4.5.attn.relative_position_bias_table": [2535, 12], "features.6.1.mlp.3.bias": [768], "features.5.reduction.weight": [768, 1536],
            "norm.weight": [768], "heads.image.weight": [1000, 768], "heads.video.bias": [400], "heads.rgbd.weight": [19, 768],
        ]
        for (name, shape) in expected {
            #expect(specs[name]?.torchShape == shape, "\(name): \(specs[name]?.torchShape ?? [])")
        }
        #expect(specs["features.1.reduction.bias"] == nil && specs["head.weight"] == nil)
        #expect(specs["features.0.0.attn.relative_position_index"]?.role == .integerBuffer)
        #expect(builder.specs.first?.name == "patch_embed.proj.weight")
    }

    @Test func relativePositionIndexMatchesVideoSwin() {
        // Video Swin: ((dt + Wt−1)(2Wh−1) + dh + Wh−1)(2Ww−1) + dw + Ww−1, token order (t, h, w).
        let window = [2, 3, 3]
        let index = ShiftedWindowGeometry.relativePositionIndex(window: window)
        let l = 18
        #expect(index.count == l * l)
        #expect((0..<l).allSatisfy { index[$0 * l + $0] == (1 * 5 + 2) * 5 + 2 })  // zero offset: the table's centre
        #expect(index.min() == 0 && index.max() == 3 * 5 * 5 - 1)
        // Token 0 = (0,0,0), token 17 = (1,2,2): offset (−1,−2,−2) → row 0; reversed → the last row.
        #expect(index[0 * l + 17] == 0 && index[17 * l + 0] == 74)
        // The 2-D table of Swin-T: (2·7−1)² rows.
        #expect(ShiftedWindowGeometry.relativePositionIndex(window: [1, 7, 7]).max() == 168)
    }

    // MARK: - Windows

    static let geometries: [(size: [Int], window: [Int], shift: [Int])] = [
        ([2, 4, 4], [2, 2, 2], [0, 0, 0]),
        ([2, 4, 4], [2, 2, 2], [1, 1, 1]),
        ([3, 6, 5], [2, 4, 4], [1, 2, 2]),   // padding in every dimension, shifted
        ([1, 7, 7], [8, 7, 7], [4, 3, 3]),   // an image in Swin-T-3D: T and H/W clipped, no shift
        ([4, 9, 9], [8, 7, 7], [4, 3, 3]),   // T clipped, H/W padded to 14 and shifted
    ]

    @Test(arguments: geometries)
    func partitionThenReverseIsExact(size: [Int], window: [Int], shift: [Int]) {
        let g = ShiftedWindowGeometry(batch: 2, size: size, channels: 3, window: window, shift: shift)
        var rng = SplitMix64(seed: 3)
        let grid = Tensor(randomNormal: g.gridShape, rng: &rng)
        let windows = Tensor(zeros: g.windowsShape), back = Tensor(zeros: g.gridShape)
        WindowPartition.forward(windows: windows.pointer, input: grid.pointer, geometry: g, pool: .serial)
        WindowReverse.forward(output: back.pointer, windows: windows.pointer, geometry: g, pool: .serial)
        #expect(back.array == grid.array)
        // Padding tokens are zeros: the windows hold exactly the grid's values plus zeros.
        let padding = g.windowCount * g.tokens - g.batch * size.reduce(1, *)
        #expect(windows.array.filter { $0 == 0 }.count == padding * 3)
        #expect(abs(windows.array.reduce(0, +) - grid.array.reduce(0, +)) < 1e-3)
    }

    @Test(arguments: geometries)
    func partitionAgreesWithPadRollAndCut(size: [Int], window: [Int], shift: [Int]) {
        // The reference, step by step as torchvision: F.pad, torch.roll(−shift), view/permute.
        let g = ShiftedWindowGeometry(batch: 1, size: size, channels: 1, window: window, shift: shift)
        let values = (0..<size.reduce(1, *)).map { Float($0 + 1) }
        let (p, w, s) = (g.padded, g.window, g.shift)
        func padded(_ t: Int, _ h: Int, _ x: Int) -> Float {
            t < size[0] && h < size[1] && x < size[2] ? values[(t * size[1] + h) * size[2] + x] : 0
        }
        func rolled(_ t: Int, _ h: Int, _ x: Int) -> Float { padded((t + s[0]) % p[0], (h + s[1]) % p[1], (x + s[2]) % p[2]) }
        var expected: [Float] = []
        for bt in 0..<(p[0] / w[0]) { for bh in 0..<(p[1] / w[1]) { for bw in 0..<(p[2] / w[2]) {
            for lt in 0..<w[0] { for lh in 0..<w[1] { for lw in 0..<w[2] {
                expected.append(rolled(bt * w[0] + lt, bh * w[1] + lh, bw * w[2] + lw))
            } } }
        } } }
        let windows = Tensor(zeros: g.windowsShape), grid = Tensor(shape: g.gridShape, values: values)
        WindowPartition.forward(windows: windows.pointer, input: grid.pointer, geometry: g, pool: .serial)
        withExtendedLifetime(grid) { #expect(windows.array == expected) }
    }

    @Test(arguments: geometries)
    func windowBackwardsAreAdjoints(size: [Int], window: [Int], shift: [Int]) {
        // ⟨P x, y⟩ = ⟨x, Pᵀ y⟩ for partition P and reverse R, with Pᵀ, Rᵀ the backward passes.
        let g = ShiftedWindowGeometry(batch: 2, size: size, channels: 2, window: window, shift: shift)
        var rng = SplitMix64(seed: 4)
        let x = Tensor(randomNormal: g.gridShape, rng: &rng), y = Tensor(randomNormal: g.windowsShape, rng: &rng)
        // The backwards write every element: their outputs start as NaN to show that.
        func garbage(_ shape: [Int]) -> Tensor { Tensor(shape: shape, values: [Float](repeating: .nan, count: shape.reduce(1, *))) }
        let px = Tensor(zeros: g.windowsShape), pty = garbage(g.gridShape)
        WindowPartition.forward(windows: px.pointer, input: x.pointer, geometry: g, pool: .serial)
        WindowPartition.backward(dInput: pty.pointer, dWindows: y.pointer, geometry: g, pool: .serial)
        func dot(_ a: Tensor, _ b: Tensor) -> Double { zip(a.array, b.array).reduce(0) { $0 + Double($1.0) * Double($1.1) } }
        #expect(abs(dot(px, y) - dot(x, pty)) < 1e-4)
        let ry = Tensor(zeros: g.gridShape), rtx = garbage(g.windowsShape)
        WindowReverse.forward(output: ry.pointer, windows: y.pointer, geometry: g, pool: .serial)
        WindowReverse.backward(dWindows: rtx.pointer, dOutput: x.pointer, geometry: g, pool: .serial)
        #expect(abs(dot(ry, x) - dot(y, rtx)) < 1e-4)
    }

    @Test func windowAndShiftAreClippedToTheInput() {
        let image = ShiftedWindowGeometry(batch: 1, size: [1, 56, 56], channels: 96, window: [8, 7, 7], shift: [4, 3, 3])
        #expect(image.window == [1, 7, 7] && image.shift == [0, 3, 3] && image.windowsPerSample == 64 && image.tokens == 49)
        let last = ShiftedWindowGeometry(batch: 1, size: [8, 7, 7], channels: 768, window: [8, 7, 7], shift: [4, 3, 3])
        #expect(last.window == [8, 7, 7] && !last.isShifted && last.windowsPerSample == 1)
        let padded = ShiftedWindowGeometry(batch: 1, size: [4, 9, 10], channels: 8, window: [2, 7, 7], shift: [1, 3, 3])
        #expect(padded.padded == [4, 14, 14] && padded.windowsPerSample == 8)
    }

    @Test(arguments: geometries)
    func shiftMaskMatchesBruteForceRegions(size: [Int], window: [Int], shift: [Int]) {
        // Two tokens of a shifted window may attend to each other only if neither or both were
        // wrapped around by the cyclic shift, in every dimension: padded position p holds input
        // position p + s, which wrapped when p + s ≥ P.
        let g = ShiftedWindowGeometry(batch: 1, size: size, channels: 1, window: window, shift: shift)
        let mask = g.attentionMask(), l = g.tokens
        let (p, w, s) = (g.padded, g.window, g.shift)
        let counts = (0..<3).map { p[$0] / w[$0] }
        var disagreements = 0, masked = 0
        for b in 0..<g.windowsPerSample {
            let origin = [b / (counts[1] * counts[2]) * w[0], b / counts[2] % counts[1] * w[1], b % counts[2] * w[2]]
            func wrapped(_ token: Int) -> [Bool] {
                let offset = [token / (w[1] * w[2]), token / w[2] % w[1], token % w[2]]
                return (0..<3).map { origin[$0] + offset[$0] + s[$0] >= p[$0] }
            }
            for i in 0..<l {
                for j in 0..<l {
                    let expected: Float = wrapped(i) == wrapped(j) ? 0 : -100
                    if mask[(b * l + i) * l + j] != expected { disagreements += 1 }
                    if expected != 0 { masked += 1 }
                }
            }
        }
        #expect(disagreements == 0)
        #expect((masked > 0) == g.isShifted)
    }

    // MARK: - Whole model

    @Test func tinySwinBackwardMatchesFiniteDifferences() {
        let (network, arena) = build(tinyConfig())
        var rng = SplitMix64(seed: 5)
        let video = Tensor(randomNormal: [2, 4, 8, 8, 3], rng: &rng)
        ModelGradientCheck().run(network: network, arena: arena, input: video)
    }

    @Test func shiftedPaddedSwinBackwardMatchesFiniteDifferences() {
        // Token grid 2×6×6 with window 2×4×4: the second block shifts by (1, 2, 2) over a grid
        // padded to 8×8, so the gather, the mask and the padding are all on the path.
        var config = tinyConfig(depths: [2, 1], window: [2, 4, 4])
        config.classes = 3
        let (network, arena) = build(config)
        var rng = SplitMix64(seed: 6)
        let video = Tensor(randomNormal: [1, 4, 12, 12, 3], rng: &rng)
        ModelGradientCheck(parameterSamples: 60).run(network: network, arena: arena, input: video)
    }

    @Test func rgbdImageBackwardMatchesFiniteDifferences() {
        // One RGB-D frame: the frame is repeated to the temporal patch and both embeddings train.
        var config = tinyConfig()
        config.depthEmbedding = true
        config.datasetHeads = [DatasetHeadsLayer.Head("image", classes: 3), DatasetHeadsLayer.Head("rgbd", classes: 5)]
        let (network, arena) = build(config)
        network.dataset = "rgbd"
        var rng = SplitMix64(seed: 7)
        let rgbd = Tensor(randomNormal: [2, 1, 8, 8, 4], rng: &rng)
        ModelGradientCheck(parameterSamples: 60).run(network: network, arena: arena, input: rgbd)
    }

    @Test func imageAndVideoFeatureShapes() {
        // The 32-px benchmark model: 16×16 → 8×8 → 4×4 tokens, 192 features.
        let (cifar, cifarArena) = build(.tinyCIFAR)
        #expect(inference(cifar, cifarArena, Tensor(zeros: [2, 1, 32, 32, 3])).shape == [2, 192])
        let stages = cifar.backbone.describe([2, 1, 32, 32, 3]).children.map(\.outputShape)
        #expect(stages == [[2, 1, 16, 16, 48], [2, 1, 16, 16, 48], [2, 1, 8, 8, 96], [2, 1, 8, 8, 96], [2, 1, 4, 4, 192],
                           [2, 1, 4, 4, 192], [2, 1, 4, 4, 192], [2, 192]])

        // Swin-T-3D on a 4-frame 32-px clip and on one frame: both give 768 features.
        let (video, videoArena) = build(.tiny)
        var rng = SplitMix64(seed: 8)
        let clip = Tensor(randomNormal: [1, 4, 32, 32, 3], rng: &rng)
        #expect(inference(video, videoArena, clip).shape == [1, 768])
        #expect(video.describe([1, 4, 32, 32, 3]).children[0].children[2].outputShape == [1, 2, 4, 4, 192])
        let frame = Tensor(randomNormal: [1, 1, 32, 32, 3], rng: &rng)
        #expect(inference(video, videoArena, frame).shape == [1, 768])
    }

    @Test func anImageIsItsFrameRepeated() {
        let (network, arena) = build(tinyConfig())
        var rng = SplitMix64(seed: 9)
        let frame = Tensor(randomNormal: [1, 1, 8, 8, 3], rng: &rng)
        let twice = Tensor(zeros: [1, 2, 8, 8, 3])
        twice.slice(0..<1).reshaped([2, 192]).slice(0..<1).copy(from: frame.reshaped([1, 192]))
        twice.slice(0..<1).reshaped([2, 192]).slice(1..<2).copy(from: frame.reshaped([1, 192]))
        #expect(inference(network, arena, frame).array == inference(network, arena, twice).array)
    }

    @Test func depthChannelGoesThroughItsOwnEmbedding() {
        var config = tinyConfig()
        config.depthEmbedding = true
        let (network, arena) = build(config)
        var rng = SplitMix64(seed: 10)
        let rgbd = Tensor(randomNormal: [2, 2, 8, 8, 4], rng: &rng)
        let features = inference(network, arena, rgbd).array
        // Another depth map, same colour: other features.
        let otherDepth = Tensor(shape: rgbd.shape, values: rgbd.array)
        for p in 0..<(otherDepth.count / 4) { otherDepth.pointer[4 * p + 3] += 1 + Float(p % 5) }
        #expect(inference(network, arena, otherDepth).array != features)
        // The sum of the two embeddings: with the depth projection and norm silenced, RGB-D
        // equals the RGB tube alone.
        let rgb = Tensor(zeros: [2, 2, 8, 8, 3])
        for p in 0..<(rgb.count / 3) { for c in 0..<3 { rgb.pointer[3 * p + c] = rgbd.pointer[4 * p + c] } }
        for name in ["depth_patch_embed.proj.weight", "depth_patch_embed.proj.bias", "depth_patch_embed.norm.weight",
                     "depth_patch_embed.norm.bias"] {
            arena.tensor(named: name)!.fill(0)
        }
        #expect(inference(network, arena, rgbd).array == inference(network, arena, rgb).array)
    }

    @Test func aZeroStartedDepthEmbeddingSeesRGBDAsItsImageUntilDepthIsLearnt() {
        var config = tinyConfig()
        config.depthEmbedding = true
        config.zeroInitDepth = true
        let (network, arena) = build(config)
        #expect(arena.tensor(named: "depth_patch_embed.norm.weight")!.array.allSatisfy { $0 == 0 })
        var rng = SplitMix64(seed: 11)
        let rgbd = Tensor(randomNormal: [2, 2, 8, 8, 4], rng: &rng)
        let rgb = Tensor(zeros: [2, 2, 8, 8, 3])
        for p in 0..<(rgb.count / 3) { for c in 0..<3 { rgb.pointer[3 * p + c] = rgbd.pointer[4 * p + c] } }
        #expect(inference(network, arena, rgbd).array == inference(network, arena, rgb).array)

        // The scale receives a gradient from the first step, so depth does not stay switched off.
        let context = RunContext(arena: arena, pool: .serial, training: true)
        arena.zeroGradients()
        let features = network.forward(rgbd, context)
        let dFeatures = Tensor(randomNormal: features.shape, rng: &rng)
        _ = network.backward(dFeatures, context)
        let scale = arena.entry(named: "depth_patch_embed.norm.weight")!
        let gradient = UnsafeBufferPointer(start: arena.gradients.pointer + scale.offset, count: scale.count)
        #expect(gradient.contains { $0 != 0 })
    }

    @Test func eachBatchTrainsItsDatasetsHead() {
        var config = tinyConfig()
        config.datasetHeads = [DatasetHeadsLayer.Head("image", classes: 3), DatasetHeadsLayer.Head("video", classes: 7)]
        let (network, arena) = build(config)
        let context = RunContext(arena: arena, pool: .serial, training: true)
        var rng = SplitMix64(seed: 11)
        let images = Tensor(randomNormal: [2, 1, 8, 8, 3], rng: &rng), clips = Tensor(randomNormal: [3, 4, 8, 8, 3], rng: &rng)
        let imageLogits = network.forward(images, dataset: "image", context)
        let videoLogits = network.forward(clips, dataset: "video", context)
        #expect(imageLogits.shape == [2, 3] && videoLogits.shape == [3, 7])
        arena.zeroGradients()
        // Backward in reverse order; each pops the head its forward used.
        let dClips = network.backward(Tensor(shape: [3, 7], values: [Float](repeating: 1, count: 21)), context)
        func gradientNorm(_ name: String) -> Float {
            let entry = arena.entry(named: name)!
            return (0..<entry.count).reduce(0) { $0 + abs(arena.gradients.pointer[entry.offset + $1]) }
        }
        #expect(gradientNorm("heads.video.weight") > 0 && gradientNorm("heads.image.weight") == 0)
        let dImages = network.backward(Tensor(shape: [2, 3], values: [1, 0, 0, 0, 1, 0]), context)
        #expect(gradientNorm("heads.image.weight") > 0)
        #expect(dClips.shape == clips.shape && dImages.shape == images.shape)
    }
}
