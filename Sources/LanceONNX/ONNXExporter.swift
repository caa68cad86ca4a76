import CONNXProto
import Foundation
import LanceCore
import LanceModel

/// How `ONNXExporter` writes a model.
public struct ONNXExportOptions: Sendable, Equatable {
    /// The opsets LANCE writes (the importer reads 7 to 21).
    public static let supportedOpsets = 11...21
    /// Protobuf messages are limited to 2 GiB; past this many bytes of weights the tensor data
    /// goes to a side file.
    public static let defaultExternalDataThreshold = 2_000_000_000

    /// Fold every BatchNormalization that directly follows a Conv or Gemm (and is its only
    /// reader) into that node's weights and bias. Off by default: BatchNormalization stays.
    public var foldBatchNormalization: Bool
    /// The opset to write; `nil` picks the lowest opset from 13 on that expresses every node.
    public var opset: Int?
    /// When the weights take more than this many bytes, every weight is written to
    /// `<model file>.data` (`location`, `offset`, `length`) instead of into the model.
    public var externalDataThreshold: Int

    /// Creates export options.
    public init(foldBatchNormalization: Bool = false, opset: Int? = nil,
                externalDataThreshold: Int = ONNXExportOptions.defaultExternalDataThreshold) {
        self.foldBatchNormalization = foldBatchNormalization
        self.opset = opset
        self.externalDataThreshold = externalDataThreshold
    }
}

/// A serialized ONNX model, ready to be written.
public struct ONNXExport: Sendable {
    /// The `ModelProto` bytes.
    public var model: [UInt8]
    /// The tensor data of the side file, when the weights are stored externally.
    public var externalData: [UInt8]?
    /// The side file's name, relative to the model's folder (`<model file>.data`).
    public var externalDataLocation: String?
    /// The opset written.
    public var opset: Int
    /// The BatchNormalization nodes folded into the preceding Conv or Gemm.
    public var foldedBatchNormalizations: [String]
    /// The number of nodes written.
    public var nodeCount: Int
    /// The number of initializers written (weights and the constants of hyperparameter inputs).
    public var initializerCount: Int
}

/// Writes a `Graph` as a standard ONNX model (protobuf-c encoder, the same schema as the importer).
///
/// Parameter names, node names, graph input and output names are preserved; the batch axis stays
/// symbolic; BatchNormalization stays BatchNormalization unless `foldBatchNormalization` is set.
/// Weights are initializers with `raw_data` (little-endian float32), or external data past
/// `externalDataThreshold`. Hyperparameters that ONNX passes as tensors (Clip bounds, Reshape
/// shape, Pad pads, Squeeze/Unsqueeze axes, ReduceMean axes from opset 18) become initializers
/// named `<node>/<role>`. The opset is the requested one, or the lowest from 13 on that
/// expresses every node (14 for HardSwish or Reshape's `allowzero`, 19 for dilated AveragePool).
public enum ONNXExporter {
    /// The serialized model with every weight inside it.
    ///
    /// - Throws: `ONNXError.unexportableNodes` listing every node without an ONNX form,
    ///   before anything is produced.
    public static func serialize(_ graph: Graph, path: String = "model.onnx") throws(ONNXError) -> [UInt8] {
        try export(graph, options: ONNXExportOptions(externalDataThreshold: .max), path: path).model
    }

