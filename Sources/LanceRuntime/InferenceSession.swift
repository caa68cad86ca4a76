import LanceCore
import LanceModel
import LanceNN

/// Runs a graph's forward pass in float32.
///
/// The session checks input shapes against the graph (shape inference over every node) before any
/// computation, fuses an activation into the convolution, Gemm or batch normalization before it
/// when nothing else reads the intermediate value, and frees every intermediate tensor after its
/// last use. Any batch size is accepted where the graph's first input axis is symbolic.
public struct InferenceSession: Sendable {
    /// The graph being run.
    public let graph: Graph
    private let steps: [Step]
    private let parameters: [String: Tensor]
    /// For each value, the index of the last step that reads it (graph outputs: never freed).
    private let lastUse: [String: Int]
    /// How many samples run through the graph at once when a larger batch is given, or `nil` when
    /// the graph mixes samples (then the whole batch runs at once).
    public let microBatchSize: Int?

    /// The largest intermediate tensor a micro-batch may produce. Tensors of this size are
    /// recycled by the allocator instead of being mapped (and page-faulted) afresh for every layer,
    /// and they stay closer to the caches.
    public static let microBatchBytes = 16 << 20

    private struct Step: Sendable {
        var node: Node
        var fusedActivation: Activation?
        /// The name the step writes (the activation's output when one is fused).
        var output: String
    }

