import Foundation
import Testing
@testable import KaleidoTrain

/// The repository root, found from this file's location (tests read the shipped configs).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

@Suite struct ConfigLoaderTests {
    func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func debugYAMLEqualsTheBuiltInDefaults() throws {
        let path = repositoryRoot.appendingPathComponent("configs/debug.yaml").path
        let resolved = try ConfigLoader.load(file: path)
        #expect(resolved.config == KaleidoConfig())
        // Every default key is spelled out in the file, so the file documents them all.
        let defaults = try ConfigLoader.schemaNode(of: KaleidoConfig()).leafPaths().map { $0.joined(separator: ".") }
        #expect(Set(resolved.origins.keys) == Set(defaults))
    }

    @Test func everyShippedConfigLoads() throws {
        let directory = repositoryRoot.appendingPathComponent("configs")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }
        #expect(!files.isEmpty)
        for file in files {
            _ = try ConfigLoader.load(file: directory.appendingPathComponent(file).path)
        }
    }

    @Test func fileValuesAndOverridesApplyInOrder() throws {
        let resolved = try ConfigLoader.load(
            yaml: "optim:\n  lr: 0.5\n  name: lars\nmodel:\n  arch: convnext_tiny\n  stem_patch: 2\n", name: "configs/x.yaml",
            overrides: ["optim.lr=0.25", "data.mix.image=0.5"])
        #expect(resolved.config.optim.lr == 0.25)
        #expect(resolved.config.optim.name == .lars)
        #expect(resolved.config.model.arch == .convnextTiny)
        #expect(resolved.config.data.mix.image == 0.5)
        #expect(resolved.config.optim.warmupSteps == KaleidoConfig().optim.warmupSteps)
        #expect(resolved.origins["optim.lr"] == .override("optim.lr=0.25"))
        #expect(resolved.origins["optim.name"] == .file(path: "configs/x.yaml", line: 3))
    }

    @Test func wrongTypeNamesFileAndKeyPath() {
        let text = message { _ = try ConfigLoader.load(yaml: "optim:\n  lr: fast\n", name: "configs/x.yaml") }
        #expect(text == "configs/x.yaml: optim.lr: expected a number, got \"fast\" (line 2)")
        let integer = message { _ = try ConfigLoader.load(yaml: "run:\n  steps: 1.5\n", name: "c.yaml") }
        #expect(integer == "c.yaml: run.steps: expected an integer, got 1.5 (line 2)")
        let flag = message { _ = try ConfigLoader.load(yaml: "dist:\n  sync_bn: maybe\n", name: "c.yaml") }
        #expect(flag == "c.yaml: dist.sync_bn: expected true or false, got \"maybe\" (line 2)")
    }

    @Test func wrongTypeInAnOverrideNamesTheOverride() {
        let text = message { _ = try ConfigLoader.load(overrides: ["optim.lr=fast"]) }
        #expect(text == "--set optim.lr=fast: optim.lr: expected a number, got \"fast\"")
    }

    @Test func unknownKeyIsAnErrorWithASuggestion() {
        let typo = message { _ = try ConfigLoader.load(yaml: "optim:\n  lrr: 0.1\n", name: "configs/x.yaml") }
        #expect(typo == "configs/x.yaml: optim.lrr: unknown key (did you mean optim.lr?) (line 2)")
        let misplaced = message { _ = try ConfigLoader.load(yaml: "lr: 0.1\n", name: "c.yaml") }
        #expect(misplaced == "c.yaml: lr: unknown key (did you mean optim.lr?) (line 1)")
        let section = message { _ = try ConfigLoader.load(overrides: ["optimizer.lr=1"]) }
        #expect(section.hasPrefix("--set optimizer.lr=1: optimizer: unknown key"))
    }

    @Test func outOfRangeValuesAreErrors() throws {
        let lr = message { _ = try ConfigLoader.load(yaml: "optim:\n  lr: -1\n", name: "c.yaml") }
        #expect(lr == "c.yaml: optim.lr: must be > 0, got -1.0 (line 2)")
        let crops = message { _ = try ConfigLoader.load(overrides: ["data.large_crops=1"]) }
        #expect(crops == "--set data.large_crops=1: data.large_crops: must be ≥ 2 (ReLICv2 pairs large views), got 1")
        let encoder = message { _ = try ConfigLoader.load(overrides: ["eval.finetune_encoder=teacher"]) }
        #expect(encoder == "--set eval.finetune_encoder=teacher: eval.finetune_encoder: expected one of online, target, got \"teacher\"")
        let decay = message { _ = try ConfigLoader.load(overrides: ["eval.finetune_layer_decay=0"]) }
        #expect(decay == "--set eval.finetune_layer_decay=0: eval.finetune_layer_decay: must be in (0, 1], got 0.0")
        let window = message { _ = try ConfigLoader.load(overrides: ["model.arch=omnivore_swin_base", "model.window=[16, 7]"]) }
        #expect(window.hasSuffix("model.window: must be [Wt, Wh, Ww], three positive sizes, got [16, 7]"), "\(window)")
        let noWindow = message { _ = try ConfigLoader.load(overrides: ["model.window=[16, 7, 7]"]) }
        #expect(noWindow.hasSuffix("model.window: sets a Swin-3D attention window; resnet18 has none"), "\(noWindow)")
        #expect(try ConfigLoader.load(overrides: ["model.arch=omnivore_swin_base", "model.window=[16, 7, 7]"]).config.model.window == [16, 7, 7])
    }

    @Test func unknownChoiceListsTheValidOnes() {
        let text = message { _ = try ConfigLoader.load(overrides: ["model.arch=resnet19"]) }
        #expect(text.hasPrefix("--set model.arch=resnet19: model.arch: expected one of resnet18, resnet50, convnext_atto"))
        #expect(text.hasSuffix("got \"resnet19\""))
    }

    /// Rules across sections are checked when the config loads, at the key a user would change.
    @Test func crossSectionRulesNameTheKeyPath() throws {
        let video = message { _ = try ConfigLoader.load(overrides: ["data.mix.video=0.5"]) }
        #expect(video.hasPrefix("--set data.mix.video=0.5: data.mix.video: needs an Omnivore backbone"), "\(video)")
        #expect(video.contains("resnet18 takes images only"))
        let rgbd = message { _ = try ConfigLoader.load(overrides: ["model.arch=convnext_atto", "data.mix.rgbd=1"]) }
        #expect(rgbd.contains("data.mix.rgbd: needs an Omnivore backbone"), "\(rgbd)")
        // ConvNeXt's stem and downsamplings need views of at least 8 × stem_patch pixels.
        let convnext = message { _ = try ConfigLoader.load(overrides: ["model.arch=convnext_atto"]) }
        #expect(convnext.contains("data.small_size: must be ≥ 32 pixels for convnext_atto with model.stem_patch 4 (a 4×4 stem, then 3 downsamplings by 2), got 16"), "\(convnext)")
        #expect(!convnext.contains("data.large_size"), "\(convnext)")
        _ = try ConfigLoader.load(overrides: ["model.arch=convnext_atto", "model.stem_patch=2"])
        _ = try ConfigLoader.load(overrides: ["model.arch=convnext_atto", "data.small_crops=0"])
        // Omnivore takes every modality; alternate steps need no minimum per group.
        _ = try ConfigLoader.load(overrides: ["model.arch=omnivore_swin_cifar", "data.mix.video=1", "data.mix.rgbd=1"])
        // Joint: 5 samples over three modalities leave one modality with 1.
        let small = message {
            _ = try ConfigLoader.load(overrides: ["model.arch=omnivore_swin_cifar", "data.mix.video=1", "data.mix.rgbd=1",
                                                  "data.batch_size=5"])
        }
        #expect(small.contains("data.batch_size: gives the rgbd group 1 samples per step"), "\(small)")
        _ = try ConfigLoader.load(overrides: ["model.arch=omnivore_swin_cifar", "data.mix.video=1", "data.mix.rgbd=1",
                                              "data.mix_mode=alternate", "data.batch_size=5"])
    }

    /// A joint group split over the ranks must leave every rank 2 samples: known at launch.
    @Test func jointGroupsAreCheckedAgainstTheWorldSize() throws {
        let resolved = try ConfigLoader.load(overrides: ["model.arch=omnivore_swin_cifar", "data.mix.video=1", "data.mix.rgbd=1",
                                                         "data.batch_size=12"])
        try resolved.validate(worldSize: 2)
        let four = message { try resolved.validate(worldSize: 4) }
        #expect(four.contains("data.batch_size: gives the image group 4 samples per step (data.mix.image), 1 on some of 4 ranks"),
                "\(four)")
    }

    /// `mixed`, the mix mode's name before `joint`, still loads (as joint).
    @Test func theFormerMixModeNameStillLoads() throws {
        #expect(try ConfigLoader.load(overrides: ["data.mix_mode=mixed"]).config.data.mixMode == .joint)
        let text = message { _ = try ConfigLoader.load(overrides: ["data.mix_mode=blend"]) }
        #expect(text.contains("expected one of alternate, joint"), "\(text)")
    }

    @Test func sectionGivenAScalarIsAnError() {
        let text = message { _ = try ConfigLoader.load(yaml: "optim: 3\n", name: "c.yaml") }
        #expect(text == "c.yaml: optim: expected a mapping of keys, got 3 (line 1)")
    }

    @Test func malformedOverridesAndFilesAreErrors() {
        #expect(message { _ = try ConfigLoader.load(overrides: ["optim.lr"]) } == "--set optim.lr: expected key.path=value")
        #expect(message { _ = try ConfigLoader.load(overrides: ["optim..lr=1"]) }.contains("malformed"))
        #expect(message { _ = try ConfigLoader.load(file: "/nonexistent/k.yaml") }
                == "/nonexistent/k.yaml: cannot read config: no such file")
        #expect(message { _ = try ConfigLoader.load(yaml: "optim: [1, 2\n", name: "bad.yaml") }.hasPrefix("bad.yaml: invalid YAML"))
    }

    @Test func baseFilesAreAppliedFirstAndCyclesAreCaught() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kaleido-base-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try "optim:\n  lr: 0.5\n  warmup_steps: 7\n".write(to: directory.appendingPathComponent("parent.yaml"),
                                                        atomically: true, encoding: .utf8)
        try "base: parent.yaml\noptim:\n  lr: 0.25\n".write(to: directory.appendingPathComponent("child.yaml"),
                                                          atomically: true, encoding: .utf8)
        let resolved = try ConfigLoader.load(file: directory.appendingPathComponent("child.yaml").path)
        #expect(resolved.config.optim.lr == 0.25 && resolved.config.optim.warmupSteps == 7)

        try "base: b.yaml\n".write(to: directory.appendingPathComponent("a.yaml"), atomically: true, encoding: .utf8)
        try "base: a.yaml\n".write(to: directory.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try ConfigLoader.load(file: directory.appendingPathComponent("a.yaml").path) }
    }

    @Test func resolvedYAMLReloadsToTheSameConfig() throws {
        let resolved = try ConfigLoader.load(overrides: ["optim.lr=0.125", "model.arch=omnivore_swin_tiny"])
        let again = try ConfigLoader.load(yaml: try resolved.yaml(), name: "resolved.yaml")
        #expect(again.config == resolved.config)
        #expect(try resolved.yaml().contains("warmup_steps: 30"))
    }

    @Test func keyStylesConvertBothWays() {
        for name in ["warmupSteps", "knnK", "bucketMb", "beta1", "lr"] {
            #expect(KeyStyle.camelCase(KeyStyle.snakeCase(name)) == name)
        }
        #expect(KeyStyle.snakeCase("zeroInitResidual") == "zero_init_residual")
    }

    @Test(arguments: ["debug", "relicv2-resnet50", "relicv2-convnext-t", "omnivore-swin-t", "ablation-beta0"])
    func everyShippedConfigLoads(_ name: String) throws {
        let path = repositoryRoot.appendingPathComponent("configs/\(name).yaml").path
        let resolved = try ConfigLoader.load(file: path)
        if name == "relicv2-resnet50" {
            #expect(resolved.config.data.largeCrops == 4 && resolved.config.data.largeSize == 224)
            #expect(resolved.config.data.smallCrops == 2 && resolved.config.data.smallSize == 96)
            #expect(resolved.config.optim.name == .lars && resolved.config.data.batchSize == 4096)
        }
        // The ImageNet configs fine-tune with ConvNeXt's recipe, not the debug run's.
        if name.hasPrefix("relicv2-") || name.hasPrefix("omnivore-") {
            #expect(resolved.config.data.mixupAlpha == 0.8 && resolved.config.data.finetuneScaleMin == 0.08)
            #expect(resolved.config.eval.finetuneEncoder == .online && resolved.config.eval.finetuneLayerDecay == 0.75)
        }
        if name == "ablation-beta0" { #expect(resolved.config.ssl.beta == 0) }
    }
}

