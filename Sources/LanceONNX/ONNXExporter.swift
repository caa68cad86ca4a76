import CONNXProto
import Foundation
import LanceCore
import LanceModel

/// Why a graph could not be exported to ONNX.
public enum ONNXExportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Nodes whose operator has no ONNX form (listed all at once).
    case unsupportedNodes(path: String, nodes: [(node: String, reason: String)])
    /// The output file cannot be written.
    case unwritableOutput(path: String, reason: String)

    public static func == (lhs: ONNXExportError, rhs: ONNXExportError) -> Bool { lhs.description == rhs.description }

    /// One sentence a user can act on.
    public var description: String {
        switch self {
        case .unsupportedNodes(let path, let nodes):
            "\(path): \(nodes.count) node\(nodes.count == 1 ? "" : "s") cannot be expressed in ONNX: "
                + nodes.prefix(5).map { "'\($0.node)' (\($0.reason))" }.joined(separator: ", ") + (nodes.count > 5 ? ", ..." : "")
        case .unwritableOutput(let path, let reason): "\(path): cannot write the file: \(reason)"
        }
    }
}

/// Writes a `Graph` as a standard ONNX model (protobuf-c encoder, the same schema as the importer).
///
/// Parameter names, node names, graph input and output names are preserved; the batch axis stays
/// symbolic; BatchNormalization stays BatchNormalization. Weights are initializers with
/// `raw_data` (little-endian float32). Hyperparameters that ONNX passes as tensors (Clip bounds,
/// Reshape shape, Pad pads, Squeeze/Unsqueeze axes) become initializers named `<node>/<role>`.
/// The opset is 13, or 14 when the graph needs HardSwish or Reshape's `allowzero`.
public enum ONNXExporter {
    /// The serialized model.
    ///
    /// - Throws: `ONNXExportError.unsupportedNodes` listing every node without an ONNX form,
    ///   before anything is produced.
    public static func serialize(_ graph: Graph, path: String = "model.onnx") throws(ONNXExportError) -> [UInt8] {
        let unsupported = graph.nodes.compactMap { node -> (node: String, reason: String)? in
            reasonUnsupported(node.operation).map { (node.name, $0) }
        }
        if !unsupported.isEmpty { throw .unsupportedNodes(path: path, nodes: unsupported) }
        let arena = CArena()
        var model = Onnx__ModelProto()
        onnx__model_proto__init(&model)
        model.has_ir_version = 1
        model.ir_version = 8
        model.producer_name = arena.string("LANCE")
        model.producer_version = arena.string(graph.provenance.producer)
        let opset = needsOpset14(graph) ? 14 : 13
        var opsetEntry = Onnx__OperatorSetIdProto()
        onnx__operator_set_id_proto__init(&opsetEntry)
        opsetEntry.domain = arena.string("")
        opsetEntry.has_version = 1
        opsetEntry.version = Int64(opset)
        model.n_opset_import = 1
        model.opset_import = arena.pointers([arena.object(opsetEntry)])

        var graphProto = Onnx__GraphProto()
        onnx__graph_proto__init(&graphProto)
        graphProto.name = arena.string(graph.name.isEmpty ? "lance" : graph.name)
        var initializers: [UnsafeMutablePointer<Onnx__TensorProto>?] = graph.parameters.map { arena.object(floatTensor($0.name, $0.tensor, arena)) }
        var nodes: [UnsafeMutablePointer<Onnx__NodeProto>?] = []
        for node in graph.nodes {
            let (proto, constants) = nodeProto(node, arena: arena)
            nodes.append(arena.object(proto))
            initializers += constants
        }
        graphProto.n_node = nodes.count
        graphProto.node = arena.pointers(nodes)
        graphProto.n_initializer = initializers.count
        graphProto.initializer = arena.pointers(initializers)
        let inputs = graph.inputs.map { arena.object(valueInfo($0, arena)) }
        graphProto.n_input = inputs.count
        graphProto.input = arena.pointers(inputs)
        let outputs = outputInfos(graph).map { arena.object(valueInfo($0, arena)) }
        graphProto.n_output = outputs.count
        graphProto.output = arena.pointers(outputs)
        model.graph = arena.object(graphProto)

        let size = onnx__model_proto__get_packed_size(&model)
        var bytes = [UInt8](repeating: 0, count: size)
        _ = bytes.withUnsafeMutableBufferPointer { onnx__model_proto__pack(&model, $0.baseAddress) }
        return bytes
    }

