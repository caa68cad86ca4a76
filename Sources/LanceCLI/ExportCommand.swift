import ArgumentParser
import Foundation
import LanceFormat
import LanceKeras
import LanceModel
import LanceONNX

/// `lance-export`: a container (or model file) to ONNX or Keras.
public struct ExportCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lance-export",
        abstract: "Export a .lance container (or a model file) as an ONNX model or a Keras 3 model (.h5 or .keras).",
        discussion: """
            ONNX: parameter and node names, the symbolic batch axis and BatchNormalization are kept (--fold-batchnorm \
            folds it into the preceding Conv/Gemm); weights past 2 GB go to OUT.onnx.data. Keras: a Functional model \
            over channels-last inputs that keras.models.load_model reads, with every layout change of the import undone. \
            Models with nodes that have no form in the target format fail before anything is written, naming the nodes. \
            Outputs are written atomically and an existing file is replaced only with --force.
            """)

    @Argument(help: "The .lance container, or a model file (.onnx, Keras .h5 or .keras).")
    var model: String

    @Option(name: [.short, .customLong("output")], help: "The file to write: .onnx, Keras .h5 (legacy full model) or .keras.")
    var output: String

    @Option(help: "For a Keras weights-only .h5: the architecture JSON (model.to_json()).")
    var architecture: String?

    @Flag(help: "ONNX: fold each BatchNormalization that directly follows a Conv or Gemm into its weights (default: keep it).")
    var foldBatchnorm = false

    @Option(help: "ONNX: the opset to write (11-21; default: the lowest from 13 on that expresses every node).")
    var opset: Int?

    @Option(help: .hidden)
    var externalDataThreshold: Int?

    @Option(help: "For a container with several tasks: export this task's head (default: the first task's, the graph's own).")
    var task: String?

    @Flag(help: "For a container with several tasks: export every task's head, each as its own output (logits_<task> besides the first task's output).")
    var allTasks = false

    @Flag(help: "Replace an existing output file.")
    var force = false

    public init() {}

    enum Format { case onnx, keras }

    var format: Format? {
        switch URL(fileURLWithPath: output).pathExtension.lowercased() {
        case "onnx": .onnx
        case "h5", "keras": .keras
        default: nil
        }
    }

    public func validate() throws {
        guard let format else { throw ValidationError("-o must name a .onnx, .h5 or .keras file") }
        if format == .keras && (foldBatchnorm || opset != nil || externalDataThreshold != nil) {
            throw ValidationError("--fold-batchnorm and --opset apply to ONNX export only")
        }
        if let externalDataThreshold, externalDataThreshold < 0 { throw ValidationError("--external-data-threshold must be at least 0") }
        if task != nil && allTasks { throw ValidationError("--task and --all-tasks exclude each other") }
    }

    public func run() throws {
        try refuseOverwrite(output)
        let loaded = try reportingUnsupportedOperators { try loadModelOrContainer(model, architecture: architecture) }
        var graph = loaded.graph
        if task != nil || allTasks {
            guard let container = loaded.container else {
                throw CommandError.dataMismatch(path: model, reason: "--task and --all-tasks need a .lance container; a model file has one head")
            }
            graph = allTasks ? try allTasksGraph(container, path: model) : try taskGraph(container, task: task, path: model)
        }
        switch format {
        case .onnx:
            var options = ONNXExportOptions(foldBatchNormalization: foldBatchnorm, opset: opset)
            if let externalDataThreshold { options.externalDataThreshold = externalDataThreshold }
            let exported = try ONNXExporter.export(graph, options: options, path: output)
            if let location = exported.externalDataLocation {
                try refuseOverwrite(URL(fileURLWithPath: output).deletingLastPathComponent().appendingPathComponent(location).path)
            }
            try ONNXExporter.write(exported, to: output)
            var details = ["opset \(exported.opset)", "\(exported.nodeCount) nodes", "\(exported.initializerCount) initializers"]
            if foldBatchnorm { details.append("\(exported.foldedBatchNormalizations.count) BatchNormalization folded") }
            if let location = exported.externalDataLocation {
                details.append("tensor data in \(location) (\(String(Double(exported.externalData?.count ?? 0) / 1_048_576, decimals: 2)) MiB)")
            }
            print("wrote \(output): " + details.joined(separator: ", ") + ", \(String(Double(fileSize(output)) / 1_048_576, decimals: 2)) MiB")
        case .keras, nil:
            let summary = try writeKeras(graph)
            print("wrote \(output): Keras \(output.lowercased().hasSuffix(".keras") ? ".keras archive" : "legacy HDF5 model"), "
                  + "\(summary.layers) layers, \(summary.weights) weight arrays, \(String(Double(fileSize(output)) / 1_048_576, decimals: 2)) MiB")
        }
    }

    /// Writes the Keras file, printing the table of nodes without a Keras layer on failure.
    private func writeKeras(_ graph: Graph) throws -> KerasExportSummary {
        let result = Result { () throws(KerasError) -> KerasExportSummary in try KerasExporter.write(graph, to: output) }
        if case .failure(let failure) = result, let table = failure.nodeTable {
            printError("Error: \(failure.description)\n\(table)")
            throw ExitCode.failure
        }
        return try result.get()
    }

    private func refuseOverwrite(_ path: String) throws {
        if FileManager.default.fileExists(atPath: path) && !force {
            throw CommandError.dataMismatch(path: path, reason: "the file exists; pass --force to replace it")
        }
    }

    private func fileSize(_ path: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }
}