    /// Prepares a session; the graph is validated on the first `run`.
    public init(graph: Graph) {
        self.graph = graph
        self.parameters = Dictionary(graph.parameters.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        var readers: [String: Int] = [:]
        for node in graph.nodes { for input in node.inputs { readers[input, default: 0] += 1 } }
        let graphOutputs = Set(graph.outputs.map(\.name))
        var steps: [Step] = []
        var skip = Set<Int>()
        for (index, node) in graph.nodes.enumerated() where !skip.contains(index) {
            var step = Step(node: node, fusedActivation: nil, output: node.output)
            if Self.acceptsFusedActivation(node.operation), index + 1 < graph.nodes.count,
               case .activation(let activation) = graph.nodes[index + 1].operation,
               graph.nodes[index + 1].inputs == [node.output], readers[node.output] == 1,
               !graphOutputs.contains(node.output) {
                step.fusedActivation = activation
                step.output = graph.nodes[index + 1].output
                skip.insert(index + 1)
            }
            steps.append(step)
        }
        var lastUse: [String: Int] = [:]
        for (index, step) in steps.enumerated() { for input in step.node.inputs { lastUse[input] = index } }
        for output in graphOutputs { lastUse[output] = Int.max }
        self.steps = steps
        self.lastUse = lastUse
        self.microBatchSize = Self.microBatchSize(for: graph)
    }

    /// The micro-batch size for a graph whose every value keeps the sample index on axis 0 and
    /// whose operators never combine samples; `nil` otherwise.
    static func microBatchSize(for graph: Graph) -> Int? {
        guard let one = try? graph.inputShapes(batchSize: 1), let two = try? graph.inputShapes(batchSize: 2),
              let shapes1 = try? graph.inferShapes(inputShapes: one), let shapes2 = try? graph.inferShapes(inputShapes: two)
        else { return nil }
        var largestSample = 1
        for node in graph.nodes {
            guard let first = shapes1[node.output], let second = shapes2[node.output], first.first == 1, second.first == 2,
                  Array(first.dropFirst()) == Array(second.dropFirst()), keepsSamplesApart(node.operation) else {
                return nil
            }
            largestSample = max(largestSample, first.reduce(1, *) * MemoryLayout<Float>.size)
        }
        return max(1, microBatchBytes / largestSample)
    }

    /// Whether an operator works on each sample (axis 0) separately.
    private static func keepsSamplesApart(_ operation: Operator) -> Bool {
        switch operation {
        case .concat(let axis), .softmax(let axis, _): return axis != 0
        case .flatten(let axis): return axis != 0
        case .transpose(let permutation): return permutation?.first == 0
        case .reduceMean(let axes, _): return axes.map { !$0.contains(0) } ?? false
        case .gemm(let gemm): return !gemm.transposeA
        case .squeeze(let axes): return axes.map { !$0.contains(0) } ?? false
        case .unsqueeze(let axes): return !axes.contains(0)
        case .reshape(let shape, _): return shape.first == 0
        case .pad(let pads, _, _): return pads.first == 0 && pads.count > 1 && pads[pads.count / 2] == 0
        default: return true
        }
    }

    private static func acceptsFusedActivation(_ operation: Operator) -> Bool {
        switch operation {
        case .convolution, .gemm, .batchNormalization: true
        default: false
        }
    }

    /// Runs the graph on named inputs and returns every graph output by name. Batches larger than
    /// `microBatchSize` run in slices of that size (the results are identical).
    ///
    /// - Throws: `ModelError` when an input is missing or its shape does not fit the graph.
    public func run(_ inputs: [String: Tensor]) throws(ModelError) -> [String: Tensor] {
        _ = try graph.inferShapes(inputShapes: inputs.mapValues(\.shape))
        let batch = inputs.values.first?.shape.first ?? 0
        guard let microBatchSize, batch > microBatchSize, inputs.values.allSatisfy({ $0.shape.first == batch }) else {
            return runWhole(inputs)
        }
        var slices: [[String: Tensor]] = []
        var start = 0
        while start < batch {
            let range = start..<min(batch, start + microBatchSize)
            slices.append(runWhole(inputs.mapValues { $0.slice(batch: range) }))
            start = range.upperBound
        }
        return Dictionary(graph.outputs.map { output in
            (output.name, Tensor.concatenate(batches: slices.map { $0[output.name] ?? Tensor(shape: [0]) }))
        }, uniquingKeysWith: { a, _ in a })
    }

    /// Runs all samples at once; shapes are already checked.
    private func runWhole(_ inputs: [String: Tensor]) -> [String: Tensor] {
        var values = parameters
        for (name, tensor) in inputs { values[name] = tensor }
        for (index, step) in steps.enumerated() {
            // Shapes were checked above, so every read below finds its value.
            let operands = step.node.inputs.map { values[$0] ?? Tensor(shape: [0]) }
            values[step.output] = Self.evaluate(step.node.operation, operands, activation: step.fusedActivation)
            for input in step.node.inputs where lastUse[input] == index && parameters[input] == nil {
                values[input] = nil
            }
        }
        return Dictionary(graph.outputs.map { ($0.name, values[$0.name] ?? Tensor(shape: [0])) },
                          uniquingKeysWith: { a, _ in a })
    }

    /// Runs a graph with exactly one input and one output.
    public func run(_ input: Tensor) throws(ModelError) -> Tensor {
        guard let inputName = graph.inputs.first?.name, graph.inputs.count == 1 else {
            throw .missingInput(input: graph.inputs.dropFirst().first?.name ?? "")
        }
        let outputs = try run([inputName: input])
        return outputs[graph.outputs[0].name] ?? Tensor(shape: [0])
    }

    /// Runs a single-input graph over a large batch in slices of `batchSize`, concatenating the
    /// first output; `progress` is called after each slice with the number of rows done.
    public func run(_ input: Tensor, batchSize: Int, progress: (Int) -> Void = { _ in }) throws(ModelError) -> Tensor {
        let rows = input.shape.first ?? 0
        var parts: [Tensor] = []
        var start = 0
        while start < rows {
            let end = min(rows, start + max(1, batchSize))
            parts.append(try run(input.slice(batch: start..<end)))
            progress(end)
            start = end
        }
        return parts.isEmpty ? try run(input) : Tensor.concatenate(batches: parts)
    }

    public static func evaluate(_ operation: Operator, _ x: [Tensor], activation: Activation?) -> Tensor {
        switch operation {
        case .convolution(let convolution):
            return conv2d(x[0], weight: x[1], bias: x.count > 2 ? x[2] : nil, convolution: convolution,
                          activation: activation)
        case .batchNormalization(let epsilon):
            return batchNormalization(x[0], scale: x[1], bias: x[2], mean: x[3], variance: x[4], epsilon: epsilon,
                                      activation: activation)
        case .activation(let function):
            return activate(x[0], function)
        case .binary(let op):
            return binary(x[0], x[1], op)
        case .concat(let axis):
            return concatenate(x, axis: axis)
        case .maxPool(let pooling):
            return maxPool2d(x[0], pooling: pooling)
        case .averagePool(let pooling, let countIncludePad):
            return averagePool2d(x[0], pooling: pooling, countIncludePad: countIncludePad)
        case .globalAveragePool:
            return globalAveragePool(x[0])
        case .globalMaxPool:
            return globalMaxPool(x[0])
        case .gemm(let parameters):
            return gemm(x[0], x[1], x.count > 2 ? x[2] : nil, parameters: parameters, activation: activation)
        case .matMul:
            return matMul(x[0], x[1])
        case .softmax(let axis, let coercedTo2D):
            return softmax(x[0], axis: axis, coercedTo2D: coercedTo2D)
        case .transpose(let permutation):
            return transpose(x[0], permutation: permutation)
        case .pad(let pads, let mode, let value):
            return pad(x[0], pads: pads, mode: mode, value: value)
        case .reduceMean(let axes, let keepDimensions):
            return reduceMean(x[0], axes: axes, keepDimensions: keepDimensions)
        case .flatten, .reshape, .squeeze, .unsqueeze, .identity:
            // Pure shape changes: the elements stay in the same order.
            let shape = (try? operation.outputShape(inputs: [x[0].shape])) ?? x[0].shape
            return x[0].reshaped(to: shape)
        }
    }
}
