import Testing
import KaleidoTensor
@testable import KaleidoNN

/// A network's first layer needs no input gradient in training (its input is the images):
/// `backwardWithoutInputGradient` skips it. It must add exactly the parameter gradients of
/// `backward`, forget what the forward kept — and only that forward's records: two views of
/// different shapes go forward, the second comes back through the tested path, the first
/// through `backward`, which would find the second's leftovers — and leave no gradient scratch.
@Suite struct InputGradientSkipTests {
    /// Model, options, and two views of different shapes (the second as a small crop).
    static let cases: [(name: String, options: ModelOptions, views: [[Int]])] = [
        ("resnet18", ModelOptions(baseWidth: 8), [[2, 32, 32, 3], [2, 16, 16, 3]]),
        ("convnext-atto", ModelOptions(baseWidth: 16), [[2, 32, 32, 3], [2, 64, 64, 3]]),
        // Omnivore's trunk: an RGB-D view (both patch embeddings) and an image view.
        ("omnivore-swin-cifar", ModelOptions(datasetHeads: []), [[2, 16, 16, 4], [2, 16, 16, 3]]),
        // With Omnivore's per-dataset heads, the image head selected: `SwinTransformer3DNetwork`'s own path.
        ("omnivore-swin-cifar", ModelOptions(), [[2, 32, 32, 3], [2, 16, 16, 3]]),
    ]

    struct Run { var gradients: [UInt32], scratchLeft: Int }

    func run(_ index: Int, skipping: Bool) throws -> Run {
        let (name, options, views) = Self.cases[index]
        let builder = ParameterBuilder()
        let network = try ModelZoo.make(name, options: options, builder: builder).network
        let arena = builder.makeArena(seed: 5)
        let context = RunContext(arena: arena, pool: ComputePool(threads: 2), seed: 9)
        if let swin = network as? SwinTransformer3DNetwork, swin.datasetHeads != nil { swin.dataset = "image" }
        var rng = SplitMix64(seed: 13)
        let outputs = views.map { network.forward(Tensor(randomNormal: $0, rng: &rng), context) }
        let dOutputs = outputs.map { Tensor(randomNormal: $0.shape, rng: &rng) }
        let scratch = context.gradientScratch.inUse
        var scratchLeft = 0
        context.backward {
            if skipping {
                network.backwardWithoutInputGradient(dOutputs[1], consuming: false, context)
            } else {
                _ = network.backward(dOutputs[1], context)
            }
            scratchLeft = context.gradientScratch.inUse - scratch
            #expect(network.backward(dOutputs[0], context).shape == views[0])
        }
        let gradients = UnsafeBufferPointer(start: arena.gradients.pointer, count: arena.gradients.count)
        return Run(gradients: gradients.map(\.bitPattern), scratchLeft: scratchLeft)
    }

    @Test(arguments: 0..<cases.count)
    func skippingTheInputGradientKeepsEveryParameterGradient(index: Int) throws {
        let full = try run(index, skipping: false)
        let skipped = try run(index, skipping: true)
        #expect(skipped.gradients == full.gradients, "\(Self.cases[index].name)")
        #expect(skipped.gradients.contains { $0 != 0 })
        // The input gradient `backward` returned stays allocated; the skipping path keeps nothing.
        #expect(skipped.scratchLeft == 0)
        #expect(full.scratchLeft > 0)
    }
}
