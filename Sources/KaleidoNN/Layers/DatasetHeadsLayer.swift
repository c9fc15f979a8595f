import KaleidoTensor

/// One linear classifier per dataset (Omnivore's `heads.image`, `heads.video`, `heads.rgbd`),
/// of which each batch uses one: a batch comes from one dataset, and the trainer names it by
/// setting `selected` (or through `SwinTransformer3DNetwork.forward(_:dataset:_:)`) before the
/// forward. The head used is remembered per forward, so the backward needs no selection.
public final class DatasetHeadsLayer: Layer {
    /// A dataset's head: its name (the parameter scope `heads.<name>`) and class count.
    public struct Head: Sendable, Equatable {
        public var name: String
        public var classes: Int
        public init(_ name: String, classes: Int) {
            self.name = name
            self.classes = classes
        }
    }

    public let inFeatures: Int
    /// Dataset names, in registration order.
    public let names: [String]
    let heads: [String: LinearLayer]
    /// The dataset of the next forward.
    public var selected: String?
    private var saved = SavedStack<LinearLayer>()

    /// Registers `name.weight` (classes, in) and `name.bias` for each head under `builder`
    /// (the model passes its `heads` scope), in the order given.
    public init(_ builder: ParameterBuilder, inFeatures: Int, heads: [Head]) {
        precondition(!heads.isEmpty && Set(heads.map(\.name)).count == heads.count, "dataset heads need distinct names: \(heads.map(\.name))")
        self.inFeatures = inFeatures
        names = heads.map(\.name)
        var layers: [String: LinearLayer] = [:]
        for head in heads {
            layers[head.name] = LinearLayer(builder.child(head.name), inFeatures: inFeatures, outFeatures: head.classes,
                                            initialization: .truncatedNormal(std: 0.02))
        }
        self.heads = layers
        selected = heads.count == 1 ? heads[0].name : nil
    }

    func head(_ name: String?) -> LinearLayer {
        guard let name, let head = heads[name] else {
            preconditionFailure("dataset heads: no head \(name.map { "\"\($0)\"" } ?? "selected"); known: \(names.joined(separator: ", "))")
        }
        return head
    }

    public func classes(of name: String) -> Int? { heads[name]?.outFeatures }

    public func forward(_ input: Tensor, _ context: RunContext) -> Tensor {
        let head = head(selected)
        saved.push(head, if: context.recordsForBackward)
        return head.forward(input, context)
    }

    public func backward(_ dOutput: Tensor, _ context: RunContext) -> Tensor {
        saved.pop("dataset heads").backward(dOutput, context)
    }

    public var parameterRange: Range<Int>? { span(of: Array(heads.values)) }

    public func describe(_ inputShape: [Int]) -> LayerDescription {
        // Every head is trainable, so all count towards the parameters; the shape is the selected one's.
        let children = names.map { heads[$0]!.describe(inputShape) }
        let shape = selected.flatMap { names.firstIndex(of: $0) }.map { children[$0].outputShape } ?? children[0].outputShape
        return LayerDescription(name: "heads \(names.joined(separator: "/"))", outputShape: shape, children: children)
    }
}
