import Foundation
import LanceCore
import LanceModel
@testable import LanceFormat
import LanceTestSupport

/// Containers and byte-level helpers shared by the container tests.
enum Samples {
    /// A graph using every `Operator` case (and every activation, binary operator and padding
    /// form), with awkward values: infinite clip bounds, nil versus empty axes, a nil permutation.
    static func everyOperatorGraph() -> Graph {
        let window = WindowGeometry(kernelSize: [3, 3], strides: [2, 1], dilations: [1, 2],
                                    padding: .explicit(top: 1, left: 2, bottom: 3, right: 0))
        let operations: [Operator] = [
            .convolution(Convolution(window: window, groups: 2)),
            .convolution(Convolution(window: WindowGeometry(kernelSize: [1, 1], padding: .sameUpper))),
            .convolution(Convolution(window: WindowGeometry(kernelSize: [5, 3], strides: [2, 2], padding: .sameLower), groups: 4)),
            .batchNormalization(epsilon: 1e-3),
            .activation(.relu),
            .activation(.clip(minimum: 0, maximum: 6)),
            .activation(.clip(minimum: -.infinity, maximum: .infinity)),
            .activation(.clip(minimum: -Float.greatestFiniteMagnitude, maximum: .leastNonzeroMagnitude)),
            .activation(.leakyRelu(alpha: 0.125)),
            .activation(.sigmoid),
            .activation(.hardSigmoid(alpha: 0.2, beta: 0.5)),
            .activation(.hardSwish),
            .activation(.tanh),
            .activation(.thresholdedReLU(threshold: 0.25, negativeSlope: -0.5, maximum: .infinity)),
            .activation(.thresholdedReLU(threshold: -1, negativeSlope: 0, maximum: 6)),
            .binary(.add), .binary(.subtract), .binary(.multiply), .binary(.divide),
            .concat(axis: -3),
            .maxPool(Pooling(window: WindowGeometry(kernelSize: [3, 3], strides: [2, 2]), ceilMode: true)),
            .maxPool(Pooling(window: WindowGeometry(kernelSize: [2, 2], padding: .sameUpper))),
            .averagePool(Pooling(window: window, ceilMode: false), countIncludePad: true),
            .averagePool(Pooling(window: WindowGeometry(kernelSize: [7, 7]), ceilMode: true), countIncludePad: false),
            .globalAveragePool,
            .globalMaxPool,
            .flatten(axis: 1),
            .flatten(axis: 0),
            .reshape(shape: [0, -1], allowZero: false),
            .reshape(shape: [], allowZero: true),
            .transpose(permutation: nil),
            .transpose(permutation: [0, 2, 3, 1]),
            .transpose(permutation: []),
            .gemm(Gemm()),
            .gemm(Gemm(alpha: 0.5, beta: 0, transposeA: true, transposeB: true)),
            .matMul,
            .softmax(axis: -1, coercedTo2D: false),
            .softmax(axis: 1, coercedTo2D: true),
            .identity,
            .pad(pads: [0, 0, 1, 1, 0, 0, -1, 2], mode: .constant, value: -.infinity),
            .pad(pads: [1, 1], mode: .reflect, value: 0),
            .pad(pads: [], mode: .edge, value: 2.5),
            .squeeze(axes: nil),
            .squeeze(axes: []),
            .squeeze(axes: [0, -1]),
            .unsqueeze(axes: []),
            .unsqueeze(axes: [1, 3]),
            .reduceMean(axes: nil, keepDimensions: true),
            .reduceMean(axes: [], keepDimensions: false),
            .reduceMean(axes: [2, 3], keepDimensions: false),
        ]
        var nodes: [Node] = []
        var previous = "image"
        for (index, operation) in operations.enumerated() {
            let output = "value_\(index)"
            nodes.append(Node(name: "\(operation.opType.lowercased())_\(index)", operation: operation,
                              inputs: [previous, "conv.weight"], output: output))
            previous = output
        }
        let parameters = [
            Parameter(name: "conv.weight", tensor: .random(shape: [8, 4, 3, 3], seed: 1), trainable: false),
            Parameter(name: "conv.bias", tensor: .random(shape: [8], seed: 2)),
            Parameter(name: "dense.kernel", tensor: .random(shape: [12, 5], seed: 3), trainable: false,
                      layoutChange: LayoutChange(sourceShape: [2, 2, 3, 5], permutation: [2, 0, 1, 3])),
            Parameter(name: "bn.gamma", tensor: Tensor(shape: [8], repeating: 1), synthesized: true),
            Parameter(name: "scalar", tensor: Tensor(scalar: .nan)),
            Parameter(name: "empty", tensor: Tensor(shape: [0, 3])),
            Parameter(name: "specials", tensor: Tensor(shape: [6], scalars: [.infinity, -.infinity, -0.0, .leastNonzeroMagnitude,
                                                                              .greatestFiniteMagnitude, Float(bitPattern: 0x7FC0_1234)])),
        ]
        return Graph(name: "every-operator",
                     inputs: [ValueInfo(name: "image", dimensions: [.symbolic("N"), .fixed(4), .symbolic(""), .fixed(32)]),
                              ValueInfo(name: "unknown", dimensions: nil), ValueInfo(name: "scalar-input", dimensions: [])],
                     outputs: [ValueInfo(name: previous, dimensions: [.symbolic("N"), .fixed(10)])],
                     nodes: nodes, parameters: parameters,
                     provenance: Provenance(sourceFormat: "onnx", producer: "pytorch 2.5", formatVersion: "17",
                                            details: [(key: "ir_version", value: "8"), (key: "domain", value: ""),
                                                      (key: "a", value: "ü ✓"), (key: "ir_version", value: "again")]))
    }

