import LanceCore
import LanceModel

/// The names of the parameters of a head made by `replaceHead`.
public enum ReplacedHead {
    /// The new weight, `[classes, features]` (Gemm with `transposeB`, PyTorch's Linear layout).
    public static let weightName = "lance_head.weight"
    /// The new bias, `[classes]`.
    public static let biasName = "lance_head.bias"
}

/// Swaps the classifier head — the last linear layer (`Graph.trainedLayers`' head: the last Gemm or
/// MatMul with a weight parameter) — for a new one with `classes` outputs, initialised as
/// PyTorch's `nn.Linear`: `kaiming_uniform_(a = √5)` for the weight, which is `U(−1/√in, 1/√in)`,
/// and `U(−1/√in, 1/√in)` for the bias, from a seeded generator (SplitMix64; the values differ from
/// PyTorch's generator but follow the same distribution).
///
/// The head node keeps its name and output value and becomes `Gemm(transposeB: true)` over
/// `[X, lance_head.weight [classes, in], lance_head.bias [classes]]` (`ReplacedHead`), both
/// trainable. A bias `Add` right after a MatMul head (a parameter of the old class count) is
/// dropped (its output then comes from the head). Old head parameters nothing else reads are
/// removed; the last axis of a declared graph output of the old class count becomes `classes`.
///
/// - Throws: `TrainingError.invalidLayerSelection` when the graph has no linear head.
public func replaceHead(in graph: Graph, classes: Int, seed: UInt64) throws(TrainingError) -> Graph {
    precondition(classes > 0, "a head needs at least one class")
    let features = try headFeatures(of: graph)
    var generator = HeadInitialisationGenerator(seed: seed)
    let bound = 1 / Float(features).squareRoot()
    let weight = Tensor(shape: [classes, features],
                        scalars: (0..<(classes * features)).map { _ in generator.uniform(-bound, bound) })
    let bias = Tensor(shape: [classes], scalars: (0..<classes).map { _ in generator.uniform(-bound, bound) })
    return try installHead(in: graph, weight: weight, bias: bias)
}

/// The number of input features of a graph's classifier head.
///
/// - Throws: `TrainingError.invalidLayerSelection` when the graph has no linear head.
public func headFeatures(of graph: Graph) throws(TrainingError) -> Int {
    let (_, node) = try headNode(of: graph)
    guard let weight = graph.parametersByName[node.inputs[1]]?.tensor, weight.rank == 2 else {
        throw .invalidLayerSelection(reason: "the head '\(node.name)' has no 2-D weight parameter")
    }
    if case .gemm(let gemm) = node.operation, gemm.transposeB { return weight.shape[1] }
    return weight.shape[0]
}

private func headNode(of graph: Graph) throws(TrainingError) -> (index: Int, node: Node) {
    guard let head = try graph.trainedLayers(.last(0)).first(where: \.isHead),
          let index = graph.nodes.firstIndex(where: { $0.name == head.node }) else {
        throw .invalidLayerSelection(reason: "the model has no linear classifier head to replace")
    }
    return (index, graph.nodes[index])
}

/// Swaps the classifier head for given weights (as `replaceHead`, which draws them at random):
/// the head node becomes `Gemm(transposeB: true)` over `[X, lance_head.weight, lance_head.bias]`.
///
/// - Parameters:
///   - weight: `[classes, features]`.
///   - bias: `[classes]`.
/// - Throws: `TrainingError.invalidLayerSelection` when the graph has no linear head or the
///   weight does not take the head's input features.
public func installHead(in graph: Graph, weight: Tensor, bias: Tensor) throws(TrainingError) -> Graph {
    let (index, node) = try headNode(of: graph)
    let features = try headFeatures(of: graph)
    guard weight.rank == 2, weight.shape[1] == features, bias.shape == [weight.shape[0]] else {
        throw .invalidLayerSelection(reason: "a head of weight \(weight.shape) and bias \(bias.shape) does not fit the \(features) features of '\(node.name)'")
    }
    let classes = weight.shape[0]
    let oldWeight = graph.parametersByName[node.inputs[1]]!.tensor
    let oldClasses: Int
    if case .gemm(let gemm) = node.operation, gemm.transposeB { oldClasses = oldWeight.shape[0] } else { oldClasses = oldWeight.shape[1] }
    var result = graph
    var newNode = node
    newNode.operation = .gemm(Gemm(alpha: 1, beta: 1, transposeA: false, transposeB: true))
    newNode.inputs = [node.inputs[0], ReplacedHead.weightName, ReplacedHead.biasName]
    var nodes = graph.nodes
    nodes[index] = newNode
    // A MatMul head's bias Add.
    if case .matMul = node.operation, index + 1 < nodes.count, case .binary(.add) = nodes[index + 1].operation,
       nodes[index + 1].inputs.contains(node.output),
       let other = nodes[index + 1].inputs.first(where: { $0 != node.output }),
       let biasParameter = graph.parametersByName[other], biasParameter.tensor.count == oldClasses,
       !graph.nodes.enumerated().contains(where: { $0.offset != index + 1 && $0.element.inputs.contains(node.output) }) {
        nodes[index].output = nodes[index + 1].output
        nodes.remove(at: index + 1)
    }
    result.nodes = nodes
    let stillRead = Set(nodes.flatMap(\.inputs))
    result.parameters.removeAll { !stillRead.contains($0.name) || $0.name == ReplacedHead.weightName || $0.name == ReplacedHead.biasName }
    result.parameters.append(Parameter(name: ReplacedHead.weightName, tensor: weight, trainable: true))
    result.parameters.append(Parameter(name: ReplacedHead.biasName, tensor: bias, trainable: true))
    for (position, output) in result.outputs.enumerated() {
        guard var dimensions = output.dimensions, let last = dimensions.last, last == .fixed(oldClasses) else { continue }
        dimensions[dimensions.count - 1] = .fixed(classes)
        result.outputs[position].dimensions = dimensions
    }
    return result
}

/// SplitMix64 with uniform floats, for reproducible initialisation.
struct HeadInitialisationGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in `[low, high)` from the top 24 bits.
    mutating func uniform(_ low: Float, _ high: Float) -> Float {
        let unit = Float(next() >> 40) / Float(1 << 24)
        return low + (high - low) * unit
    }
}
