import Testing
@testable import KaleidoNN

/// Trainable parameter counts equal the reference implementations' (torchvision, timm),
/// counted with their 1000-class ImageNet heads.
@Suite struct ParameterCountTests {
    func trainable(_ build: (ParameterBuilder) -> Void) -> Int {
        let builder = ParameterBuilder()
        build(builder)
        return builder.specs.filter { $0.role.isTrainable }.reduce(0) { $0 + $1.count }
    }

    @Test func resnetMatchesTorchvision() {
        var r18 = ResNet.Config.resnet18, r50 = ResNet.Config.resnet50
        r18.classes = 1000
        r50.classes = 1000
        #expect(trainable { _ = ResNet.make(r18, $0) } == 11_689_512)
        #expect(trainable { _ = ResNet.make(r50, $0) } == 25_557_032)
    }
}
