import ArgumentParser
import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceNN
import LanceRuntime

/// The layout of image data given to `lance-eval`.
public enum InputLayout: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// `[batch, channels, height, width]`, the toolkit's layout.
    case nchw
    /// `[batch, height, width, channels]`, Keras's layout.
    case nhwc
}

/// `lance-eval`: runs a model's forward pass on a `.npy` batch.
public struct EvalCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lance-eval",
        abstract: "Run a model on a .npy batch: outputs, and top-1 accuracy when labels are given.",
        discussion: """
            The data is a float32 .npy array in the model's input layout (NCHW for images). \
            Outputs of the model's first output are written with --dump-outputs as a float32 .npy.
            """)

    @Argument(help: "The model file (.onnx, Keras .h5 or .keras) or a .lance container.")
    var model: String

    @Option(help: "For a Keras weights-only .h5: the architecture JSON (model.to_json()).")
    var architecture: String?

    @Option(help: "Layout of image data: nchw, or nhwc as Keras users have it (converted to NCHW).")
    var inputLayout: InputLayout = .nchw

    @Option(help: "Input data: a .npy array whose first axis is the sample index, or a folder of class folders, IDX, HDF5 or .npz data (preprocessed as the container records, with their labels).")
    var data: String

    @Option(help: "Integer class labels: a .npy array with one entry per sample.")
    var labels: String?

    @Option(help: "Write the model's outputs to this .npy file.")
    var dumpOutputs: String?

    @Option(help: "Samples per forward pass.")
    var batchSize = 32

    @Option(help: "Evaluate only the first N samples (of a .npy array or a data source).")
    var limit: Int?

    @Option(help: "For a container with several tasks: the task whose head to run (default: the first task's, the graph's own).")
    var task: String?

    @Option(help: "Use only the samples of these classes of a data source, relabelled 0, 1, … in this order (e.g. 2,3).")
    var selectClasses: String?

    public init() {}

    public func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
    }

    public func run() throws {
        let loaded = try reportingUnsupportedOperators { try loadModelOrContainer(model, architecture: architecture) }
        var graph = loaded.graph
        if let task {
            guard let container = loaded.container else {
                throw CommandError.dataMismatch(path: model, reason: "--task needs a .lance container; a model file has one head")
            }
            graph = try taskGraph(container, task: task, path: model)
        }
        guard graph.inputs.count == 1, graph.outputs.count >= 1 else {
            throw CommandError.dataMismatch(path: model, reason: "lance-eval needs a model with one input; this one has \(graph.inputs.count)")
        }
        if URL(fileURLWithPath: data).pathExtension.lowercased() != "npy" {
            try evaluateDataSource(graph: graph, preprocessing: loaded.container?.preprocessing)
            return
        }
        var input = try NPY.read(data).tensor
        if inputLayout == .nhwc {
            guard input.rank == 4 else {
                throw CommandError.dataMismatch(path: data, reason: "--input-layout nhwc needs a 4-D array, got shape \(shapeText(input.shape))")
            }
            input = transpose(input, permutation: [0, 3, 1, 2])
        }
        guard input.rank >= 1, input.shape[0] > 0 else {
            throw CommandError.dataMismatch(path: data, reason: "the array is empty")
        }
        var labelValues: [Int]?
        if let labels {
            let array = try NPY.read(labels)
            guard let integers = array.integers ?? (array.floats.allSatisfy { $0 == $0.rounded() } ? array.floats.map { Int($0) } : nil),
                  integers.count == input.shape[0] else {
                throw CommandError.dataMismatch(path: labels, reason: "expected \(input.shape[0]) integer labels, one per sample")
            }
            labelValues = integers
        }
        if let limit, limit < input.shape[0] {
            input = input.slice(batch: 0..<limit)
            labelValues = labelValues.map { Array($0.prefix(limit)) }
        }
        do {
            try graph.checkInputShape([1] + input.shape.dropFirst(), for: graph.inputs[0])
        } catch {
            throw CommandError.dataMismatch(path: data, reason: "samples have shape \(shapeText(Array(input.shape.dropFirst()))), but model input '\(graph.inputs[0].name)' expects \(graph.inputs[0].shapeDescription)")
        }
        let session = InferenceSession(graph: graph)
        let start = DispatchTime.now()
        let outputs = try session.run(input, batchSize: batchSize)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        try report(outputs: outputs, labels: labelValues, seconds: seconds)
    }

    /// Evaluates a data source (image folder, IDX, HDF5, `.npz`) preprocessed as the container
    /// records (or, for a model file, resized to the model's input), with the source's labels.
    private func evaluateDataSource(graph: Graph, preprocessing recorded: Preprocessing?) throws {
        var preprocessing = recorded ?? Preprocessing(resize: .direct)
        if recorded == nil, let dimensions = graph.inputs.first?.dimensions, dimensions.count == 4 {
            if case .fixed(let channels) = dimensions[1] { preprocessing.channels = channels }
            if case .fixed(let height) = dimensions[2], case .fixed(let width) = dimensions[3] { preprocessing.size = [height, width] }
        }
        let source = try openDataSource(data, preprocessing: preprocessing,
                                        selecting: try selectClasses.map { try parseClassList($0, option: "--select-classes") })
        var batches = try BatchIterator(source: source, batchSize: batchSize, limit: limit)
        let session = InferenceSession(graph: graph)
        var outputs: [Tensor] = []
        var labels: [Int] = []
        let start = DispatchTime.now()
        while let batch = try batches.next() {
            outputs.append(try session.run(batch.images))
            labels += batch.labels
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        guard !outputs.isEmpty else { throw CommandError.dataMismatch(path: data, reason: "the data holds no samples") }
        try report(outputs: Tensor.concatenate(batches: outputs), labels: source.hasLabels ? labels : nil, seconds: seconds)
    }

    private func report(outputs: Tensor, labels labelValues: [Int]?, seconds: Double) throws {
        let samples = outputs.shape.first ?? 0
        print("\(samples) samples in \(String(seconds, decimals: 2)) s (\(String(Double(samples) / seconds, decimals: 1)) samples/s), outputs \(shapeText(outputs.shape))")
        if let labelValues {
            guard outputs.rank == 2 else {
                throw CommandError.dataMismatch(path: model, reason: "top-1 accuracy needs a [N, classes] output, got \(shapeText(outputs.shape))")
            }
            let predictions = outputs.argmaxPerRow()
            let correct = zip(predictions, labelValues).filter { $0 == $1 }.count
            print("top-1 \(correct)/\(samples) (\(String(100 * Double(correct) / Double(samples), decimals: 2))%)")
        }
        if let dumpOutputs {
            try NPY.write(outputs, to: dumpOutputs)
            print("outputs written to \(dumpOutputs)")
        }
    }
}
