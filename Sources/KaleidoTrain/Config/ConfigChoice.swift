/// A config value chosen from a fixed set of names. Decoding anything else fails with the list
/// of valid names, so `model.arch: resnet19` tells the user what they could have written.
public protocol ConfigChoice: RawRepresentable, CaseIterable, Codable, Equatable, Sendable where RawValue == String {
    /// Former names that still load (a renamed choice keeps old configs working).
    static var aliases: [String: Self] { get }
}

extension ConfigChoice {
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        let name = try container.decode(String.self)
        guard let value = Self(rawValue: name) ?? Self.aliases[name] else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "expected one of \(Self.choices), got \"\(name)\"")
        }
        self = value
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public static var aliases: [String: Self] { [:] }

    /// The valid names, comma-separated.
    public static var choices: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
