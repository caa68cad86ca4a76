/// One row of a model's layer table.
public struct LayerSummary: Sendable, Equatable {
    /// The node's name.
    public var name: String
    /// The ONNX operator type.
    public var opType: String
    /// The output shape at the summary's batch size.
    public var outputShape: [Int]
    /// Number of parameter elements this node reads first (shared parameters count once).
    public var parameterCount: Int
    /// Multiply-accumulates of one forward pass at the summary's batch size
    /// (convolution `N·M·H'·W'·(C/groups)·kH·kW`, Gemm/MatMul `M·N·K` per batch; others 0).
    public var multiplyAccumulates: Int
}

/// The layer table and totals of a graph at one batch size.
public struct GraphSummary: Sendable, Equatable {
    /// The batch size the shapes and MACs are computed for.
    public var batchSize: Int
    /// One row per node, in execution order.
    public var layers: [LayerSummary]
    /// All parameter elements (synthesized constants excluded).
    public var parameterCount: Int
    /// Parameter elements marked trainable.
    public var trainableParameterCount: Int
    /// Sum of the layers' multiply-accumulates.
    public var multiplyAccumulates: Int
    /// Shapes of the graph outputs.
    public var outputShapes: [String: [Int]]
}

extension Graph {
    /// Computes the layer table: shapes by inference at `batchSize`, parameters and MACs per node.
    public func summary(batchSize: Int = 1) throws(ModelError) -> GraphSummary {
        let shapes = try inferShapes(inputShapes: inputShapes(batchSize: batchSize))
        let parameters = parametersByName
        var counted = Set<String>()
        var layers: [LayerSummary] = []
        for node in nodes {
            var parameterCount = 0
            for input in node.inputs where parameters[input].map({ !$0.synthesized }) == true && !counted.contains(input) {
                counted.insert(input)
                parameterCount += parameters[input]?.tensor.count ?? 0
            }
            let inputShapes = node.inputs.map { shapes[$0] ?? [] }
            let output = shapes[node.output] ?? []
            layers.append(LayerSummary(name: node.name, opType: node.operation.opType, outputShape: output,
                                       parameterCount: parameterCount,
                                       multiplyAccumulates: Self.multiplyAccumulates(node.operation, inputs: inputShapes, output: output)))
        }
        return GraphSummary(
            batchSize: batchSize, layers: layers,
            parameterCount: self.parameters.filter { !$0.synthesized }.reduce(0) { $0 + $1.tensor.count },
            trainableParameterCount: self.parameters.filter(\.trainable).reduce(0) { $0 + $1.tensor.count },
            multiplyAccumulates: layers.reduce(0) { $0 + $1.multiplyAccumulates },
            outputShapes: Dictionary(outputs.map { ($0.name, shapes[$0.name] ?? []) }, uniquingKeysWith: { a, _ in a }))
    }

    static func multiplyAccumulates(_ operation: Operator, inputs: [[Int]], output: [Int]) -> Int {
        switch operation {
        case .convolution:
            let weight = inputs[1]
            return output.reduce(1, *) * weight[1] * weight[2] * weight[3]
        case .gemm(let gemm):
            let k = gemm.transposeA ? inputs[0][0] : inputs[0][1]
            return output.reduce(1, *) * k
        case .matMul:
            let k = inputs[0].last ?? 1
            return output.reduce(1, *) * k
        default:
            return 0
        }
    }
}
