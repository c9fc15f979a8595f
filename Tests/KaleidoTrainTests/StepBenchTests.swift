import KaleidoNN
import Testing
@testable import KaleidoTrain

/// `kaleido bench step`'s model table: the suites hold the PyTorch reference's models at the
/// shapes its header gives, and a command line's selection picks them. (A step of a paper
/// model, even at 64 px, takes about 15 s in a debug build: building and stepping 26–29 M
/// parameters. `kaleido bench step --suite paper --steps 1 --warmup 0` runs them.)
struct StepBenchTests {
    @Test func suitesHoldTheReferenceModelsAtItsShapes() throws {
        #expect(StepBench.models(in: [.small]).map(\.name) == ["resnet18-cifar", "convnext-atto", "swin-tiny-32"])
        #expect(StepBench.models(in: [.paper]).map(\.name) == ["resnet50", "convnext-tiny", "swin3d-t"])
        #expect(StepBench(try StepBench.model(named: "resnet50")).shapeArguments
                == ["--batch", "16", "--large", "224", "--small", "96"])
        #expect(StepBench(try StepBench.model(named: "convnext-tiny")).shapeArguments
                == ["--batch", "16", "--large", "224", "--small", "96"])
        #expect(StepBench(try StepBench.model(named: "swin3d-t")).shapeArguments
                == ["--batch", "8", "--large", "112", "--small", "64", "--frames", "8"])
        #expect(StepBench(try StepBench.model(named: "resnet18-cifar")).shapeArguments
                == ["--batch", "64", "--large", "32", "--small", "16"])
    }

    /// Every row names a zoo model; the paper rows the ImageNet stems and Omnivore's Swin-T, whose
    /// trunk has the reference swin3d_t's shapes.
    @Test func everyModelIsInTheZooWithTheReferenceShapes() throws {
        for model in StepBench.models { #expect(ModelZoo.names.contains(model.zoo), "\(model.name) → \(model.zoo)") }
        #expect(StepBench.models(in: [.paper]).map(\.zoo) == ["resnet50", "convnext-tiny", "omnivore-swin-t"])
        let swin = SwinTransformer3D.Config.omnivoreTiny
        #expect(swin.patch == [2, 4, 4] && swin.window == [8, 7, 7] && swin.embedDimension == 96 && swin.depths == [2, 2, 6, 2])
    }

    @Test func aCommandLineSelectsModelsOrSuites() throws {
        func names(_ models: String?, _ suites: String?) throws -> [String] {
            try StepBench.selection(models: models, suites: suites).map(\.name)
        }
        #expect(try names(nil, nil) == ["resnet18-cifar", "convnext-atto", "swin-tiny-32", "omnivore-cifar", "omnivore-cifar-joint"])
        #expect(try names(nil, "paper") == ["resnet50", "convnext-tiny", "swin3d-t"])
        #expect(try names(nil, "paper, small") == ["resnet18-cifar", "convnext-atto", "swin-tiny-32", "resnet50", "convnext-tiny", "swin3d-t"])
        #expect(try names(nil, "all") == StepBench.models.map(\.name))
        #expect(try names("swin3d-t,resnet50", nil) == ["swin3d-t", "resnet50"])
        #expect(throws: StepBench.SelectionError.modelsAndSuites) { try names("resnet50", "paper") }
        #expect(throws: StepBench.SelectionError.unknownSuite("large", known: ["small", "paper", "omnivore", "all"])) {
            try names(nil, "large")
        }
        #expect(throws: StepBench.SelectionError.self) { try names("resnet-50", nil) }
    }
}
