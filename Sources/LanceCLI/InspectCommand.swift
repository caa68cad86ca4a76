import ArgumentParser
import Foundation
import LanceModel
import LanceTrain

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

    @Argument(help: "The model file (.onnx, Keras .h5 or .keras) or a .lance container.")
    var model: String

    @Option(help: "For a Keras weights-only .h5: the architecture JSON (model.to_json()).")
    var architecture: String?

    @Flag(help: "Print the same data as JSON.")
    var json = false

    @Option(help: "Batch size for output shapes, MACs and activation memory (default: 1, or the calibration batch size).")
    var batchSize: Int?

    @Option(help: "Input height and width for the accounting, e.g. 224,224 (default: the model's).")
    var inputSize: String?

    @Option(help: "Layers to account for: last:K (the last K convolutions with groups 1, plus the head) or node names.")
    var trainLayers: String?

    @Flag(help: "Show every mode's basis: dimension, rank, energy kept and the leading spectrum.")
    var bases = false

    @Flag(help: "Show only the container's tasks: per task its classes and head, per shared layer how many feature directions each task protects and how many are free.")
    var tasks = false

    public init() {}

    public func validate() throws {
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let inputSize, parseSize(inputSize) == nil { throw ValidationError("--input-size must be HEIGHT,WIDTH, e.g. 224,224") }
        if let trainLayers { _ = try LayerSelection(parsing: trainLayers) }
    }

    public func run() throws {
        let loaded = try reportingUnsupportedOperators { try loadModelOrContainer(model, architecture: architecture) }
        if tasks {
            guard let container = loaded.container else {
                throw CommandError.dataMismatch(path: model, reason: "--tasks needs a .lance container; a model file has no task registry")
            }
            let report = TaskRoomReport(container)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(report.lines.joined(separator: "\n"))
            }
            return
        }
        let calibration = loaded.container?.calibration
        let batch = batchSize ?? calibration?.batchSize ?? 1
        var report = try ModelReport(graph: loaded.graph, path: model, batchSize: batch)
        report.container = loaded.container.map { ContainerReport($0) }
        let selection: LayerSelection?
        if let trainLayers {
            selection = try LayerSelection(parsing: trainLayers)
        } else if let calibration {
            selection = .names(calibration.layers.map(\.layer))
        } else {
            selection = nil
        }
        if let selection {
            let layers = try loaded.graph.trainedLayers(selection)
            let accounting = try loaded.graph.accounting(for: layers, batchSize: batch, inputSize: inputSize.flatMap(parseSize),
                                                         calibration: calibration)
            report.training = TrainingReport(selection: selection.description, batchSize: batch, layers: accounting)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text(showBases: bases))
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
    var container: ContainerReport?
    var training: TrainingReport?

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

    func text(showBases: Bool) -> String {
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
        if let container { lines += [""] + container.lines }
        if let training { lines += [""] + training.lines(showBases: showBases) }
        return lines.joined(separator: "\n")
    }
}

/// `224,224` as `[224, 224]`.
func parseSize(_ text: String) -> [Int]? {
    let values = text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    return values.count == 2 && values.allSatisfy({ $0 > 0 }) ? values : nil
}

/// The trained layers' activation memory and weight-gradient cost (method sections 3.4–3.5).
struct TrainingReport: Codable {
    struct Mode: Codable {
        var mode: String
        var dimension: Int
        var rank: Int
        var energyKept: Float
        var leadingSpectrum: [Float]
    }

    struct Layer: Codable {
        var name: String
        var kind: String
        var isHead: Bool
        var inputShape: [Int]
        var fullMiB: Double
        var lanceMiB: Double?
        var compressionRatio: Double?
        var modes: [Mode]
        var fullMACs: Int
        var fullWeightGradientMACs: Int
        var lanceMACs: Int?
        var lanceWeightGradientMACs: Int?
    }

    var selection: String
    var batchSize: Int
    var layers: [Layer]
    /// Sums over the trained convolutions (the paper's tables), and over all trained layers.
    var convolutionFullMiB: Double
    var convolutionLanceMiB: Double?
    var totalFullMiB: Double
    var totalLanceMiB: Double?
    var totalCompressionRatio: Double?