    /// The serialized model (and external data) for `options`, without writing anything.
    ///
    /// - Throws: `ONNXError.unexportableNodes` for nodes without an ONNX form;
    ///   `.unexportableOpset` when the requested opset (or any single opset) cannot express every
    ///   node, naming them.
    public static func export(_ graph: Graph, options: ONNXExportOptions, path: String = "model.onnx") throws(ONNXError) -> ONNXExport {
        let unsupported = graph.nodes.compactMap { node -> (node: String, reason: String)? in
            reasonUnsupported(node.operation).map { (node.name, $0) }
        }
        if !unsupported.isEmpty { throw .unexportableNodes(path: path, nodes: unsupported.map { NodeIssue(node: $0.node, reason: $0.reason) }) }
        var graph = graph
        var folded: [String] = []
        if options.foldBatchNormalization {
            (graph, folded) = BatchNormalizationFolding.fold(graph)
        }
        let opset = try chooseOpset(graph, requested: options.opset, path: path)
        let arena = CArena()
        var model = Onnx__ModelProto()
        onnx__model_proto__init(&model)
        model.has_ir_version = 1
        model.ir_version = irVersion(opset: opset)
        model.producer_name = arena.string("LANCE")
        model.producer_version = arena.string(graph.provenance.producer)
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
        let weightBytes = graph.parameters.reduce(0) { $0 + $1.tensor.count * 4 }
        let location = URL(fileURLWithPath: path).lastPathComponent + ".data"
        var externalData: [UInt8]? = weightBytes > options.externalDataThreshold ? [] : nil
        var initializers: [UnsafeMutablePointer<Onnx__TensorProto>?] = []
        for parameter in graph.parameters {
            if externalData != nil {
                initializers.append(arena.object(externalFloatTensor(parameter.name, parameter.tensor, location: location,
                                                                     data: &externalData!, arena)))
            } else {
                initializers.append(arena.object(floatTensor(parameter.name, parameter.tensor, arena)))
            }
        }
        var nodes: [UnsafeMutablePointer<Onnx__NodeProto>?] = []
        for node in graph.nodes {
            let (proto, constants) = nodeProto(node, opset: opset, arena: arena)
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
        return ONNXExport(model: bytes, externalData: externalData, externalDataLocation: externalData == nil ? nil : location,
                          opset: opset, foldedBatchNormalizations: folded, nodeCount: nodes.count, initializerCount: initializers.count)
    }

    /// Writes the model to `path` (and its external data to `<path>.data`) atomically: each file
    /// is written to a temporary file in the same folder, then renamed.
    @discardableResult
    public static func write(_ graph: Graph, to path: String, options: ONNXExportOptions = ONNXExportOptions()) throws(ONNXError) -> ONNXExport {
        let exported = try export(graph, options: options, path: path)
        try write(exported, to: path)
        return exported
    }

    /// Writes an exported model to `path` (and its external data next to it) atomically.
    public static func write(_ exported: ONNXExport, to path: String) throws(ONNXError) {
        if let data = exported.externalData, let location = exported.externalDataLocation {
            let dataPath = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(location).path
            try writeAtomically(data, to: dataPath)
        }
        try writeAtomically(exported.model, to: path)
    }

    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(ONNXError) {
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

    /// The IR version that goes with an opset (ONNX's version table: opset 18 → IR 8, 19–20 → 9,
    /// 21 → 10).
    static func irVersion(opset: Int) -> Int64 {
        switch opset {
        case ...18: 8
        case 19...20: 9
        default: 10
        }
    }

    /// The opsets a node can be written in, and why when that is narrower than all of them.
    static func opsetRange(_ node: Node, rank: Int?) -> (range: ClosedRange<Int>, reason: String)? {
        switch node.operation {
        case .activation(.hardSwish): return (14...Int.max, "HardSwish needs opset 14 or later")
        case .reshape(_, true): return (14...Int.max, "Reshape's allowzero needs opset 14 or later")
        case .averagePool(let pooling, _) where pooling.window.dilations != [1, 1]:
            return (19...Int.max, "a dilated AveragePool needs opset 19 or later")
        case .softmax(let axis, let coerced):
            // Before opset 13 Softmax flattens to 2-D at `axis`; both forms agree on the last axis.
            if let rank, axis == rank - 1 || axis == -1 { return nil }
            return coerced ? (Int.min...12, "Softmax coerced to 2-D needs an opset before 13")
                           : (13...Int.max, "Softmax along one axis needs opset 13 or later")
        default: return nil
        }
    }

    /// The requested opset after checking that it expresses every node, or the lowest from 13 on
    /// that does.
    static func chooseOpset(_ graph: Graph, requested: Int?, path: String) throws(ONNXError) -> Int {
        let supported = ONNXExportOptions.supportedOpsets
        if let requested, !supported.contains(requested) { throw .unexportableOpset(path: path, opset: requested, nodes: []) }
        let shapes = (try? graph.inputShapes(batchSize: 1)).flatMap { try? graph.inferShapes(inputShapes: $0) }
        let requirements = graph.nodes.compactMap { node in
            opsetRange(node, rank: node.inputs.first.flatMap { shapes?[$0]?.count }).map { (node: node.name, range: $0.range, reason: $0.reason) }
        }
        if let requested {
            let failing = requirements.filter { !$0.range.contains(requested) }
            if !failing.isEmpty { throw .unexportableOpset(path: path, opset: requested, nodes: failing.map { NodeIssue(node: $0.node, reason: $0.reason) }) }
            return requested
        }
        let lowest = requirements.map(\.range.lowerBound).max() ?? supported.lowerBound
        let highest = requirements.map(\.range.upperBound).min() ?? supported.upperBound
        let choice = max(lowest, min(13, highest), supported.lowerBound)
        guard choice <= highest, choice <= supported.upperBound else {
            throw .unexportableOpset(path: path, opset: nil, nodes: requirements.map { NodeIssue(node: $0.node, reason: $0.reason) })
        }
        return choice
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
        default: return nil
        }
    }

    // MARK: - Messages

    /// A float32 `TensorProto` with its name, type and dimensions, and no data yet.
    static func floatTensorHeader(_ name: String, _ tensor: Tensor, _ arena: CArena) -> Onnx__TensorProto {
        var proto = Onnx__TensorProto()
        onnx__tensor_proto__init(&proto)
        proto.name = arena.string(name)
        proto.has_data_type = 1
        proto.data_type = 1
        proto.n_dims = tensor.rank
        proto.dims = arena.array(tensor.shape.map { Int64($0) })
        return proto
    }

    static func floatTensor(_ name: String, _ tensor: Tensor, _ arena: CArena) -> Onnx__TensorProto {
        var proto = floatTensorHeader(name, tensor, arena)
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

    /// A float tensor whose data is appended to `data` (the side file) and referenced by
    /// `location`, `offset` and `length`. Tensors of 1 MiB and more start on a 64 KiB boundary so
    /// that runtimes can map them.
    static func externalFloatTensor(_ name: String, _ tensor: Tensor, location: String, data: inout [UInt8], _ arena: CArena) -> Onnx__TensorProto {
        var proto = floatTensorHeader(name, tensor, arena)
        let length = tensor.count * 4
        if length >= 1 << 20 { data += [UInt8](repeating: 0, count: (65_536 - data.count % 65_536) % 65_536) }
        let offset = data.count
        data.reserveCapacity(offset + length)
        tensor.withUnsafeBufferPointer { buffer in
            for value in buffer {
                let bits = value.bitPattern.littleEndian
                data += [UInt8(bits & 0xff), UInt8((bits >> 8) & 0xff), UInt8((bits >> 16) & 0xff), UInt8(bits >> 24)]
            }
        }
        let entries = [("location", location), ("offset", "\(offset)"), ("length", "\(length)")].map { key, value in
            var entry = Onnx__StringStringEntryProto()
            onnx__string_string_entry_proto__init(&entry)
            entry.key = arena.string(key)
            entry.value = arena.string(value)
            return Optional(arena.object(entry))
        }
        proto.n_external_data = entries.count
        proto.external_data = arena.pointers(entries)
        proto.has_data_location = 1
        proto.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL
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
    static func nodeProto(_ node: Node, opset: Int, arena: CArena) -> (Onnx__NodeProto, [UnsafeMutablePointer<Onnx__TensorProto>?]) {
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
            if pooling.window.dilations != [1, 1] { attribute("dilations", ints: pooling.window.dilations) }
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
            // Axes are an attribute before opset 13, an input from then on.
            if let axes { if opset < 13 { attribute("axes", ints: axes) } else { inputs.append(constantInput("axes", integers: axes)) } }
        case .unsqueeze(let axes):
            if opset < 13 { attribute("axes", ints: axes) } else { inputs.append(constantInput("axes", integers: axes)) }
        case .reduceMean(let axes, let keepDimensions):
            // Axes are an attribute before opset 18, an input from then on.
            if let axes { if opset < 18 { attribute("axes", ints: axes) } else { inputs.append(constantInput("axes", integers: axes)) } }
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
