import LanceCore
import LanceModel

/// Why calibration or training cannot proceed.
public enum TrainingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The layer selection does not name trainable layers of this graph.
    case invalidLayerSelection(reason: String)
    /// The graph cannot be run at the requested shape.
    case graph(ModelError)
    /// The data does not fit the model or the settings.
    case data(reason: String)
    /// A numeric routine failed.
    case numeric(reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .invalidLayerSelection(let reason): "cannot choose the layers to train: \(reason)"
        case .graph(let error): error.description
        case .data(let reason): reason
        case .numeric(let reason): reason
        }
    }
}

/// Which layers train.
public enum LayerSelection: Sendable, Equatable, CustomStringConvertible {
    /// The last `count` convolutions with `groups == 1` (the LANCE rule: depthwise convolutions
    /// are skipped when counting), plus the classifier head.
    case last(Int)
    /// Convolution or Gemm/MatMul nodes by name (the head is not added implicitly).
    case names([String])

    /// Parses `last:4` or a comma-separated list of node names.
    public init(parsing text: String) throws(TrainingError) {
        if text.hasPrefix("last:") {
            guard let count = Int(text.dropFirst(5)), count >= 0 else {
                throw .invalidLayerSelection(reason: "'\(text)' is not last:K with a whole number K")
            }
            self = .last(count)
        } else {
            let names = text.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
            guard !names.isEmpty else { throw .invalidLayerSelection(reason: "no layer names in '\(text)'") }
            self = .names(names)
        }
    }

    /// `last:4` or the names joined by commas.
    public var description: String {
        switch self {
        case .last(let count): "last:\(count)"
        case .names(let names): names.joined(separator: ",")
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var text = Substring(self)
        while text.first?.isWhitespace == true { text.removeFirst() }
        while text.last?.isWhitespace == true { text.removeLast() }
        return String(text)
    }
}

/// A layer whose weights train: a convolution (4-mode input) or a linear layer (2-mode input).
public struct TrainedLayer: Sendable, Equatable {
    /// Convolution or linear.
    public enum Kind: String, Sendable {
        /// Conv with groups == 1 on `[B, C, H, W]`.
        case convolution
        /// Depthwise or grouped convolution (input modes as for convolution).
        case groupedConvolution = "grouped-convolution"
        /// Gemm/MatMul on `[B, I]`.
        case linear
    }

    /// The node's name.
    public var node: String
    /// Its kind.
    public var kind: Kind
    /// The name of its input value (the activation full backprop keeps).
    public var input: String
    /// Whether it is the classifier head (the last linear layer).
    public var isHead: Bool

    /// Describes a trained layer (`Graph.trainedLayers` finds them in a graph).
    public init(node: String, kind: Kind, input: String, isHead: Bool) {
        self.node = node
        self.kind = kind
        self.input = input
        self.isHead = isHead
    }
    /// The names of the mode axes of its input.
    public var modeNames: [String] {
        kind == .linear ? ["batch", "feature"] : ["batch", "channel", "height", "width"]
    }
}

extension Graph {
    /// The layers a selection trains, in graph order.
    ///
    /// `last:K` takes the last K convolutions with `groups == 1` — the rule of the LANCE code,
    /// which skips depthwise convolutions when counting (for MobileNetV2 the last 4 are the final
    /// 1×1 convolution, the last block's projection, and the expand and project convolutions of the
    /// block before it) — and adds the classifier head, the last Gemm/MatMul whose second operand is
    /// a parameter.
    public func trainedLayers(_ selection: LayerSelection) throws(TrainingError) -> [TrainedLayer] {
        let parameterNames = Set(parameters.map(\.name))
        func describe(_ node: Node) -> TrainedLayer? {
            switch node.operation {
            case .convolution(let convolution):
                return TrainedLayer(node: node.name, kind: convolution.groups == 1 ? .convolution : .groupedConvolution,
                                    input: node.inputs[0], isHead: false)
            case .gemm(let gemm) where !gemm.transposeA && node.inputs.count >= 2 && parameterNames.contains(node.inputs[1]):
                return TrainedLayer(node: node.name, kind: .linear, input: node.inputs[0], isHead: false)
            case .matMul where parameterNames.contains(node.inputs[1]):
                return TrainedLayer(node: node.name, kind: .linear, input: node.inputs[0], isHead: false)
            default:
                return nil
            }
        }
        let candidates = nodes.compactMap(describe)
        let headIndex = candidates.lastIndex { $0.kind == .linear }
        switch selection {
        case .last(let count):
            var chosen = Array(candidates.filter { $0.kind == .convolution }.suffix(count))
            if count > 0 && chosen.count < count {
                throw .invalidLayerSelection(reason: "the model has only \(chosen.count) convolutions with groups = 1, fewer than \(count)")
            }
            if let headIndex {
                var head = candidates[headIndex]
                head.isHead = true
                chosen.append(head)
            }
            guard !chosen.isEmpty else { throw .invalidLayerSelection(reason: "the model has no convolution or linear layer to train") }
            let order = Dictionary(uniqueKeysWithValues: nodes.enumerated().map { ($1.name, $0) })
            return chosen.sorted { order[$0.node, default: 0] < order[$1.node, default: 0] }
        case .names(let names):
            var chosen: [TrainedLayer] = []
            for name in names {
                guard var layer = candidates.first(where: { $0.node == name }) else {
                    let exists = nodes.contains { $0.name == name }
                    throw .invalidLayerSelection(reason: exists ? "node '\(name)' is not a convolution or a linear layer with a weight parameter"
                                                               : "no node named '\(name)'; `lance-inspect` lists the node names")
                }
                layer.isHead = headIndex.map { candidates[$0].node == name } ?? false
                chosen.append(layer)
            }
            return chosen
        }
    }
}
