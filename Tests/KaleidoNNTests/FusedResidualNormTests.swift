import Testing
import KaleidoTensor
@testable import KaleidoNN

/// A residual block whose last BatchNorm runs in the block (`Residual`'s `norm`: the sum and
/// the ReLU in its normalising pass, the ReLU's mask recomputed in its backward) must give the
/// bits of the same block with that BatchNorm at the end of its branch and a separate sum and
/// ReLU: output, input gradient, every parameter gradient and the running statistics.
@Suite struct FusedResidualNormTests {
    /// A ResNet basic block, 8 → `out` channels at `stride`, the last BatchNorm fused or not.
    func block(_ b: ParameterBuilder, fused: Bool, out: Int, stride: Int) -> Residual {
        func conv(_ name: String, _ from: Int, _ to: Int, kernel: Int = 3, stride: Int = 1) -> Layer {
            Conv2dLayer(b.child(name), inChannels: from, outChannels: to, kernel: kernel, stride: stride, padding: kernel / 2,
                        initialization: .kaimingFanOut)
        }
        var layers = [conv("conv1", 8, out, stride: stride), BatchNormLayer(b.child("bn1"), channels: out, reluAfter: true),
                      conv("conv2", out, out)]
        let last = BatchNormLayer(b.child("bn2"), channels: out, reluAfter: fused)
        if !fused { layers.append(last) }
        let shortcut = stride == 1 && out == 8 ? nil
            : Sequential("downsample", [conv("down", 8, out, kernel: 1, stride: stride), BatchNormLayer(b.child("bn3"), channels: out)])
        return fused ? Residual("block", branch: Sequential("branch", layers), norm: last, shortcut: shortcut, reluAfter: true)
                     : Residual("block", branch: Sequential("branch", layers), shortcut: shortcut, reluAfter: true, addsInPlace: true)
    }

    struct Run { var output: [UInt32], dInput: [UInt32], values: [UInt32], gradients: [UInt32] }

    func run(fused: Bool, out: Int, stride: Int) -> Run {
        let builder = ParameterBuilder()
        let layer = block(builder, fused: fused, out: out, stride: stride)
        let arena = builder.makeArena(seed: 3)
        // Random γ and β, so that the ReLU's mask is neither all nor nothing in any channel.
        var rng = SplitMix64(seed: 21)
        for i in 0..<arena.values.count where arena.values.pointer[i] == 1 || arena.values.pointer[i] == 0 {
            arena.values.pointer[i] = Float(rng.normal())
        }
        let context = RunContext(arena: arena, pool: ComputePool(threads: 2), seed: 7)
        let output = layer.forward(Tensor(randomNormal: [4, 6, 6, 8], rng: &rng), context)
        let dOutput = Tensor(randomNormal: output.shape, rng: &rng)
        let dInput = context.backward { layer.backward(dOutput, context) }
        func bits(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> [UInt32] { UnsafeBufferPointer(start: p, count: n).map(\.bitPattern) }
        return Run(output: output.array.map(\.bitPattern), dInput: dInput.array.map(\.bitPattern),
                   values: bits(arena.values.pointer, arena.values.count), gradients: bits(arena.gradients.pointer, arena.gradients.count))
    }

    @Test(arguments: [(8, 1), (16, 2)])
    func fusedNormGivesTheBitsOfTheNormInTheBranch(out: Int, stride: Int) {
        let separate = run(fused: false, out: out, stride: stride)
        let fused = run(fused: true, out: out, stride: stride)
        // Compared as one Bool each: a failure names the array without printing thousands of bits.
        func same(_ a: [UInt32], _ b: [UInt32]) -> Bool { a == b }
        #expect(same(fused.output, separate.output), "output")
        #expect(same(fused.dInput, separate.dInput), "input gradient")
        #expect(same(fused.values, separate.values), "parameters and running statistics")
        #expect(same(fused.gradients, separate.gradients), "parameter gradients")
        // The ReLU cut some of the sum and kept some.
        let zeros = separate.output.filter { $0 == 0 }.count
        #expect(zeros > 0 && zeros < separate.output.count)
    }
}
