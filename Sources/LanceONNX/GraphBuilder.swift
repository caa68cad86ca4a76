import CONNXProto
import Foundation
import LanceCore
import LanceModel

/// The state of one import: constants, runtime values with their shapes at batch 1 and 2, the
/// nodes and parameters produced so far.
struct GraphBuilder {
    let path: String
    let opset: Int
    let decoder: TensorDecoder

    var constants: [String: Folded] = [:]
    /// Runtime (float) values; the shapes are `nil` when the source declared none.
    var runtime: [String: (batch1: [Int], batch2: [Int])?] = [:]
    var inputs: [ValueInfo] = []
    var nodes: [Node] = []
    var parameters: [String: Parameter] = [:]
    var parameterOrder: [String: Int] = [:]
    var consumers: [String: Int] = [:]
    var nodeNames = Set<String>()

    init(path: String, opset: Int, decoder: TensorDecoder) {
        self.path = path
        self.opset = opset
        self.decoder = decoder
    }

    // MARK: - Graph inputs and initializers

    mutating func addInitializers(_ graph: Onnx__GraphProto) throws(ONNXError) {
        for index in 0..<graph.n_initializer {
            guard let proto = graph.initializer[index] else { continue }
            let tensor = try decoder.decode(proto, fallbackName: "initializer_\(index)")
            constants[tensor.name] = Folded(tensor)
        }
    }

    mutating func addInputs(_ graph: Onnx__GraphProto) throws(ONNXError) {
        for index in 0..<graph.n_input {
            guard let info = graph.input[index]?.pointee else { continue }
            let name = info.name.map { String(cString: $0) } ?? ""
            guard !name.isEmpty else { throw .invalidGraph(path: path, reason: "graph input \(index) has no name") }
            if constants[name] != nil { continue }  // an initializer's default value
            let (elementType, dimensions) = Self.typeAndShape(info)
            if let elementType, elementType != 1 {
                throw .invalidTensor(path: path, tensor: name, reason: "graph input of type \(ElementType.name(of: elementType)) is not supported; LANCE computes in float32")
            }
            inputs.append(ValueInfo(name: name, dimensions: dimensions))
            if let dimensions {
                func concrete(_ batch: Int) -> [Int] {
                    dimensions.map { if case .fixed(let extent) = $0 { extent } else { batch } }
                }
                runtime[name] = (concrete(1), concrete(2))
            } else {
                runtime[name] = .some(nil)
            }
        }
    }

    static func typeAndShape(_ info: Onnx__ValueInfoProto) -> (Int32?, [ShapeDimension]?) {
        guard let type = info.type?.pointee, type.value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE,
              let tensorType = type.tensor_type?.pointee else { return (nil, nil) }
        let elementType = tensorType.has_elem_type != 0 ? tensorType.elem_type : nil
        guard let shape = tensorType.shape?.pointee else { return (elementType, nil) }
        let dimensions = (0..<shape.n_dim).map { index -> ShapeDimension in
            guard let dimension = shape.dim[index]?.pointee else { return .symbolic("") }
            switch dimension.value_case {
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE: return .fixed(Int(dimension.dim_value))
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM:
                return .symbolic(dimension.dim_param.map { String(cString: $0) } ?? "")
            default: return .symbolic("")
            }
        }
        return (elementType, dimensions)
    }

    mutating func countConsumers(_ nodes: [Onnx__NodeProto], graph: Onnx__GraphProto) {
        for node in nodes {
            for index in 0..<node.n_input { if let name = node.input[index] { consumers[String(cString: name), default: 0] += 1 } }
        }
        for index in 0..<graph.n_output {
            if let name = graph.output[index]?.pointee.name { consumers[String(cString: name), default: 0] += 1 }
        }
    }

    // MARK: - Nodes

    mutating func convert(_ proto: Onnx__NodeProto, index: Int) throws(ONNXError) {
        let opType = proto.op_type.map { String(cString: $0) } ?? ""
        var name = proto.name.map { String(cString: $0) } ?? ""
        if name.isEmpty { name = "\(opType)_\(index)" }
        while nodeNames.contains(name) { name += "_\(index)" }
        nodeNames.insert(name)
        let inputs = (0..<proto.n_input).map { proto.input[$0].map { String(cString: $0) } ?? "" }
        let outputs = (0..<proto.n_output).map { proto.output[$0].map { String(cString: $0) } ?? "" }
        let nodeName = name
        let path = self.path
        let fail: (String) -> ONNXError = { .invalidNode(path: path, node: nodeName, opType: opType, reason: $0) }
        let attributes = try Attributes(proto, decoder: decoder, fail: fail)
        var context = NodeContext(name: name, opType: opType, inputs: inputs, outputs: outputs, attributes: attributes, fail: fail)
        guard let output = outputs.first, !output.isEmpty else { throw fail("the node has no output") }
        for extra in outputs.dropFirst() where !extra.isEmpty && consumers[extra, default: 0] > 0 {
            throw fail("its output '\(extra)' is used, but LANCE computes only the first output of \(opType) (inference form)")
        }
        try translate(&context)
    }

    /// The nodes' shared accessors: a data input, a constant input, an attribute.
    struct NodeContext {
        let name: String
        let opType: String
        let inputs: [String]
        let outputs: [String]
        let attributes: Attributes
        let fail: (String) -> ONNXError

        var output: String { outputs[0] }

