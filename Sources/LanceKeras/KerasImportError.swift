/// Why a Keras file could not be imported. Every case names the file and, where there is one, the
/// layer at fault.
public enum KerasImportError: Error, Sendable, Equatable, CustomStringConvertible {
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

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason): "\(path): \(reason)"
        case .invalidArchitecture(let path, let reason): "\(path): invalid model architecture: \(reason)"
        case .unsupportedLayers(let path, let layers):
            "\(path): \(layers.reduce(0) { $0 + $1.layers.count }) layers use classes LANCE cannot import (\(layers.map(\.className).joined(separator: ", "))); see docs/importers.md"
        case .invalidLayer(let path, let layer, let reason): "\(path): layer '\(layer)': \(reason)"
        case .invalidWeights(let path, let layer, let reason): "\(path): layer '\(layer)': \(reason)"
        }
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
