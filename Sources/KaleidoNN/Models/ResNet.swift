/// ResNet-18/34/50/101 as in torchvision (He et al. 2016), with torchvision's parameter names:
/// `conv1`, `bn1`, `layer{1-4}.{i}.conv{1-3}` / `bn{1-3}` / `downsample.{0,1}`, `fc`.
public enum ResNet {
    public enum BlockKind: Sendable { case basic, bottleneck }

    public struct Config: Sendable {
        public var block: BlockKind
        public var layers: [Int]
        /// CIFAR stem: one 3×3 stride-1 convolution and no max-pool, for 32-px inputs.
        public var cifarStem = false
        /// Start the last BN of every block at γ = 0, so blocks begin as the identity.
        public var zeroInitResidual = false
        /// Base width of the first stage (64 in the paper; smaller for tests).
        public var width = 64
        /// Classifier outputs; 0 for a feature extractor.
        public var classes = 0

        public static let resnet18 = Config(block: .basic, layers: [2, 2, 2, 2])
        public static let resnet34 = Config(block: .basic, layers: [3, 4, 6, 3])
        public static let resnet50 = Config(block: .bottleneck, layers: [3, 4, 6, 3])
        public static let resnet101 = Config(block: .bottleneck, layers: [3, 4, 23, 3])

        var expansion: Int { block == .basic ? 1 : 4 }
        /// Channels of the pooled features.
        public var featureDimension: Int { width * 8 * expansion }
    }

    /// The network from (N, H, W, 3) images to (N, features) — or (N, classes) with a classifier.
    /// Every ReLU follows a BatchNorm or a residual sum that feeds nothing else, so all run in place.
    public static func make(_ config: Config, _ builder: ParameterBuilder) -> Sequential {
        var layers: [Layer] = []
        if config.cifarStem {
            layers.append(Conv2dLayer(builder.child("conv1"), inChannels: 3, outChannels: config.width, kernel: 3, stride: 1,
                                      padding: 1, initialization: .kaimingFanOut))
        } else {
            layers.append(Conv2dLayer(builder.child("conv1"), inChannels: 3, outChannels: config.width, kernel: 7, stride: 2,
                                      padding: 3, initialization: .kaimingFanOut))
        }
        layers.append(BatchNormLayer(builder.child("bn1"), channels: config.width, reluAfter: true))
        if !config.cifarStem { layers.append(MaxPoolLayer(kernel: 3, stride: 2, padding: 1)) }

        var inChannels = config.width
        for (stage, blocks) in config.layers.enumerated() {
            let stageBuilder = builder.child("layer\(stage + 1)")
            let planes = config.width << stage
            for index in 0..<blocks {
                let stride = (stage > 0 && index == 0) ? 2 : 1
                layers.append(block(config, stageBuilder.child(index), inChannels: inChannels, planes: planes, stride: stride,
                                    name: "layer\(stage + 1).\(index)"))
                inChannels = planes * config.expansion
            }
        }
        layers.append(GlobalAvgPoolLayer())
        if config.classes > 0 {
            layers.append(LinearLayer(builder.child("fc"), inFeatures: inChannels, outFeatures: config.classes,
                                      initialization: .pytorchDefault))
        }
        return Sequential("resnet", layers)
    }

    static func block(_ config: Config, _ b: ParameterBuilder, inChannels: Int, planes: Int, stride: Int, name: String) -> Residual {
        let outChannels = planes * config.expansion
        func conv(_ child: String, _ from: Int, _ to: Int, kernel: Int, stride: Int = 1) -> Conv2dLayer {
            Conv2dLayer(b.child(child), inChannels: from, outChannels: to, kernel: kernel, stride: stride,
                        padding: kernel / 2, initialization: .kaimingFanOut)
        }
        // The last BatchNorm runs in the block, with the sum and the ReLU in its pass (`Residual`'s
        // `norm`); it is still created, so named and registered, right after the branch's layers.
        let branch: [Layer], norm: BatchNormLayer
        switch config.block {
        case .basic:
            branch = [conv("conv1", inChannels, planes, kernel: 3, stride: stride), BatchNormLayer(b.child("bn1"), channels: planes, reluAfter: true),
                      conv("conv2", planes, planes, kernel: 3)]
            norm = BatchNormLayer(b.child("bn2"), channels: planes, zeroInitScale: config.zeroInitResidual, reluAfter: true)
        case .bottleneck:
            // torchvision's "ResNet v1.5": the stride sits on the 3×3 convolution.
            branch = [conv("conv1", inChannels, planes, kernel: 1), BatchNormLayer(b.child("bn1"), channels: planes, reluAfter: true),
                      conv("conv2", planes, planes, kernel: 3, stride: stride),
                      BatchNormLayer(b.child("bn2"), channels: planes, reluAfter: true),
                      conv("conv3", planes, outChannels, kernel: 1)]
            norm = BatchNormLayer(b.child("bn3"), channels: outChannels, zeroInitScale: config.zeroInitResidual, reluAfter: true)
        }
        var shortcut: Layer?
        if stride != 1 || inChannels != outChannels {
            let downsample = b.child("downsample")
            shortcut = Sequential("downsample", [
                Conv2dLayer(downsample.child(0), inChannels: inChannels, outChannels: outChannels, kernel: 1, stride: stride,
                            initialization: .kaimingFanOut),
                BatchNormLayer(downsample.child(1), channels: outChannels),
            ])
        }
        return Residual(name, branch: Sequential("branch", branch), norm: norm, shortcut: shortcut, reluAfter: true)
    }
}
