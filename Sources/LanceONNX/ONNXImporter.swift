import CONNXProto
import Foundation
import LanceCore
import LanceModel

/// Imports ONNX models (`ModelProto`, decoded by protobuf-c) into the format-neutral `Graph`.
///
/// What the importer does beyond a literal translation:
/// - initializers that are also graph inputs become parameters (their values are the defaults);
/// - float tensors in `Constant` nodes that feed computations become parameters;
/// - `raw_data` and typed fields, packed or not, float16/bfloat16/double data (converted to
///   float32), and external data files (location, offset, length relative to the model file);
/// - inputs that ONNX passes as tensors but that are hyperparameters (Reshape's shape, Clip's
///   bounds, Pad's pads, Squeeze/Unsqueeze/ReduceMean axes) are folded into the operation;
/// - shape sub-graphs (Shape, Gather, Unsqueeze, Concat, Slice, Cast and integer arithmetic, as
///   PyTorch emits for `x.view(x.size(0), -1)`) are evaluated at import, keeping the batch axis
///   symbolic (a shape entry that follows the batch becomes Reshape's "copy this axis" 0).
public enum ONNXImporter {
    /// The default-domain opsets whose operator semantics the importer implements.
    public static let supportedOpsets = 7...21

    /// Operators the importer translates (some only in the forms `docs/operators.md` lists).
    public static let supportedOperators: Set<String> = [
        "Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
        "Add", "Sub", "Mul", "Div", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
        "Flatten", "Reshape", "Transpose", "Gemm", "MatMul", "Softmax", "Dropout", "Identity", "Pad",
        "Squeeze", "Unsqueeze", "ReduceMean", "Constant", "Shape", "Gather", "Cast", "Slice",
    ]

    /// Reads and imports an ONNX model file.
    ///
    /// - Parameters:
    ///   - path: the `.onnx` file; external data is looked up relative to its folder.
    ///   - constantInputs: values for graph inputs that should be treated as constants (for
    ///     example a Reshape shape that a test passes as an input); they stop being graph inputs.
    /// - Throws: `ONNXError` naming the file and the node or tensor at fault; when
    ///   operators are unsupported, `.unsupportedOperators` lists all of them.
    public static func importModel(at path: String, constantInputs: [String: ONNXTensor] = [:]) throws(ONNXError) -> Graph {
        let proto = try unpackModel(at: path)
        defer { onnx__model_proto__free_unpacked(proto, nil) }
        return try importModel(proto.pointee, path: path, constantInputs: constantInputs)
    }

    /// Imports a model from its serialized bytes; `path` names it in errors and locates external data.
    public static func importModel(bytes: [UInt8], path: String, constantInputs: [String: ONNXTensor] = [:]) throws(ONNXError) -> Graph {
        let proto: UnsafeMutablePointer<Onnx__ModelProto>? = bytes.withUnsafeBufferPointer {
            onnx__model_proto__unpack(nil, $0.count, $0.baseAddress)
        }
        guard let proto else { throw .notAnONNXModel(path: path) }
        defer { onnx__model_proto__free_unpacked(proto, nil) }
        return try importModel(proto.pointee, path: path, constantInputs: constantInputs)
    }

    /// The file's model message, unpacked straight from the file's memory mapping, which is gone
    /// when this returns: the serialized bytes are never copied, nor held while the graph is built.
    private static func unpackModel(at path: String) throws(ONNXError) -> UnsafeMutablePointer<Onnx__ModelProto> {
        let file = try mappedFile(path)
        let proto = file.withUnsafeBytes { bytes in
            onnx__model_proto__unpack(nil, bytes.count, bytes.bindMemory(to: UInt8.self).baseAddress)
        }
        guard let proto else { throw .notAnONNXModel(path: path) }
        return proto
    }

