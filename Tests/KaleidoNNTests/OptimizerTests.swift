import Foundation
import Testing
import KaleidoSafeTensors
import KaleidoTensor
@testable import KaleidoNN

@Suite struct OptimizerTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/optimizers.safetensors")

    /// A 3×4 decayed weight and a 3-element bias without decay, as in the fixture.
    func arena(_ file: SafeTensorsFile) throws -> ParameterArena {
        let builder = ParameterBuilder()
        _ = builder.parameter("weight", shape: [3, 4], role: .weight, initializer: .values(try file.floats("weight").values))
        _ = builder.parameter("bias", shape: [3], role: .noDecay, initializer: .values(try file.floats("bias").values))
        _ = builder.parameter("running_mean", shape: [2], role: .buffer, initializer: .ones)
        return builder.makeArena(seed: 0)
    }

    /// Three steps match torch.optim.SGD / AdamW to 1e-6 (tools/fixtures/make_optimizer_fixtures.py).
    @Test(arguments: [("sgd", OptimizerSettings(kind: .sgd, weightDecay: 0.01, momentum: 0.9)),
                      ("adamw", OptimizerSettings(kind: .adamw, weightDecay: 0.05))])
    func trajectoriesMatchPyTorch(name: String, settings: OptimizerSettings) throws {
        let file = try SafeTensorsFile(contentsOf: Self.fixture)
        let parameters = try arena(file)
        let optimizer = settings.make(for: parameters)
        let rates = try file.floats("lr").values
        for step in 0..<3 {
            let gradient = try file.floats("grad_weight_\(step)").values + file.floats("grad_bias_\(step)").values + [5, 5]
            for (i, value) in gradient.enumerated() { parameters.gradients.pointer[i] = value }
            optimizer.step(parameters, learningRate: rates[step], pool: .serial)
            let expected = try file.floats("\(name)_weight_\(step)").values + file.floats("\(name)_bias_\(step)").values
            let got = Array(UnsafeBufferPointer(start: parameters.values.pointer, count: 15))
            #expect(zip(got, expected).allSatisfy { abs($0 - $1) < 1e-6 }, "step \(step)")
            #expect(parameters.tensor(named: "running_mean")!.array == [1, 1], "buffers are never updated")
        }
    }

    @Test func larsScalesWeightsByTheTrustRatioAndLeavesExcludedParametersPlain() {
        let builder = ParameterBuilder()
        _ = builder.parameter("weight", shape: [2], role: .weight, initializer: .values([3, 4]))
        _ = builder.parameter("bias", shape: [1], role: .noDecay, initializer: .values([1]))
        let arena = builder.makeArena(seed: 0)
        for (i, g) in [Float(0.6), 0.8, 2].enumerated() { arena.gradients.pointer[i] = g }
        let lars = OptimizerSettings(kind: .lars, weightDecay: 0, momentum: 0.9, trustCoefficient: 0.001).make(for: arena)
        lars.step(arena, learningRate: 1, pool: .serial)
        // ‖w‖ = 5, ‖g‖ = 1 → trust 0.005: w − 0.005·g. The bias takes the plain step.
        #expect(abs(arena.values.pointer[0] - (3 - 0.003)) < 1e-6 && abs(arena.values.pointer[1] - (4 - 0.004)) < 1e-6)
        #expect(arena.values.pointer[2] == -1)
    }

    @Test func schedulesWarmUpDecayAndRiseAsDocumented() {
        let lr = WarmupCosineSchedule(base: 1, final: 0.1, warmupSteps: 10, totalSteps: 110)
        #expect(lr.value(at: 0) == 0.1 && lr.value(at: 9) == 1)
        #expect(abs(lr.value(at: 60) - 0.55) < 1e-9)
        #expect(abs(lr.value(at: 110) - 0.1) < 1e-12)
        let momentum = MomentumSchedule(base: 0.996, totalSteps: 100)
        #expect(momentum.value(at: 0) == 0.996)
        #expect(abs(momentum.value(at: 50) - 0.998) < 1e-12)
        #expect(momentum.value(at: 100) == 1)
        let held = MomentumSchedule(base: 0.99, final: 0.999, totalSteps: 100)
        #expect(abs(held.value(at: 0) - 0.99) < 1e-12 && abs(held.value(at: 50) - 0.9945) < 1e-12)
        #expect(abs(held.value(at: 100) - 0.999) < 1e-12)
    }
}