    init(selection: String, batchSize: Int, layers accounting: [LayerAccounting]) {
        self.selection = selection
        self.batchSize = batchSize
        layers = accounting.map { record in
            Layer(name: record.layer, kind: record.kind.rawValue, isHead: record.isHead, inputShape: record.inputShape,
                  fullMiB: Double(record.fullBytes) / bytesPerMiB, lanceMiB: record.lanceBytes.map { Double($0) / bytesPerMiB },
                  compressionRatio: record.compressionRatio,
                  modes: record.modes.map { Mode(mode: $0.mode, dimension: $0.dimension, rank: $0.rank, energyKept: $0.energyKept,
                                                 leadingSpectrum: Array($0.spectrum.prefix(8))) },
                  fullMACs: record.fullMACs, fullWeightGradientMACs: record.fullWeightGradientMACs,
                  lanceMACs: record.lanceMACs, lanceWeightGradientMACs: record.lanceWeightGradientMACs)
        }
        let convolutions = layers.filter { $0.kind != "linear" }
        convolutionFullMiB = convolutions.reduce(0) { $0 + $1.fullMiB }
        convolutionLanceMiB = convolutions.allSatisfy({ $0.lanceMiB != nil }) && !convolutions.isEmpty
            ? convolutions.reduce(0) { $0 + ($1.lanceMiB ?? 0) } : nil
        totalFullMiB = layers.reduce(0) { $0 + $1.fullMiB }
        totalLanceMiB = layers.allSatisfy({ $0.lanceMiB != nil }) ? layers.reduce(0) { $0 + ($1.lanceMiB ?? 0) } : nil
        totalCompressionRatio = totalLanceMiB.map { totalFullMiB / max($0, 1e-12) }
    }

    func lines(showBases: Bool) -> [String] {
        func mib(_ value: Double?) -> String { value.map { String($0, decimals: 2) } ?? "-" }
        var lines = ["trained layers (\(selection)) at batch \(batchSize): activation memory kept for the weight gradient, float32 MiB"]
        let rows = layers.map { layer -> [String] in
            [layer.name + (layer.isHead ? " (head)" : ""), layer.kind, shapeText(layer.inputShape),
             layer.modes.isEmpty ? "-" : layer.modes.map { "\($0.dimension)→\($0.rank)" }.joined(separator: " "),
             mib(layer.fullMiB), mib(layer.lanceMiB), layer.compressionRatio.map { String($0, decimals: 1) + "x" } ?? "-",
             abbreviated(layer.fullWeightGradientMACs), layer.lanceWeightGradientMACs.map(abbreviated) ?? "-"]
        }
        lines.append(renderTable(header: ["layer", "kind", "input", "ranks (dim→rank)", "full MiB", "LANCE MiB", "ratio",
                                           "full wgrad MACs", "LANCE wgrad MACs"], rows: rows, rightAligned: [4, 5, 6, 7, 8]))
        lines.append("totals    convolutions \(mib(convolutionFullMiB)) MiB full, \(mib(convolutionLanceMiB)) MiB LANCE; "
                     + "all trained layers \(mib(totalFullMiB)) MiB full, \(mib(totalLanceMiB)) MiB LANCE"
                     + (totalCompressionRatio.map { " (\(String($0, decimals: 1))x)" } ?? ""))
        if showBases {
            for layer in layers where !layer.modes.isEmpty {
                lines.append("")
                lines.append("bases of \(layer.name)")
                lines.append(renderTable(header: ["mode", "dimension", "rank", "energy kept", "leading normalised eigenvalues"],
                                         rows: layer.modes.map { [$0.mode, "\($0.dimension)", "\($0.rank)", String(Double($0.energyKept), decimals: 4),
                                                                 $0.leadingSpectrum.map { String(Double($0), decimals: 4) }.joined(separator: " ")] },
                                         rightAligned: [1, 2, 3]))
            }
        }
        return lines
    }
}