    private static func importModel(_ model: Onnx__ModelProto, path: String, constantInputs: [String: ONNXTensor]) throws(ONNXError) -> Graph {
        guard let graph = model.graph?.pointee else {
            throw .incompleteModel(path: path, reason: "the model has no graph; it is not a complete ONNX model")
        }
        var opset: Int?
        for index in 0..<model.n_opset_import {
            guard let entry = model.opset_import[index]?.pointee else { continue }
            let domain = entry.domain.map { String(cString: $0) } ?? ""
            if domain.isEmpty || domain == "ai.onnx" { opset = Int(entry.version) }
        }
        guard let opset else {
            throw .incompleteModel(path: path, reason: "the model declares no opset for the default ONNX domain in opset_import")
        }
        guard supportedOpsets.contains(opset) else { throw .unsupportedOpset(path: path, version: opset) }

        let nodes = (0..<graph.n_node).compactMap { graph.node[$0]?.pointee }
        try checkOperatorsSupported(nodes, path: path)

        var builder = GraphBuilder(path: path, opset: opset,
                                   decoder: TensorDecoder(path: path, directory: URL(fileURLWithPath: path).deletingLastPathComponent()))
        try builder.addInitializers(graph)
        for (name, tensor) in constantInputs { builder.constants[name] = Folded(tensor) }
        try builder.addInputs(graph)
        builder.countConsumers(nodes, graph: graph)
        for (index, node) in nodes.enumerated() { try builder.convert(node, index: index) }
        var result = try builder.finish(graph, model: model)
        if result.inputs.allSatisfy({ $0.dimensions != nil }) {
            do {
                _ = try result.inferShapes(inputShapes: result.inputShapes(batchSize: 1))
            } catch .unknownInputShape {
                // Inputs with several symbolic axes are checked when data arrives.
            } catch {
                throw .invalidGraph(path: path, reason: error.description)
            }
        }
        result.parameters.sort { builder.parameterOrder[$0.name, default: 0] < builder.parameterOrder[$1.name, default: 0] }
        return result
    }

    private static let unsupportedReasons: [String: String] = [
        "ConvTranspose": "transposed convolution is not implemented",
        "LSTM": "recurrent layers are not supported", "GRU": "recurrent layers are not supported",
        "RNN": "recurrent layers are not supported",
        "Resize": "resizing is not implemented", "Upsample": "resizing is not implemented",
        "LRN": "local response normalization is not implemented",
        "InstanceNormalization": "instance normalization is not implemented",
        "LayerNormalization": "layer normalization is not implemented",
        "QuantizeLinear": "quantized models are not supported", "DequantizeLinear": "quantized models are not supported",
        "QLinearConv": "quantized models are not supported",
        "If": "control flow is not supported", "Loop": "control flow is not supported", "Scan": "control flow is not supported",
    ]

    private static func checkOperatorsSupported(_ nodes: [Onnx__NodeProto], path: String) throws(ONNXError) {
        var unsupported: [String: UnsupportedOperator] = [:]
        var order: [String] = []
        for (index, node) in nodes.enumerated() {
            let opType = node.op_type.map { String(cString: $0) } ?? ""
            let domain = node.domain.map { String(cString: $0) } ?? ""
            let name = node.name.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "\(opType)_\(index)"
            var key = opType
            var reason: String?
            if !(domain.isEmpty || domain == "ai.onnx") {
                key = "\(domain).\(opType)"
                reason = "operator domain '\(domain)' is not supported"
            } else if !supportedOperators.contains(opType) {
                reason = unsupportedReasons[opType] ?? "not implemented"
            }
            guard let reason else { continue }
            if unsupported[key] == nil {
                order.append(key)
                unsupported[key] = UnsupportedOperator(opType: key, nodes: [], reason: reason)
            }
            unsupported[key]?.nodes.append(name)
        }
        if !order.isEmpty {
            throw .unsupportedOperators(path: path, operators: order.compactMap { unsupported[$0] })
        }
    }
}

/// A constant known at import: an initializer, a Constant node, or a folded shape computation.
/// Shape-derived integers carry their value at batch 1 and at batch 2, so that entries that follow
/// the batch size can be told apart from fixed ones.
struct Folded {
    var shape: [Int]
    var elementType: String
    var floats: [Float]?
    var integers: [Int]?
    var integersAtBatch2: [Int]?

    init(shape: [Int], floats: [Float]) {
        self.shape = shape
        self.elementType = "FLOAT"
        self.floats = floats
    }

    init(shape: [Int], integers: [Int], atBatch2: [Int]? = nil) {
        self.shape = shape
        self.elementType = "INT64"
        self.integers = integers
        self.integersAtBatch2 = atBatch2 == integers ? nil : atBatch2
    }

    init(_ tensor: ONNXTensor) {
        shape = tensor.shape
        elementType = tensor.elementType
        floats = tensor.floats
        integers = tensor.integers
    }

    var count: Int { shape.reduce(1, *) }

    /// Picks elements by source index into a new shape (gather, slice, reshape, ...).
    func remapped(shape newShape: [Int], from indices: [Int]) -> Folded {
        var result = self
        result.shape = newShape
        result.floats = floats.map { values in indices.map { values[$0] } }
        result.integers = integers.map { values in indices.map { values[$0] } }
        result.integersAtBatch2 = integersAtBatch2.map { values in indices.map { values[$0] } }
        return result
    }
}