        func input(_ index: Int) -> String? {
            index < inputs.count && !inputs[index].isEmpty ? inputs[index] : nil
        }
    }

    /// The name of a float value to read at run time; constants become parameters.
    mutating func data(_ name: String?, _ context: NodeContext, trainable: Bool = false) throws(ONNXError) -> String {
        guard let name else { throw context.fail("a required input is missing") }
        if runtime[name] != nil { return name }
        guard let constant = constants[name] else {
            throw context.fail("input '\(name)' is not defined by any graph input, initializer or earlier node")
        }
        guard let floats = constant.floats else {
            throw .invalidTensor(path: path, tensor: name, reason: "is of type \(constant.elementType) but is used as data of node '\(context.name)' (\(context.opType)); LANCE computes in float32")
        }
        if var existing = parameters[name] {
            existing.trainable = existing.trainable || trainable
            parameters[name] = existing
        } else {
            parameters[name] = Parameter(name: name, tensor: Tensor(shape: constant.shape, scalars: floats), trainable: trainable)
            parameterOrder[name] = parameterOrder.count
        }
        return name
    }

    /// A constant input (folded into the operation); `nil` when the optional input is absent.
    func constant(_ index: Int, _ context: NodeContext) throws(ONNXError) -> Folded? {
        guard let name = context.input(index) else { return nil }
        if let constant = constants[name] { return constant }
        if runtime[name] != nil {
            throw .nonConstantInput(path: path, node: context.name, opType: context.opType, input: name)
        }
        throw context.fail("input '\(name)' is not defined by any graph input, initializer or earlier node")
    }

    func integers(_ index: Int, _ context: NodeContext) throws(ONNXError) -> [Int]? {
        guard let constant = try constant(index, context) else { return nil }
        guard let values = constant.integers else { throw context.fail("input '\(context.inputs[index])' must be an integer tensor") }
        guard constant.integersAtBatch2 == nil else {
            throw context.fail("input '\(context.inputs[index])' depends on the batch size, which LANCE keeps symbolic here")
        }
        return values
    }

    func scalar(_ index: Int, _ context: NodeContext) throws(ONNXError) -> Float? {
        guard let constant = try constant(index, context) else { return nil }
        guard constant.count == 1 else { throw context.fail("input '\(context.inputs[index])' must be a scalar") }
        if let floats = constant.floats { return floats[0] }
        if let integers = constant.integers { return Float(integers[0]) }
        throw context.fail("input '\(context.inputs[index])' has unusable type \(constant.elementType)")
    }

    /// Appends a node, inferring its output shapes at batch 1 and 2 when the inputs' are known.
    mutating func append(_ operation: Operator, inputs: [String], _ context: NodeContext) throws(ONNXError) {
        nodes.append(Node(name: context.name, operation: operation, inputs: inputs, output: context.output))
        var shapes1: [[Int]] = [], shapes2: [[Int]] = []
        var known = true
        for input in inputs {
            if let parameter = parameters[input] {
                shapes1.append(parameter.tensor.shape)
                shapes2.append(parameter.tensor.shape)
            } else if let shape = runtime[input] ?? nil {
                shapes1.append(shape.batch1)
                shapes2.append(shape.batch2)
            } else {
                known = false
            }
        }
        guard known else {
            runtime[context.output] = .some(nil)
            return
        }
        do {
            runtime[context.output] = (try operation.outputShape(inputs: shapes1), try operation.outputShape(inputs: shapes2))
        } catch {
            throw context.fail(error.reason)
        }
    }

    func allConstant(_ context: NodeContext) -> Bool {
        !context.inputs.filter { !$0.isEmpty }.isEmpty
            && context.inputs.filter { !$0.isEmpty }.allSatisfy { constants[$0] != nil && runtime[$0] == nil }
    }

    // MARK: - Finish

    mutating func finish(_ graph: Onnx__GraphProto, model: Onnx__ModelProto) throws(ONNXError) -> Graph {
        var outputs: [ValueInfo] = []
        for index in 0..<graph.n_output {
            guard let info = graph.output[index]?.pointee else { continue }
            let name = info.name.map { String(cString: $0) } ?? ""
            guard runtime[name] != nil else {
                if constants[name] != nil {
                    throw .invalidGraph(path: path, reason: "graph output '\(name)' is a constant; LANCE needs outputs computed from the inputs")
                }
                throw .invalidGraph(path: path, reason: "graph output '\(name)' is not produced by any node")
            }
            // Declared output shapes are informative only; the batch axis follows the input.
            outputs.append(ValueInfo(name: name, dimensions: Self.typeAndShape(info).1))
        }
        func text(_ pointer: UnsafeMutablePointer<CChar>?) -> String { pointer.map { String(cString: $0) } ?? "" }
        let producer = [text(model.producer_name), text(model.producer_version)].filter { !$0.isEmpty }.joined(separator: " ")
        var details: [(key: String, value: String)] = [("ir_version", "\(model.ir_version)")]
        if !text(model.domain).isEmpty { details.append(("domain", text(model.domain))) }
        return Graph(name: text(graph.name), inputs: inputs, outputs: outputs, nodes: nodes,
                     parameters: Array(parameters.values), provenance: Provenance(
                        sourceFormat: "onnx", producer: producer.isEmpty ? "unknown" : producer,
                        formatVersion: "opset \(opset)", details: details))
    }
}
