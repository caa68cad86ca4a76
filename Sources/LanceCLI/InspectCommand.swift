import ArgumentParser
import Foundation
import LanceModel

/// `lance-inspect`: the layer table of a model.
public struct InspectCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lance-inspect",
        abstract: "Show a model's inputs, outputs, provenance and per-layer table.",
        discussion: """
            Reads an ONNX or Keras model and prints, per node, its operator, output shape, parameter count and \
            multiply-accumulates (MACs) at the given batch size, then totals. Exits 1 with a table of \
            operators when the model uses operators LANCE cannot import.
            """)

    @Argument(help: "The model file (.onnx, Keras .h5 or .keras).")
    var model: String

    @Option(help: "For a Keras weights-only .h5: the architecture JSON (model.to_json()).")
    var architecture: String?

    @Flag(help: "Print the same data as JSON.")
    var json = false

    @Option(help: "Batch size for output shapes and MACs.")
    var batchSize = 1

    public init() {}

    public func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
    }

    public func run() throws {
        let graph = try reportingUnsupportedOperators { try loadModel(model, architecture: architecture) }
        let report = try ModelReport(graph: graph, path: model, batchSize: batchSize)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
    }
}

/// Everything `lance-inspect` shows, encodable as JSON (keys documented in `docs/cli.md`).
struct ModelReport: Codable {
    struct Value: Codable { var name: String; var shape: String }
    struct Layer: Codable {
        var name: String
        var op: String
        var outputShape: [Int]
        var parameters: Int
        var macs: Int
    }

    var file: String
    var format: String
    var formatVersion: String
    var producer: String
    var details: [String: String]
    var inputs: [Value]
    var outputs: [Value]
    var batchSize: Int
    var layers: [Layer]
    var totalParameters: Int
    var trainableParameters: Int
    var parameterBytes: Int
    var totalMACs: Int

    init(graph: Graph, path: String, batchSize: Int) throws {
        let summary = try graph.summary(batchSize: batchSize)
        file = URL(fileURLWithPath: path).lastPathComponent
        format = graph.provenance.sourceFormat
        formatVersion = graph.provenance.formatVersion
        producer = graph.provenance.producer
        details = Dictionary(graph.provenance.details.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        inputs = graph.inputs.map { Value(name: $0.name, shape: $0.shapeDescription) }
        outputs = graph.outputs.map { Value(name: $0.name, shape: shapeText(summary.outputShapes[$0.name] ?? [])) }
        self.batchSize = batchSize
        layers = summary.layers.map {
            Layer(name: $0.name, op: $0.opType, outputShape: $0.outputShape, parameters: $0.parameterCount,
                  macs: $0.multiplyAccumulates)
        }
        totalParameters = summary.parameterCount
        trainableParameters = summary.trainableParameterCount
        parameterBytes = summary.parameterCount * 4
        totalMACs = summary.multiplyAccumulates
    }

    var text: String {
        var lines: [String] = []
        lines.append("model     \(file)")
        let extra = details.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        lines.append("format    \(([format, formatVersion, "producer " + producer] + extra).joined(separator: ", "))")
        lines.append("inputs    " + inputs.map { "\($0.name) \($0.shape)" }.joined(separator: "; "))
        lines.append("outputs   " + outputs.map { "\($0.name) \($0.shape)" }.joined(separator: "; ")
                     + " at batch \(batchSize)")
        lines.append("")
        let rows = layers.enumerated().map { index, layer in
            ["\(index)", layer.name, layer.op, shapeText(layer.outputShape),
             layer.parameters == 0 ? "" : grouped(layer.parameters), layer.macs == 0 ? "" : grouped(layer.macs)]
        }
        lines.append(renderTable(header: ["#", "name", "op", "output shape", "params", "MACs"], rows: rows,
                                 rightAligned: [0, 4, 5]))
        lines.append("")
        let mib = String(Double(parameterBytes) / 1_048_576, decimals: 2)
        lines.append("totals    \(layers.count) layers, \(grouped(totalParameters)) parameters (\(mib) MiB float32; "
                     + "\(grouped(trainableParameters)) trainable), \(abbreviated(totalMACs)) MACs at batch \(batchSize)")
        return lines.joined(separator: "\n")
    }
}
