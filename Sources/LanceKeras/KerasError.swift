/// Why a Keras file could not be imported, or a graph not exported as one. Every case names the file
/// and, where there is one, the layer or node at fault.
public enum KerasError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file cannot be read, or is not of the format its name says.
    case unreadableFile(path: String, reason: String)
    /// The architecture JSON is missing or malformed.
    case invalidArchitecture(path: String, reason: String)
    /// Layers (or layer options) LANCE cannot import, all listed at once.
    case unsupportedLayers(path: String, layers: [UnsupportedLayer])
    /// A layer's configuration or connections are malformed.
    case invalidLayer(path: String, layer: String, reason: String)
    /// A layer's weights are missing or of the wrong shape.
    case invalidWeights(path: String, layer: String, reason: String)
    /// Export: nodes that have no Keras layer (listed all at once, before anything is written).
    case unexportableNodes(path: String, nodes: [UnexportableNode])
    /// Export: the graph cannot be described as a Keras model at all (no concrete input shape, ...).
    case unexportableGraph(path: String, reason: String)
    /// Export: the output name ends in neither `.h5` nor `.keras`.
    case unknownFormat(path: String)
    /// Export: the output file cannot be written.
    case unwritableOutput(path: String, reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason): "\(path): \(reason)"
        case .invalidArchitecture(let path, let reason): "\(path): invalid model architecture: \(reason)"
        case .unsupportedLayers(let path, let layers):
            "\(path): \(layers.reduce(0) { $0 + $1.layers.count }) layers use classes LANCE cannot import (\(layers.map(\.className).joined(separator: ", "))); see docs/importers.md"
        case .invalidLayer(let path, let layer, let reason): "\(path): layer '\(layer)': \(reason)"
        case .invalidWeights(let path, let layer, let reason): "\(path): layer '\(layer)': \(reason)"
        case .unexportableNodes(let path, let nodes):
            "\(path): \(nodes.count) node\(nodes.count == 1 ? "" : "s") cannot be expressed as Keras layers "
                + "(\(nodes.reduce(into: [String]()) { if !$0.contains($1.opType) { $0.append($1.opType) } }.joined(separator: ", "))); "
                + "nothing was written; see docs/importers.md"
        case .unexportableGraph(let path, let reason): "\(path): the model cannot be exported to Keras: \(reason)"
        case .unknownFormat(let path): "\(path): unknown Keras format; the name must end in .h5 or .keras"
        case .unwritableOutput(let path, let reason): "\(path): cannot write the file: \(reason)"
        }
    }

    /// The table of nodes without a Keras layer (`op | count | nodes | reason`), one row per
    /// operator type and reason.
    public var nodeTable: String? {
        guard case .unexportableNodes(_, let nodes) = self else { return nil }
        var groups: [(opType: String, reason: String, nodes: [String])] = []
        for node in nodes {
            if let index = groups.firstIndex(where: { $0.opType == node.opType && $0.reason == node.reason }) {
                groups[index].nodes.append(node.node)
            } else {
                groups.append((node.opType, node.reason, [node.node]))
            }
        }
        return textTable(header: ["op", "count", "nodes", "reason"], rows: groups.map { ($0.opType, $0.nodes, $0.reason) })
    }

    /// The table of unsupported layer classes (class | count | layers | reason).
    public var layerTable: String? {
        guard case .unsupportedLayers(_, let layers) = self else { return nil }
        return textTable(header: ["class", "count", "layers", "reason"],
                         rows: layers.map { ($0.className, $0.layers, $0.reason) })
    }
}

/// A table `kind | count | names | reason` (at most three names per row), columns padded to the
/// widest cell, a dashed rule under the header.
func textTable(header: [String], rows groups: [(kind: String, names: [String], reason: String)]) -> String {
    let rows = groups.map { [$0.kind, "\($0.names.count)", $0.names.prefix(3).joined(separator: ", ") + ($0.names.count > 3 ? ", ..." : ""), $0.reason] }
    let widths = (0..<4).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    func line(_ cells: [String]) -> String {
        var text = cells.enumerated().map { $0.element + String(repeating: " ", count: widths[$0.offset] - $0.element.count) }
            .joined(separator: " | ")
        while text.last == " " { text.removeLast() }
        return text
    }
    return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "-|-")] + rows.map(line))
        .joined(separator: "\n")
}

/// One row of the table of layer classes the importer cannot translate.
public struct UnsupportedLayer: Sendable, Equatable {
    /// The Keras class name.
    public var className: String
    /// The names of the layers of that class.
    public var layers: [String]
    /// Why it cannot be imported.
    public var reason: String
}

/// A node of the graph that has no Keras form.
public struct UnexportableNode: Sendable, Equatable {
    /// The node's operator (`Operator.opType`), or `input` / `output` for a graph input or output.
    public var opType: String
    /// The node's (or value's) name.
    public var node: String
    /// Why Keras cannot express it.
    public var reason: String

    /// Creates a row of the unsupported-node table.
    public init(opType: String, node: String, reason: String) {
        self.opType = opType
        self.node = node
        self.reason = reason
    }
}