    /// Writes the model to `path` atomically (a temporary file in the same folder, then a rename).
    public static func write(_ graph: Graph, to path: String) throws(ONNXExportError) {
        let bytes = try serialize(graph, path: path)
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do {
            try Data(bytes).write(to: temporary)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw .unwritableOutput(path: path, reason: error.localizedDescription)
        }
        guard rename(temporary.path, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw .unwritableOutput(path: path, reason: reason)
        }
    }

    /// Output descriptions with shapes: declared ones, or inferred (axes that follow the batch
    /// size become the symbolic `N`).
    static func outputInfos(_ graph: Graph) -> [ValueInfo] {
        let one = (try? graph.inputShapes(batchSize: 1)).flatMap { try? graph.inferShapes(inputShapes: $0) }
        let two = (try? graph.inputShapes(batchSize: 2)).flatMap { try? graph.inferShapes(inputShapes: $0) }
        return graph.outputs.map { output in
            guard output.dimensions == nil, let first = one?[output.name], let second = two?[output.name], first.count == second.count else {
                return output
            }
            return ValueInfo(name: output.name, dimensions: zip(first, second).map { $0 == $1 ? .fixed($0) : .symbolic("N") })
        }
    }

    static func reasonUnsupported(_ operation: Operator) -> String? {
        switch operation {
        case .activation(.thresholdedReLU): return "Keras ReLU with a threshold has no ONNX operator"
        case .softmax(_, true): return "opset < 13 Softmax coercion"
        case .averagePool(let pooling, _) where pooling.window.dilations != [1, 1]: return "dilated AveragePool needs opset 19"
        default: return nil
        }
    }

    static func needsOpset14(_ graph: Graph) -> Bool {
        graph.nodes.contains { node in
            switch node.operation {
            case .activation(.hardSwish): return true
            case .reshape(_, true): return true
            default: return false
            }
        }
    }

    // MARK: - Messages

    static func floatTensor(_ name: String, _ tensor: Tensor, _ arena: CArena) -> Onnx__TensorProto {
        var proto = Onnx__TensorProto()
        onnx__tensor_proto__init(&proto)
        proto.name = arena.string(name)
        proto.has_data_type = 1
        proto.data_type = 1
        proto.n_dims = tensor.rank
        proto.dims = arena.array(tensor.shape.map { Int64($0) })
        proto.has_raw_data = 1
        let bytes = tensor.withUnsafeBufferPointer { buffer in
            buffer.flatMap { value -> [UInt8] in
                let bits = value.bitPattern.littleEndian
                return [UInt8(bits & 0xff), UInt8((bits >> 8) & 0xff), UInt8((bits >> 16) & 0xff), UInt8(bits >> 24)]
            }
        }
        proto.raw_data = ProtobufCBinaryData(len: bytes.count, data: arena.array(bytes))
        return proto
    }

    static func integerTensor(_ name: String, _ values: [Int], _ arena: CArena) -> Onnx__TensorProto {
        var proto = Onnx__TensorProto()
        onnx__tensor_proto__init(&proto)
        proto.name = arena.string(name)
        proto.has_data_type = 1
        proto.data_type = 7
        proto.n_dims = 1
        proto.dims = arena.array([Int64(values.count)])
        proto.n_int64_data = values.count
        proto.int64_data = arena.array(values.map { Int64($0) })
        return proto
    }

