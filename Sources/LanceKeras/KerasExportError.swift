/// Why a graph could not be exported as a Keras model. Every case names the output file.
public enum KerasExportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Nodes that have no Keras layer (listed all at once, before anything is written).
    case unsupportedNodes(path: String, nodes: [UnexportableNode])
    /// The graph cannot be described as a Keras model at all (no concrete input shape, ...).
    case invalidGraph(path: String, reason: String)
    /// The output name ends in neither `.h5` nor `.keras`.
    case unknownFormat(path: String)
    /// The output file cannot be written.
    case unwritableOutput(path: String, reason: String)

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unsupportedNodes(let path, let nodes):
            let types = nodes.reduce(into: [String]()) { if !$0.contains($1.opType) { $0.append($1.opType) } }
            return "\(path): \(nodes.count) node\(nodes.count == 1 ? "" : "s") cannot be expressed as Keras layers "
                + "(\(types.joined(separator: ", "))); nothing was written; see docs/importers.md"
        case .invalidGraph(let path, let reason): return "\(path): the model cannot be exported to Keras: \(reason)"
        case .unknownFormat(let path): return "\(path): unknown Keras format; the name must end in .h5 or .keras"
        case .unwritableOutput(let path, let reason): return "\(path): cannot write the file: \(reason)"
        }
    }

    /// The table of nodes without a Keras layer (`op | count | nodes | reason`), one row per
    /// operator type and reason.
    public var nodeTable: String? {
        guard case .unsupportedNodes(_, let nodes) = self else { return nil }
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