/// `--resume` against the checkpoint's resolved config: which changes are refused, accepted by
/// `--resume-allow`, or accepted with a warning.
@Suite struct ResumeConfigCheckTests {
    @Test func changesThatAlterTheRunAreRefusedOthersAccepted() throws {
        let saved = try ConfigLoader.yaml(of: KaleidoConfig())
        var current = KaleidoConfig()
        current.run.steps = 4000
        current.optim.lr = 0.5
        current.data.workers = 3
        current.data.batchSize = 32
        current.model.dropPath = 0.1
        current.ssl.temperature = 0.1
        current.run.seed = 7
        let check = try ResumeConfigCheck(saved: saved, current: current, allowing: ["model.drop_path"])
        #expect(check.refused.map(\.description).sorted()
                == ["data.batch_size: 64 → 32", "run.seed: 0 → 7", "ssl.temperature: 0.2 → 0.1"])
        #expect(check.allowed.map(\.description) == ["model.drop_path: 0.0 → 0.1"])
        #expect(check.accepted.map(\.description).sorted() == ["data.workers: 1 → 3", "optim.lr: 0.002 → 0.5", "run.steps: \(KaleidoConfig().run.steps) → 4000"])
        let unchanged = try ResumeConfigCheck(saved: saved, current: KaleidoConfig())
        #expect(unchanged.refused.isEmpty && unchanged.allowed.isEmpty && unchanged.accepted.isEmpty)
    }

    @Test func anAllowedKeyMustExist() {
        #expect(throws: ConfigError.unknownKey(origin: .override("--resume-allow data.batchsize"), keyPath: "data.batchsize", suggestion: nil)) {
            _ = try ResumeConfigCheck(saved: "run: {steps: 1}", current: KaleidoConfig(), allowing: ["data.batchsize"])
        }
    }

    @Test func keysAbsentFromAnOlderCheckpointAreNotCompared() throws {
        var current = KaleidoConfig()
        current.ssl.crossModalViews = false
        let check = try ResumeConfigCheck(saved: "run:\n  steps: \(current.run.steps)\nssl:\n  temperature: 0.2\n", current: current)
        #expect(check.refused.isEmpty && check.accepted.isEmpty)
    }
}
