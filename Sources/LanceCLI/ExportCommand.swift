import ArgumentParser
import Foundation
import LanceFormat
import LanceModel
import LanceONNX

/// `lance-export`: a container (or model file) back to ONNX.
public struct ExportCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lance-export",
        abstract: "Export a .lance container (or a model file) as a standard ONNX model.",
        discussion: """
            Parameter and node names, the symbolic batch axis and BatchNormalization are kept. Models \
            with operators that have no ONNX form fail before anything is written, naming the nodes. \
            The output is written atomically and an existing file is replaced only with --force.
            """)

    @Argument(help: "The .lance container, or a model file (.onnx, Keras .h5 or .keras).")
    var model: String

    @Option(name: [.short, .customLong("output")], help: "The file to write (.onnx).")
    var output: String

    @Option(help: "For a Keras weights-only .h5: the architecture JSON (model.to_json()).")
    var architecture: String?

    @Flag(help: "Replace an existing output file.")
    var force = false

    public init() {}

    public func validate() throws {
        guard output.lowercased().hasSuffix(".onnx") else {
            throw ValidationError("-o must name a .onnx file (Keras export is not available yet)")
        }
    }

    public func run() throws {
        if FileManager.default.fileExists(atPath: output) && !force {
            throw CommandError.dataMismatch(path: output, reason: "the file exists; pass --force to replace it")
        }
        let graph = try reportingUnsupportedOperators { try loadModelOrContainer(model, architecture: architecture).graph }
        try ONNXExporter.write(graph, to: output)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("wrote \(output): \(graph.nodes.count) nodes, \(graph.parameters.count) initializers, "
              + "\(String(Double(bytes) / 1_048_576, decimals: 2)) MiB")
    }
}
