/// How a Kaleido array maps to the PyTorch tensor of the same name. Kaleido stores convolution
/// weights channels-last so they feed sgemm directly; import and export permute.
public enum TorchLayout: String, Codable, Sendable {
    /// Same shape and order in both (linear weights, biases, norms).
    case same
    /// Kaleido (OC, KH, KW, IC) ↔ PyTorch (OC, IC, KH, KW).
    case convolution
    /// Kaleido (KH, KW, C) ↔ PyTorch (C, 1, KH, KW).
    case depthwise
    /// Kaleido (OC, KT, KH, KW, IC) ↔ PyTorch (OC, IC, KT, KH, KW).
    case convolution3D
}

/// What an entry of the arena is for, which decides optimiser and export treatment.
public enum ParameterRole: String, Codable, Sendable {
    /// Trained, with weight decay (convolution and linear weights).
    case weight
    /// Trained, excluded from weight decay (biases, norm scales, layer scale, position tables).
    case noDecay
    /// Not trained: running statistics and similar state, exported as float.
    case buffer
    /// Not trained, an integer in PyTorch (`num_batches_tracked`, `relative_position_index`);
    /// held as float here (exact below 2²⁴) and exported as int64.
    case integerBuffer

    public var isTrainable: Bool { self == .weight || self == .noDecay }
}

/// How a parameter starts, following the reference implementations.
public enum Initializer: Codable, Sendable, Equatable {
    case zeros
    case ones
    case constant(Float)
    /// N(0, std²).
    case normal(std: Float)
    /// N(0, std²) redrawn outside ±2 std, as timm's `trunc_normal_`.
    case truncatedNormal(std: Float)
    /// U(−bound, bound), PyTorch's default for Linear (bound = 1/√fan_in).
    case uniform(bound: Float)
    /// Values given by the model (relative position indices).
    case values([Float])
}

/// One named array of the arena.
public struct ParameterSpec: Codable, Sendable, Equatable {
    /// Dotted name in timm / torchvision convention, e.g. `layer1.0.bn2.running_var`.
    public let name: String
    /// Shape in Kaleido's layout.
    public let shape: [Int]
    public let layout: TorchLayout
    public let role: ParameterRole
    public let initializer: Initializer

    public var count: Int { shape.reduce(1, *) }

    /// The shape PyTorch gives the same tensor.
    public var torchShape: [Int] {
        switch layout {
        case .same: return shape
        case .convolution: return [shape[0], shape[3], shape[1], shape[2]]
        case .depthwise: return [shape[2], 1, shape[0], shape[1]]
        case .convolution3D: return [shape[0], shape[4], shape[1], shape[2], shape[3]]
        }
    }
}
