/// One row of the table of operators an importer cannot translate.
public struct UnsupportedOperator: Sendable, Equatable {
    /// The operator type (with its domain when not the default one).
    public var opType: String
    /// The names of the nodes that use it.
    public var nodes: [String]
    /// Why it cannot be imported.
    public var reason: String
}

/// Why an ONNX file could not be imported, or a graph not exported. Every case names the file and,
/// where there is one, the node or tensor at fault.
public enum ONNXError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file cannot be read at all.
    case unreadableFile(path: String, reason: String)
    /// The bytes are not a decodable ONNX `ModelProto` (truncated, corrupted, or another format).
    case notAnONNXModel(path: String)
    /// The model has no graph, or no default-domain opset.
    case incompleteModel(path: String, reason: String)
    /// The model's default opset is outside the supported range.
    case unsupportedOpset(path: String, version: Int)
    /// Operators (or operator variants) that cannot be imported, all listed at once.
    case unsupportedOperators(path: String, operators: [UnsupportedOperator])
    /// A tensor's data is missing, of the wrong size or of an unusable type.
    case invalidTensor(path: String, tensor: String, reason: String)
    /// A node is malformed: bad attributes, missing inputs, inputs that must be constant.
    case invalidNode(path: String, node: String, opType: String, reason: String)
    /// A node input that must be known at import time (Reshape's shape, Clip's bounds, ...) is
    /// computed at run time instead.
    case nonConstantInput(path: String, node: String, opType: String, input: String)
    /// The imported graph does not check out (undefined values, shapes that do not fit).
    case invalidGraph(path: String, reason: String)
    /// Export: nodes whose operator has no ONNX form (listed all at once).
    case unexportableNodes(path: String, nodes: [NodeIssue])
    /// Export: the requested opset is outside what LANCE writes, or some nodes cannot be expressed
    /// in it (every node's requirement is listed).
    case unexportableOpset(path: String, opset: Int?, nodes: [NodeIssue])
    /// Export: the output file cannot be written.
    case unwritableOutput(path: String, reason: String)

    /// The operator table (op | count | nodes | reason) for an unsupported-operator error.
    public var operatorTable: String? {
        guard case .unsupportedOperators(_, let operators) = self else { return nil }
        let rows = operators.map { op -> [String] in
            let shown = op.nodes.prefix(3).joined(separator: ", ") + (op.nodes.count > 3 ? ", ..." : "")
            return [op.opType, "\(op.nodes.count)", shown, op.reason]
        }
        let header = ["op", "count", "nodes", "reason"]
        let widths = (0..<4).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $0.element.padded(to: widths[$0.offset]) }
                .joined(separator: " | ").trimmingTrailingSpaces()
        }
        return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "-|-")]
                + rows.map(line)).joined(separator: "\n")
    }

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason):
            return "\(path): cannot read the file: \(reason)"
        case .notAnONNXModel(let path):
            return "\(path): not an ONNX model (the protobuf is truncated, corrupted or of another format); re-export it"
        case .incompleteModel(let path, let reason):
            return "\(path): \(reason)"
        case .unsupportedOpset(let path, let version):
            return "\(path): opset \(version) is not supported (supported: \(ONNXImporter.supportedOpsets)); convert the model with onnx.version_converter"
        case .unsupportedOperators(let path, let operators):
            let count = operators.reduce(0) { $0 + $1.nodes.count }
            return "\(path): \(count) node\(count == 1 ? "" : "s") use operators LANCE cannot import (\(operators.map(\.opType).joined(separator: ", "))); see docs/operators.md"
        case .invalidTensor(let path, let tensor, let reason):
            return "\(path): tensor '\(tensor)': \(reason)"
        case .invalidNode(let path, let node, let opType, let reason):
            return "\(path): node '\(node)' (\(opType)): \(reason)"
        case .nonConstantInput(let path, let node, let opType, let input):
            return "\(path): node '\(node)' (\(opType)): input '\(input)' must be a constant (an initializer or Constant node), but it is computed at run time"
        case .invalidGraph(let path, let reason):
            return "\(path): \(reason)"
        case .unexportableNodes(let path, let nodes):
            return "\(path): \(nodes.count) node\(nodes.count == 1 ? "" : "s") cannot be expressed in ONNX: " + Self.list(nodes)
        case .unexportableOpset(let path, let opset, let nodes):
            if let opset, !ONNXExportOptions.supportedOpsets.contains(opset) {
                return "\(path): opset \(opset) is not supported; LANCE writes opsets \(ONNXExportOptions.supportedOpsets.lowerBound) to \(ONNXExportOptions.supportedOpsets.upperBound)"
            }
            return "\(path): " + (opset.map { "opset \($0) cannot express \(nodes.count) node\(nodes.count == 1 ? "" : "s"): " }
                                  ?? "no single opset expresses these \(nodes.count) nodes together: ") + Self.list(nodes)
        case .unwritableOutput(let path, let reason):
            return "\(path): cannot write the file: \(reason)"
        }
    }

    private static func list(_ nodes: [NodeIssue]) -> String {
        nodes.prefix(5).map { "'\($0.node)' (\($0.reason))" }.joined(separator: ", ") + (nodes.count > 5 ? ", ..." : "")
    }
}

/// A node that cannot be exported, and why.
public struct NodeIssue: Sendable, Equatable {
    /// The node's name.
    public var node: String
    /// Why it cannot be written.
    public var reason: String

    /// Creates a row.
    public init(node: String, reason: String) {
        self.node = node
        self.reason = reason
    }
}

extension String {
    func padded(to length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }

    func trimmingTrailingSpaces() -> String {
        var result = self
        while result.last == " " { result.removeLast() }
        return result
    }
}
