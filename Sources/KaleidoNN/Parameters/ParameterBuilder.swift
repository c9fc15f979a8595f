/// Collects a model's parameters while its layers are built. Each layer registers its arrays
/// under the builder's dotted prefix and keeps the returned refs; `makeArena` then allocates.
///
///     let stem = builder.child("conv1")
///     weight = stem.parameter("weight", shape: [64, 3, 3, 3], layout: .convolution, role: .weight, initializer: …)
public final class ParameterBuilder {
    private final class Registry {
        var specs: [ParameterSpec] = []
        var offset = 0
    }

    private let registry: Registry
    /// Dotted prefix of this scope, e.g. `layer1.0.`.
    public let prefix: String

    public init() {
        registry = Registry()
        prefix = ""
    }

    private init(registry: Registry, prefix: String) {
        self.registry = registry
        self.prefix = prefix
    }

    /// A builder whose names start with `prefix.name.`.
    public func child(_ name: String) -> ParameterBuilder {
        ParameterBuilder(registry: registry, prefix: prefix + name + ".")
    }

    public func child(_ index: Int) -> ParameterBuilder { child(String(index)) }

    /// Registers `prefix + name` and returns where it will live in the arena.
    public func parameter(_ name: String, shape: [Int], layout: TorchLayout = .same, role: ParameterRole,
                          initializer: Initializer) -> ParameterRef {
        let spec = ParameterSpec(name: prefix + name, shape: shape, layout: layout, role: role, initializer: initializer)
        let ref = ParameterRef(index: registry.specs.count, offset: registry.offset, count: spec.count)
        registry.specs.append(spec)
        registry.offset += spec.count
        return ref
    }

    public var specs: [ParameterSpec] { registry.specs }

    /// The arena holding everything registered so far.
    public func makeArena(seed: UInt64) -> ParameterArena {
        ParameterArena(specs: registry.specs, seed: seed)
    }
}