    /// A container with every optional part filled in.
    static func fullContainer() -> Container {
        let graph = everyOperatorGraph()
        let calibration = CalibrationRecord(
            energy: 0.9, batchSize: 8, batches: 4, accumulation: "plain-sum", layerRule: "last:2",
            dataDescription: "cifar10 test[0..<32]", dataFingerprint: String(repeating: "ab", count: 32),
            layers: [
                LayerBases(layer: "conv_0", inputShape: [8, 4, 16, 16], modes: [
                    ModeBasis(mode: "batch", dimension: 8, rank: 3, factor: .random(shape: [8, 3], seed: 10),
                              spectrum: [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125, 0, 0]),
                    ModeBasis(mode: "channel", dimension: 4, rank: 4, factor: .random(shape: [4, 4], seed: 11), spectrum: [0.7, 0.2, 0.1, 0]),
                    ModeBasis(mode: "height", dimension: 16, rank: 2, factor: .random(shape: [16, 2], seed: 12), spectrum: []),
                    ModeBasis(mode: "width", dimension: 16, rank: 0, factor: Tensor(shape: [16, 0]), spectrum: [1]),
                ]),
                LayerBases(layer: "gemm_34", inputShape: [8, 12], modes: [
                    ModeBasis(mode: "batch", dimension: 8, rank: 2, factor: .random(shape: [8, 2], seed: 13), spectrum: [0.9, 0.1]),
                    ModeBasis(mode: "feature", dimension: 12, rank: 5, factor: .random(shape: [12, 5], seed: 14), spectrum: [0.3, 0.3, 0.2, 0.1, 0.1]),
                ]),
            ])
        let tasks = [
            TaskRecord(name: "imagenet", classes: 1000, classNames: [],
                       head: [Parameter(name: "fc.weight", tensor: .random(shape: [10, 12], seed: 20), trainable: false)],
                       protectedBases: [:], metrics: ["accuracy": 0.718]),
            TaskRecord(name: "fmnist-1", classes: 3, classNames: ["t-shirt", "trouser", ""],
                       head: [Parameter(name: "fc.weight", tensor: .random(shape: [3, 12], seed: 21)),
                              Parameter(name: "fc.bias", tensor: .random(shape: [3], seed: 22), trainable: false)],
                       protectedBases: ["conv_0": .random(shape: [36, 5], seed: 23), "gemm_34": .random(shape: [12, 2], seed: 24)],
                       metrics: ["accuracy": 0.91, "loss": 0.25, "forgetting": -0.0]),
        ]
        let optimizer = OptimizerState(kind: "adamw", step: 1234, epoch: 3,
                                       hyperparameters: ["learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.01],
                                       slots: ["first_moment/conv.bias": .random(shape: [8], seed: 30),
                                               "second_moment/conv.bias": .random(shape: [8], in: 0...1, seed: 31),
                                               "first_moment/fc.weight": .random(shape: [3, 12], seed: 32)])
        return Container(graph: graph, sourceSHA256: String(repeating: "0123456789abcdef", count: 4),
                         preprocessing: .imageNet, calibration: calibration, tasks: tasks, optimizerState: optimizer,
                         metrics: [Metric(name: "train_loss", scope: "epoch 1", value: 2.5),
                                   Metric(name: "train_loss", scope: "epoch 2", value: 1.25),
                                   Metric(name: "peak_resident_mib", scope: "", value: .infinity),
                                   Metric(name: "nan", scope: "edge", value: -.nan)])
    }

    /// A container of one tiny parameter and one tiny basis.
    static func tinyContainer() -> Container {
        let graph = Graph(name: "tiny", inputs: [ValueInfo(name: "x", dimensions: [.symbolic("N"), .fixed(3)])],
                          outputs: [ValueInfo(name: "y", dimensions: nil)],
                          nodes: [Node(name: "gemm", operation: .gemm(Gemm(transposeB: true)), inputs: ["x", "w"], output: "y")],
                          parameters: [Parameter(name: "w", tensor: .random(shape: [2, 3], seed: 5))],
                          provenance: Provenance(sourceFormat: "onnx", producer: "test", formatVersion: "13"))
        return Container(graph: graph, sourceSHA256: "",
                         tasks: [TaskRecord(name: "t", classes: 2, protectedBases: ["gemm": .random(shape: [3, 1], seed: 6)])])
    }
}

/// Whether two containers are equal with every float compared by bit pattern (NaN payloads,
/// signed zeros); returns a description of the first difference, or nil.
func bitwiseDifference(_ a: Container, _ b: Container) -> String? {
    func tensors(_ x: Tensor, _ y: Tensor, _ what: String) -> String? {
        guard x.shape == y.shape else { return "\(what): shape \(x.shape) vs \(y.shape)" }
        for (index, (p, q)) in zip(x.scalars, y.scalars).enumerated() where p.bitPattern != q.bitPattern {
            return "\(what)[\(index)]: \(p) vs \(q)"
        }
        return nil
    }
    func parameters(_ x: [Parameter], _ y: [Parameter], _ what: String) -> String? {
        guard x.count == y.count else { return "\(what): \(x.count) vs \(y.count) parameters" }
        for (p, q) in zip(x, y) {
            if p.name != q.name || p.trainable != q.trainable || p.synthesized != q.synthesized || p.layoutChange != q.layoutChange {
                return "\(what) '\(p.name)': attributes differ"
            }
            if let difference = tensors(p.tensor, q.tensor, "\(what) '\(p.name)'") { return difference }
        }
        return nil
    }
    if let difference = parameters(a.graph.parameters, b.graph.parameters, "parameter") { return difference }
    for (s, t) in zip(a.tasks, b.tasks) {
        if let difference = parameters(s.head, t.head, "head of \(s.name)") { return difference }
        guard s.protectedBases.keys.sorted() == t.protectedBases.keys.sorted() else { return "protected bases of \(s.name)" }
        for (key, value) in s.protectedBases {
            if let difference = tensors(value, t.protectedBases[key]!, "protected \(key)") { return difference }
        }
    }
    if let x = a.calibration, let y = b.calibration {
        for (l, m) in zip(x.layers, y.layers) {
            for (p, q) in zip(l.modes, m.modes) {
                if let difference = tensors(p.factor, q.factor, "basis \(l.layer)/\(p.mode)") { return difference }
                guard p.spectrum.map(\.bitPattern) == q.spectrum.map(\.bitPattern) else { return "spectrum \(l.layer)/\(p.mode)" }
            }
        }
    }
    if let x = a.optimizerState, let y = b.optimizerState {
        guard x.slots.keys.sorted() == y.slots.keys.sorted() else { return "optimizer slot names" }
        for (key, value) in x.slots {
            if let difference = tensors(value, y.slots[key]!, "slot \(key)") { return difference }
        }
    }
    guard a.metrics.map(\.value.bitPattern) == b.metrics.map(\.value.bitPattern) else { return "metric values" }
    // Everything else compares with ==; replace NaN-holding values first.
    func sanitized(_ container: Container) -> Container {
        var copy = container
        for index in copy.graph.parameters.indices {
            copy.graph.parameters[index].tensor = Tensor(shape: copy.graph.parameters[index].tensor.shape)
        }
        copy.metrics = copy.metrics.map { Metric(name: $0.name, scope: $0.scope, value: 0) }
        return copy
    }
    let x = sanitized(a), y = sanitized(b)
    if x.graph != y.graph { return "graph structure differs" }
    if x.preprocessing != y.preprocessing { return "preprocessing differs" }
    if x.sourceSHA256 != y.sourceSHA256 { return "source SHA-256 differs" }
    if x != y { return "containers differ outside the compared tensors" }
    return nil
}

/// Bytes of a file.
func fileBytes(_ path: String) -> [UInt8] {
    [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data())
}

/// Writes bytes to a file (non-atomic; test setup only).
func writeBytes(_ bytes: [UInt8], to path: String) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

/// Reads a file and returns the error, or nil when it read.
func readError(_ path: String) -> ContainerError? {
    do {
        _ = try ContainerFile.read(path)
        return nil
    } catch {
        return error
    }
}

/// The blob table of a written container.
func blobTable(_ path: String) throws -> [StoredTensor] {
    try ContainerFile.readManifestOnly(path).blobs
}

/// Seconds taken by `body`.
func seconds<T>(_ body: () throws -> T) rethrows -> (T, Double) {
    let start = DispatchTime.now().uptimeNanoseconds
    let result = try body()
    return (result, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
}