    static func valueInfo(_ info: ValueInfo, _ arena: CArena) -> Onnx__ValueInfoProto {
        var proto = Onnx__ValueInfoProto()
        onnx__value_info_proto__init(&proto)
        proto.name = arena.string(info.name)
        var tensorType = Onnx__TypeProto__Tensor()
        onnx__type_proto__tensor__init(&tensorType)
        tensorType.has_elem_type = 1
        tensorType.elem_type = 1
        if let dimensions = info.dimensions {
            var shape = Onnx__TensorShapeProto()
            onnx__tensor_shape_proto__init(&shape)
            let dims = dimensions.map { dimension -> UnsafeMutablePointer<Onnx__TensorShapeProto__Dimension>? in
                var proto = Onnx__TensorShapeProto__Dimension()
                onnx__tensor_shape_proto__dimension__init(&proto)
                switch dimension {
                case .fixed(let extent):
                    proto.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                    proto.dim_value = Int64(extent)
                case .symbolic(let name):
                    proto.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                    proto.dim_param = arena.string(name.isEmpty ? "N" : name)
                }
                return arena.object(proto)
            }
            shape.n_dim = dims.count
            shape.dim = arena.pointers(dims)
            tensorType.shape = arena.object(shape)
        }
        var type = Onnx__TypeProto()
        onnx__type_proto__init(&type)
        type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
        type.tensor_type = arena.object(tensorType)
        proto.type = arena.object(type)
        return proto
    }

