import LanceCore
import LanceModel
import LanceNN

/// Runs a graph's forward pass in float32.
///
/// The session checks input shapes against the graph (shape inference over every node) before any
/// computation, fuses an activation into the convolution, Gemm or batch normalization before it
/// and a residual `Add` into the convolution before it when nothing else reads the intermediate
/// value, and frees every intermediate tensor after its last use. Any batch size is accepted where
/// the graph's first input axis is symbolic.
///
/// A MobileNetV2-style inverted-residual block (1×1 expansion, 3×3 depthwise, 1×1 projection,
/// optionally with the residual `Add`) runs as one kernel (`invertedResidual`) in bands of rows,
/// so that its wide intermediate tensors stay in the cache; blocks the kernel does not take
/// (shapes, activations, no AVX-512) run step by step. Freed intermediate tensors are kept in a
/// `TensorRecycler` and reused as the outputs of later convolutions, in this and later passes,
/// so that layers write into memory that is already mapped and cached.
///
/// Threads: a batch of one runs layer by layer with every kernel split over all cores. Larger
/// batches of a graph that keeps samples apart (`microBatchSize` not `nil`) run one sample per
/// core, each sample's kernels single-threaded, and any remainder that does not fill all cores
/// layer-split as before. OpenBLAS is kept single-threaded during `run`
/// (`BLASThreads.withSingleThread`); the kernels do their own splitting.
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
    /// Inverted-residual blocks (expansion, depthwise, projection) run as one kernel, by first step.
    private let blocks: [Int: Range<Int>]
    /// Intermediate tensors of finished layers, reused as outputs of later layers (and passes).
    private let recycler = TensorRecycler()

    /// The largest intermediate tensor a micro-batch may produce. Tensors of this size are
    /// recycled by the allocator instead of being mapped (and page-faulted) afresh for every layer,
    /// and they stay closer to the caches.
    public static let microBatchBytes = 16 << 20

    private struct Step: Sendable {
        var node: Node
        var fusedActivation: Activation?
        /// The name the step writes (the activation's or the `Add`'s output when one is fused).
        var output: String
        /// For a convolution with a fused residual `Add`: the `Add`'s other operand.
        var residual: String?

        /// Every value the step reads.
        var inputs: [String] { node.inputs + (residual.map { [$0] } ?? []) }
    }

    /// Prepares a session; the graph is validated on the first `run`. Every BatchNormalization
    /// that `BatchNormalizationFolding` can fold into the Conv or Gemm before it is folded first
    /// (the same values up to rounding; `graph` is the folded graph).
    public init(graph: Graph) {
        let graph = BatchNormalizationFolding.fold(graph).graph
        self.graph = graph
        self.parameters = Dictionary(graph.parameters.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        var readers: [String: Int] = [:]
        for node in graph.nodes { for input in node.inputs { readers[input, default: 0] += 1 } }
        let graphOutputs = Set(graph.outputs.map(\.name))
        var steps: [Step] = []
        var skip = Set<Int>()
        for (index, node) in graph.nodes.enumerated() where !skip.contains(index) {
            var step = Step(node: node, fusedActivation: nil, output: node.output, residual: nil)
            let next = index + 1 < graph.nodes.count ? graph.nodes[index + 1] : nil
            let consumedByNextOnly = next != nil && readers[node.output] == 1 && !graphOutputs.contains(node.output)
            if let next, consumedByNextOnly, Self.acceptsFusedActivation(node.operation),
               case .activation(let activation) = next.operation, next.inputs == [node.output] {
                step.fusedActivation = activation
                step.output = next.output
                skip.insert(index + 1)
            } else if let next, consumedByNextOnly, case .convolution = node.operation,
                      case .binary(.add) = next.operation, next.inputs.count == 2,
                      let other = next.inputs.first(where: { $0 != node.output }), next.inputs.contains(node.output) {
                // Add(conv, r) or Add(r, conv): `r` is computed before the convolution.
                step.residual = other
                step.output = next.output
                skip.insert(index + 1)
            }
            steps.append(step)
        }
        var lastUse: [String: Int] = [:]
        for (index, step) in steps.enumerated() { for input in step.inputs { lastUse[input] = index } }
        for output in graphOutputs { lastUse[output] = Int.max }
        self.steps = steps
        self.lastUse = lastUse
        self.blocks = Self.findBlocks(steps, readers: readers, graphOutputs: graphOutputs)
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
        return ForwardExecution.withSingleThreadedBLAS { runChecked(inputs) }
    }

    /// `run(_:)` after the shape check.
    private func runChecked(_ inputs: [String: Tensor]) -> [String: Tensor] {
        let batch = inputs.values.first?.shape.first ?? 0
        let threads = ForwardExecution.threads
        guard let microBatchSize, inputs.values.allSatisfy({ $0.shape.first == batch }),
              batch > microBatchSize || (threads > 1 && batch >= threads) else {
            return runWhole(inputs)
        }
        // One sample per core while all cores can get one; the rest as micro-batches whose
        // kernels are split over the cores.
        let concurrent = threads > 1 ? batch - batch % threads : 0
        var ranges: [Range<Int>] = (0..<concurrent).map { $0..<($0 + 1) }
        var start = concurrent
        while start < batch {
            ranges.append(start..<min(batch, start + microBatchSize))
            start = ranges[ranges.count - 1].upperBound
        }
        var slices = [[String: Tensor]](repeating: [:], count: ranges.count)
        slices.withUnsafeMutableBufferPointer { results in
            nonisolated(unsafe) let results = results
            ForwardExecution.concurrentForEach(concurrent) { index in
                results[index] = runWhole(inputs.mapValues { $0.slice(batch: ranges[index]) })
            }
        }
        for index in concurrent..<ranges.count {
            slices[index] = runWhole(inputs.mapValues { $0.slice(batch: ranges[index]) })
        }
        return Dictionary(graph.outputs.map { output in
            (output.name, Tensor.concatenate(batches: slices.map { $0[output.name] ?? Tensor(shape: [0]) }))
        }, uniquingKeysWith: { a, _ in a })
    }

    /// Runs all samples at once; shapes are already checked.
    private func runWhole(_ inputs: [String: Tensor]) -> [String: Tensor] {
        var values = parameters
        for (name, tensor) in inputs { values[name] = tensor }
        recycler.providing {
            var index = 0
            while index < steps.count {
                var length = 1
                if let block = blocks[index], let result = runBlock(block, values) {
                    length = block.count
                    values[steps[index + length - 1].output] = result
                } else {
                    let step = steps[index]
                    // Shapes were checked above, so every read below finds its value.
                    let operands = step.node.inputs.map { values[$0] ?? Tensor(shape: [0]) }
                    if let residual = step.residual {
                        values[step.output] = Self.evaluate(step.node.operation, operands,
                                                            adding: values[residual] ?? Tensor(shape: [0]))
                    } else {
                        values[step.output] = Self.evaluate(step.node.operation, operands, activation: step.fusedActivation)
                    }
                }
                for position in index..<(index + length) {
                    for input in steps[position].inputs where lastUse[input] == position && parameters[input] == nil {
                        if let tensor = values.removeValue(forKey: input), inputs[input] == nil {
                            recycler.recycle(tensor)
                        }
                    }
                }
                index += length
            }
        }
        return Dictionary(graph.outputs.map { ($0.name, values[$0.name] ?? Tensor(shape: [0])) },
                          uniquingKeysWith: { a, _ in a })
    }

    /// Runs the steps of an inverted-residual block (expansion, depthwise, projection) as one
    /// fused kernel; `nil` when the kernel does not take these shapes (then the steps run one by one).
    private func runBlock(_ block: Range<Int>, _ values: [String: Tensor]) -> Tensor? {
        func convolution(_ position: Int) -> BlockConvolution? {
            let step = steps[position]
            guard case .convolution(let convolution) = step.node.operation, step.node.inputs.count >= 2,
                  let weight = values[step.node.inputs[1]] else { return nil }
            let bias = step.node.inputs.count > 2 ? values[step.node.inputs[2]] : nil
            return BlockConvolution(weight: weight, bias: bias, convolution: convolution, activation: step.fusedActivation)
        }
        let first = steps[block.lowerBound]
        guard let input = values[first.node.inputs[0]] else { return nil }
        let expand = block.count == 3 ? convolution(block.lowerBound) : nil
        guard block.count == 2 || expand != nil, let depthwise = convolution(block.upperBound - 2),
              let project = convolution(block.upperBound - 1) else { return nil }
        let residual = steps[block.upperBound - 1].residual.flatMap { values[$0] }
        return invertedResidual(input, expand: expand, depthwise: depthwise, project: project, residual: residual)
    }

    /// The inverted-residual blocks among `steps`, by first step: 1×1 convolution (optional),
    /// 3×3 depthwise convolution, 1×1 convolution (with an optional fused residual), each
    /// intermediate value read only by the next step. Shapes are checked when the block runs.
    private static func findBlocks(_ steps: [Step], readers: [String: Int], graphOutputs: Set<String>) -> [Int: Range<Int>] {
        func isPointwise(_ step: Step) -> Bool {
            guard case .convolution(let c) = step.node.operation else { return false }
            return c.groups == 1 && c.window.kernelSize == [1, 1] && c.window.strides == [1, 1]
        }
        func isDepthwise(_ step: Step) -> Bool {
            guard case .convolution(let c) = step.node.operation else { return false }
            return c.groups > 1 && c.window.kernelSize == [3, 3] && step.residual == nil
        }
        func feeds(_ step: Step, _ next: Step) -> Bool {
            readers[step.output] == 1 && !graphOutputs.contains(step.output) && next.node.inputs.first == step.output
        }
        var blocks: [Int: Range<Int>] = [:]
        var index = 0
        while index + 1 < steps.count {
            if index + 2 < steps.count, isPointwise(steps[index]), steps[index].residual == nil,
               isDepthwise(steps[index + 1]), isPointwise(steps[index + 2]),
               feeds(steps[index], steps[index + 1]), feeds(steps[index + 1], steps[index + 2]) {
                blocks[index] = index..<(index + 3)
                index += 3
            } else if isDepthwise(steps[index]), isPointwise(steps[index + 1]), feeds(steps[index], steps[index + 1]) {
                blocks[index] = index..<(index + 2)
                index += 2
            } else {
                index += 1
            }
        }
        return blocks
    }

    /// Lets go of the intermediate tensors kept for reuse by later passes (up to the recycler's
    /// 32 MiB), for a session kept between passes that are far apart.
    public func releaseBuffers() {
        recycler.removeAll()
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

    /// A convolution followed by `Add` with `residual`: one fused pass when `residual` has the
    /// convolution's output shape, else the two operators one after the other (broadcasting).
    static func evaluate(_ operation: Operator, _ x: [Tensor], adding residual: Tensor) -> Tensor {
        if case .convolution(let convolution) = operation,
           let shape = try? operation.outputShape(inputs: x.map(\.shape)), shape == residual.shape {
            return conv2d(x[0], weight: x[1], bias: x.count > 2 ? x[2] : nil, convolution: convolution,
                          adding: residual)
        }
        return binary(evaluate(operation, x, activation: nil), residual, .add)
    }

    /// Runs one operator on its operands (inputs and parameters in the node's order), with
    /// `activation` applied to the result (fused into the kernel where it supports that).
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
