import KaleidoTensor

/// A parameter's place in the arena: what layers hold instead of the memory itself, so the
/// same layer graph can run on the online arena, the EMA target arena or a loaded checkpoint.
public struct ParameterRef: Sendable, Equatable {
    public let index: Int
    public let offset: Int
    public let count: Int
}

/// Every parameter and buffer of a model in one contiguous Float32 allocation, gradients in a
/// second one with the same layout. The optimiser, gradient zeroing, all-reduce buckets, EMA and
/// checkpoint shards are all single loops over flat memory.
public final class ParameterArena: @unchecked Sendable {
    public struct Entry: Sendable {
        public let spec: ParameterSpec
        public let offset: Int
        public var count: Int { spec.count }
        public var ref: ParameterRef { ParameterRef(index: index, offset: offset, count: spec.count) }
        let index: Int
    }

    public let entries: [Entry]
    public let values: TensorStorage
    public let gradients: TensorStorage
    private let indexByName: [String: Int]

    /// Total floats in the arena (parameters and buffers).
    public var count: Int { values.count }

    /// An arena for `specs`, laid out in order, with values from their initializers drawn from
    /// a generator keyed by (seed, parameter index), so adding a parameter elsewhere does not
    /// change how the others start.
    public init(specs: [ParameterSpec], seed: UInt64) {
        var offset = 0
        var entries: [Entry] = []
        var indexByName: [String: Int] = [:]
        for (index, spec) in specs.enumerated() {
            precondition(indexByName[spec.name] == nil, "parameter \(spec.name) registered twice")
            indexByName[spec.name] = index
            entries.append(Entry(spec: spec, offset: offset, index: index))
            offset += spec.count
        }
        self.entries = entries
        self.indexByName = indexByName
        values = TensorStorage(count: offset)
        gradients = TensorStorage(count: offset)
        hasGradients = true
        for entry in entries {
            var rng = SplitMix64(keys: seed, UInt64(entry.index))
            ParameterArena.initialize(values.pointer + entry.offset, count: entry.count, with: entry.spec.initializer, rng: &rng)
        }
    }

    /// False for a copy: its `gradients` hold nothing.
    public let hasGradients: Bool

    /// A second arena with the same layout and a copy of the values, without gradient storage:
    /// the EMA target network and fine-tuning's weight average are never differentiated, and a
    /// gradient buffer would be one more model-sized allocation, zero-filled and so resident.
    public func copy() -> ParameterArena {
        let twin = ParameterArena(layoutOf: self)
        twin.values.pointer.update(from: values.pointer, count: count)
        return twin
    }

    private init(layoutOf other: ParameterArena) {
        entries = other.entries
        indexByName = other.indexByName
        values = TensorStorage(count: other.count)
        gradients = TensorStorage(count: 0)
        hasGradients = false
    }

    public func entry(named name: String) -> Entry? { indexByName[name].map { entries[$0] } }

    @inline(__always) public func value(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> { values.pointer + ref.offset }
    @inline(__always) public func gradient(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> {
        precondition(hasGradients, "gradient of \(entries[ref.index].spec.name) asked of an arena copy, which has none")
        return gradients.pointer + ref.offset
    }

    /// The values of `name` as a tensor view in Kaleido's layout.
    public func tensor(named name: String) -> Tensor? {
        entry(named: name).map { Tensor(storage: values, offset: $0.offset, shape: $0.spec.shape) }
    }

    /// Trainable floats (weights and no-decay parameters; buffers excluded).
    public var trainableCount: Int { entries.filter { $0.spec.role.isTrainable }.reduce(0) { $0 + $1.count } }

    public func zeroGradients() {
        precondition(hasGradients, "zeroGradients on an arena copy, which has no gradients")
        gradients.pointer.update(repeating: 0, count: count)
    }

    static func initialize(_ p: UnsafeMutablePointer<Float>, count: Int, with initializer: Initializer, rng: inout SplitMix64) {
        switch initializer {
        case .zeros: p.update(repeating: 0, count: count)
        case .ones: p.update(repeating: 1, count: count)
        case .constant(let value): p.update(repeating: value, count: count)
        case .normal(let std):
            for i in 0..<count { p[i] = rng.normal() * std }
        case .truncatedNormal(let std):
            for i in 0..<count {
                var x = rng.normal()
                while abs(x) > 2 { x = rng.normal() }
                p[i] = x * std
            }
        case .uniform(let bound):
            for i in 0..<count { p[i] = (rng.uniform() * 2 - 1) * bound }
        case .values(let values):
            precondition(values.count == count, "initial values: \(values.count) for \(count) floats")
            for i in 0..<count { p[i] = values[i] }
        }
    }
}