    /// One node and the constant initializers its hyperparameter inputs need.
    static func nodeProto(_ node: Node, arena: CArena) -> (Onnx__NodeProto, [UnsafeMutablePointer<Onnx__TensorProto>?]) {
        var attributes: [UnsafeMutablePointer<Onnx__AttributeProto>?] = []
        var constants: [UnsafeMutablePointer<Onnx__TensorProto>?] = []
        var inputs = node.inputs
        func attribute(_ name: String, int value: Int) {
            var proto = Onnx__AttributeProto()
            onnx__attribute_proto__init(&proto)
            proto.name = arena.string(name)
            proto.has_type = 1
            proto.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT
            proto.has_i = 1
            proto.i = Int64(value)
            attributes.append(arena.object(proto))
        }
        func attribute(_ name: String, float value: Float) {
            var proto = Onnx__AttributeProto()
            onnx__attribute_proto__init(&proto)
            proto.name = arena.string(name)
            proto.has_type = 1
            proto.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT
            proto.has_f = 1
            proto.f = value
            attributes.append(arena.object(proto))
        }
        func attribute(_ name: String, ints values: [Int]) {
            var proto = Onnx__AttributeProto()
            onnx__attribute_proto__init(&proto)
            proto.name = arena.string(name)
            proto.has_type = 1
            proto.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
            proto.n_ints = values.count
            proto.ints = arena.array(values.map { Int64($0) })
            attributes.append(arena.object(proto))
        }
        func attribute(_ name: String, string value: String) {
            var proto = Onnx__AttributeProto()
            onnx__attribute_proto__init(&proto)
            proto.name = arena.string(name)
            proto.has_type = 1
            proto.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING
            proto.has_s = 1
            let bytes = Array(value.utf8)
            proto.s = ProtobufCBinaryData(len: bytes.count, data: arena.array(bytes))
            attributes.append(arena.object(proto))
        }
        func constantInput(_ role: String, integers values: [Int]) -> String {
            let name = "\(node.name)/\(role)"
            constants.append(arena.object(integerTensor(name, values, arena)))
            return name
        }
        func constantInput(_ role: String, float value: Float) -> String {
            let name = "\(node.name)/\(role)"
            constants.append(arena.object(floatTensor(name, Tensor(scalar: value), arena)))
            return name
        }
        func window(_ geometry: WindowGeometry) {
            attribute("kernel_shape", ints: geometry.kernelSize)
            attribute("strides", ints: geometry.strides)
            switch geometry.padding {
            case .explicit(let top, let left, let bottom, let right): attribute("pads", ints: [top, left, bottom, right])
            case .sameUpper: attribute("auto_pad", string: "SAME_UPPER")
            case .sameLower: attribute("auto_pad", string: "SAME_LOWER")
            }
        }
        let opType: String = node.operation.opType
        switch node.operation {
        case .convolution(let convolution):
            window(convolution.window)
            attribute("dilations", ints: convolution.window.dilations)
            attribute("group", int: convolution.groups)
        case .batchNormalization(let epsilon):
            attribute("epsilon", float: epsilon)
        case .activation(let activation):
            switch activation {
            case .clip(let minimum, let maximum):
                inputs.append(minimum.isFinite ? constantInput("min", float: minimum) : "")
                if maximum.isFinite { inputs.append(constantInput("max", float: maximum)) }
            case .leakyRelu(let alpha): attribute("alpha", float: alpha)
            case .hardSigmoid(let alpha, let beta):
                attribute("alpha", float: alpha)
                attribute("beta", float: beta)
            default: break
            }
        case .concat(let axis):
            attribute("axis", int: axis)
        case .maxPool(let pooling):
            window(pooling.window)
            attribute("dilations", ints: pooling.window.dilations)
            attribute("ceil_mode", int: pooling.ceilMode ? 1 : 0)
        case .averagePool(let pooling, let countIncludePad):
            window(pooling.window)
            attribute("ceil_mode", int: pooling.ceilMode ? 1 : 0)
            attribute("count_include_pad", int: countIncludePad ? 1 : 0)
        case .flatten(let axis):
            attribute("axis", int: axis)
        case .reshape(let shape, let allowZero):
            inputs.append(constantInput("shape", integers: shape))
            if allowZero { attribute("allowzero", int: 1) }
        case .transpose(let permutation):
            if let permutation { attribute("perm", ints: permutation) }
        case .gemm(let gemm):
            attribute("alpha", float: gemm.alpha)
            attribute("beta", float: gemm.beta)
            attribute("transA", int: gemm.transposeA ? 1 : 0)
            attribute("transB", int: gemm.transposeB ? 1 : 0)
        case .softmax(let axis, _):
            attribute("axis", int: axis)
        case .pad(let pads, let mode, let value):
            attribute("mode", string: mode.rawValue)
            inputs.append(constantInput("pads", integers: pads))
            inputs.append(constantInput("value", float: value))
        case .squeeze(let axes):
            if let axes { inputs.append(constantInput("axes", integers: axes)) }
        case .unsqueeze(let axes):
            inputs.append(constantInput("axes", integers: axes))
        case .reduceMean(let axes, let keepDimensions):
            if let axes { attribute("axes", ints: axes) }
            attribute("keepdims", int: keepDimensions ? 1 : 0)
        case .binary, .globalAveragePool, .globalMaxPool, .matMul, .identity:
            break
        }
        var proto = Onnx__NodeProto()
        onnx__node_proto__init(&proto)
        proto.name = arena.string(node.name)
        proto.op_type = arena.string(opType)
        proto.n_input = inputs.count
        proto.input = arena.pointers(inputs.map { arena.string($0) })
        proto.n_output = 1
        proto.output = arena.pointers([arena.string(node.output)])
        proto.n_attribute = attributes.count
        proto.attribute = arena.pointers(attributes)
        return (proto, constants)
    }
}

/// C memory for one message tree, freed together when the arena goes away.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { allocations.forEach { free($0) } }

    func string(_ text: String) -> UnsafeMutablePointer<CChar> {
        let pointer = strdup(text)!
        allocations.append(UnsafeMutableRawPointer(pointer))
        return pointer
    }

    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T> {
        let pointer = UnsafeMutablePointer<T>(OpaquePointer(malloc(max(1, values.count) * MemoryLayout<T>.stride)!))
        allocations.append(UnsafeMutableRawPointer(pointer))
        if !values.isEmpty { pointer.initialize(from: values, count: values.count) }
        return pointer
    }

    func pointers<T>(_ values: [UnsafeMutablePointer<T>?]) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?> {
        array(values)
    }

    func object<T>(_ value: T) -> UnsafeMutablePointer<T> {
        array([value])
    }
}
