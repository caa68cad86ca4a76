import LanceCore
import LanceLinalg
import LanceModel
import LanceNN
import LanceRuntime


/// What a trained convolution or linear layer keeps from its input for the weight gradient
/// (product "core concepts": an explicit, swappable policy, so the bytes kept can be counted).
///
/// Whatever the method, the forward pass is exact and the input gradient is exact
/// (`dX = conv2dᵀ(dY, W)`, `dX = dY · op(W)ᵀ`); only the weight gradient differs.
public enum TrainingMethod: Sendable, Equatable {
    /// LANCE (method section 3.1/3.3): keep only the Tucker core `S = X ×₀U₀ᵀ ×₁U₁ᵀ …` on the
    /// fixed calibrated bases of each layer (`CalibrationRecord.layers`, matched by node name);
    /// the weight gradient runs through the low-rank chain and never rebuilds X. The training
    /// batch must equal the calibration batch (`U₀` is `B × r₀`, section 10 note 2).
    case lance(CalibrationRecord)
    /// Full backpropagation: keep the input X; exact gradients.
    case full
    /// The per-batch HOSVD baseline (Nguyen et al. 2024): decompose each batch's input with the
    /// energy threshold ε (`hosvdCompress`) and keep that batch's core and factors.
    case hosvd(energy: Float)

    /// `lance`, `full` or `hosvd` (the command line's `--method`).
    public var name: String {
        switch self {
        case .lance: "lance"
        case .full: "full"
        case .hosvd: "hosvd"
        }
    }
}

/// Bytes held for the backward pass of one step, counted from the tensors actually saved
/// (float32, 4 bytes per element; a value saved by several nodes is counted once).
///
/// `trainedLayerBytes` follows the paper's convention (method section 3.4): per trained
/// convolution/linear layer what it keeps for its weight gradient — `numel(X)·4` under `full`,
/// `(Π r_n + Σ d_n·r_n)·4` (core plus factors) under `lance` and `hosvd`. The fixed LANCE factors
/// are held for the whole run, not per step; they are counted in, as the authors' code does.
/// `otherBytes` are the other saved tensors on the path to the loss (activation bit masks,
/// sigmoid/tanh outputs, max-pooling inputs, operands of products, ...), which the paper leaves out.
/// Parameters (weights) are not counted: they are held whether or not anything trains.
public struct BackwardMemory: Sendable, Equatable {
    /// Per trained layer (node name, graph order): the bytes it keeps for its weight gradient.
    public var layers: [(layer: String, bytes: Int)]
    /// Other saved tensors on the trained path.
    public var otherBytes: Int

    /// Creates an accounting.
    public init(layers: [(layer: String, bytes: Int)], otherBytes: Int) {
        self.layers = layers
        self.otherBytes = otherBytes
    }

    /// Σ over the trained layers (the paper's figure).
    public var trainedLayerBytes: Int { layers.reduce(0) { $0 + $1.bytes } }

    /// Everything held for backward.
    public var totalBytes: Int { trainedLayerBytes + otherBytes }

    public static func == (lhs: BackwardMemory, rhs: BackwardMemory) -> Bool {
        lhs.otherBytes == rhs.otherBytes && lhs.layers.map(\.layer) == rhs.layers.map(\.layer)
            && lhs.layers.map(\.bytes) == rhs.layers.map(\.bytes)
    }
}

/// The result of a training forward pass: the logits and everything the backward pass needs,
/// nothing more. Pass it to `TrainingGraph.backward` (it is consumed there).
public struct ForwardPass: Sendable {
    /// The logits `[B, K]` the loss is computed on.
    public let logits: Tensor
    /// The bytes held for backward.
    public let memory: BackwardMemory
    /// Saved activations by value name.
    fileprivate var savedValues: [String: Tensor]
    /// Saved compressed inputs by trained node name.
    fileprivate var savedCores: [String: TuckerCore]
    /// Saved activation masks by node output name (`ActivationMask`).
    fileprivate var savedMasks: [String: ActivationMask]
    /// The shapes of every suffix node's inputs, by suffix position.
    fileprivate var inputShapes: [[[Int]]]
}

/// The gradients of one backward pass.
public struct BackwardResult: Sendable {
    /// `∂loss/∂p` for every trained parameter (by name).
    public var parameterGradients: [String: Tensor]
    /// `∂loss/∂v` for the values asked for in `keepingValueGradients` (when reached).
    public var valueGradients: [String: Tensor]
}

/// Runs a graph for training: a frozen prefix forward only, a trained suffix that keeps exactly
/// what its backward needs, softmax cross-entropy and the backward pass (issue "lance-train").
///
/// **Which nodes train.** The trained parameters are the weight and bias operands of the trained
/// layers (`Graph.trainedLayers`) that are graph parameters; every other parameter is frozen
/// (batch normalization uses its inference statistics, and its scale and bias do not train). A
/// node is in the *trained suffix* when it depends on a trained parameter and the logits depend
/// on it; all other nodes the suffix needs form the *frozen part*, which runs through an
/// `InferenceSession` (activation fusion, buffers freed after last use, micro-batches) on a
/// sub-graph whose outputs are the frozen values the suffix reads, and keeps nothing.
///
/// **What the suffix keeps.** Trained convolution/linear: see `TrainingMethod` (and the head
/// keeps its input unless `compressHead`, as in the authors' CNN code, which replaces only the
/// Conv2d layers). Other operators keep only what their input gradient needs: a piecewise-linear
/// activation (ReLU, Clip/ReLU6, LeakyReLU, HardSigmoid) one bit per element saying which piece
/// its input fell on (`ActivationMask`, 1/32 of a float32 tensor), other activations their output
/// (or input when the output does not determine the derivative), max pooling and global
/// max pooling their input, softmax its output, Mul/Div/MatMul/Gemm the operand the other
/// operand's gradient needs; convolution with a frozen weight, frozen batch normalization
/// (`dX = dY · scale / √(var + ε)`), Add/Sub, average pooling, reshapes, transpose, concat and
/// constant Pad keep nothing but shapes.
///
/// **Loss.** The logits are the graph's first output, or the input of a final Softmax over the
/// last axis that produces it (cross-entropy then applies to the logits, as PyTorch's
/// `CrossEntropyLoss` would).
public struct TrainingGraph: Sendable {
    /// The graph, with the trained parameters' current values.
    public private(set) var graph: Graph
    /// The trained layers.
    public let layers: [TrainedLayer]
    /// What the trained layers keep.
    public let method: TrainingMethod
    /// Whether the head (the last linear layer) is compressed like the convolutions.
    public let compressHead: Bool
    /// The trained parameters' names, in graph order of their nodes (weight, then bias; scale, then
    /// bias of a trained batch normalization).
    public let trainedParameterNames: [String]
    /// The name of the value the loss reads (`[B, K]` logits).
    public let logitsName: String

    private let inputName: String
    private let frozenSession: InferenceSession?
    /// The frozen values the suffix reads (outputs of `frozenSession`).
    private let frozenOutputs: [String]
    /// The trained suffix, in graph order.
    private let suffix: [Node]
    /// Values that carry a gradient (trained parameters and suffix outputs).
    private let requiresGradient: Set<String>
    private let trainedByNode: [String: TrainedLayer]
    /// Per suffix position, the index of the last suffix node reading each value (for freeing).
    private let lastSuffixUse: [String: Int]
    private let parameterIndex: [String: Int]
    /// Per trained node, its calibrated bases (`lance` only).
    private let bases: [String: LayerBases]
    /// Suffix values whose gradient is passed on as the reading convolution's weight and output
    /// gradient instead of being formed (see `init`).
    private let deferredGradients: Set<String>
    /// By suffix position of a convolution: the activation of the next node, run in the
    /// convolution's kernel (see `init`).
    private let fusedActivations: [Int: Activation]

    /// Prepares a graph for training.
    ///
    /// - Parameters:
    ///   - graph: a single-input model whose first output (or the input of its final Softmax) is `[B, K]` logits.
    ///   - layers: the trained layers (`Graph.trainedLayers`).
    ///   - method: what the trained layers keep.
    ///   - compressHead: whether the head's input is compressed too (default: it is kept, as in
    ///     the authors' code; it needs head bases in the calibration record under `lance`).
    ///   - frozenParameters: operands of the trained layers that stay fixed nonetheless (the
    ///     biases of shared layers when a task is added: a bias update would move every input's
    ///     output, protected or not).
    ///   - trainBatchNormalization: whether the scale γ and bias β of every BatchNormalization
    ///     between the trained layers and the loss train too. Its statistics stay the inference
    ///     ones (`y = γ·(x − μ)/√(σ² + ε) + β` with μ, σ² fixed), and it keeps its input `x`
    ///     (uncompressed, counted in `BackwardMemory.otherBytes`) for `dγ = Σ dy·(x − μ)/√(σ² + ε)`.
    /// - Throws: `TrainingError.invalidLayerSelection` when nothing trains or an operator between
    ///   the trained layers and the loss has no backward here, or when `trainBatchNormalization`
    ///   finds no batch normalization there; `.data` when `lance` bases are missing for a
    ///   compressed layer.
    public init(graph: Graph, layers: [TrainedLayer], method: TrainingMethod, compressHead: Bool = false,
                frozenParameters: Set<String> = [], trainBatchNormalization: Bool = false) throws(TrainingError) {
        guard graph.inputs.count == 1, let input = graph.inputs.first?.name else {
            throw .data(reason: "training needs a model with exactly one input; this one has \(graph.inputs.count)")
        }
        guard let output = graph.outputs.first?.name else { throw .data(reason: "the model has no output to compute a loss on") }
        guard !layers.isEmpty else { throw .invalidLayerSelection(reason: "no layer is selected for training") }
        self.graph = graph
        self.layers = layers
        self.method = method
        self.compressHead = compressHead
        self.inputName = input
        self.parameterIndex = Dictionary(graph.parameters.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        let nodeByName = Dictionary(graph.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let producer = Dictionary(graph.nodes.enumerated().map { ($1.output, $0) }, uniquingKeysWith: { a, _ in a })

        // The logits: the output, or the input of a final softmax over the last axis.
        var logits = output
        if let index = producer[output], case .softmax(let axis, _) = graph.nodes[index].operation,
           axis == -1 || axis == 1 {
            logits = graph.nodes[index].inputs[0]
        }
        self.logitsName = logits

        // Trained parameters: weight and bias operands of the trained layers.
        var trainedNames: [String] = []
        var trainedByNode: [String: TrainedLayer] = [:]
        for layer in layers {
            guard let node = nodeByName[layer.node] else {
                throw .invalidLayerSelection(reason: "no node named '\(layer.node)'")
            }
            trainedByNode[layer.node] = layer
            for operand in node.inputs.dropFirst()
            where parameterIndex[operand] != nil && !trainedNames.contains(operand) && !frozenParameters.contains(operand) {
                trainedNames.append(operand)
            }
        }
        self.trainedByNode = trainedByNode

        // Forward reachability from the trained parameters, backward reachability from the logits.
        var dependsOnTrained = Set(trainedNames)
        for node in graph.nodes where node.inputs.contains(where: dependsOnTrained.contains) {
            dependsOnTrained.insert(node.output)
        }
        guard let logitsProducer = producer[logits] else { throw .data(reason: "the logits '\(logits)' are not computed by any node") }
        var reachesLoss: Set<String> = [logits]
        for node in graph.nodes[...logitsProducer].reversed() where reachesLoss.contains(node.output) {
            for operand in node.inputs { reachesLoss.insert(operand) }
        }
        guard dependsOnTrained.contains(logits) else {
            throw .invalidLayerSelection(reason: "the loss does not depend on any parameter of the selected layers")
        }
        let suffix = graph.nodes.filter { dependsOnTrained.contains($0.output) && reachesLoss.contains($0.output) }
        self.suffix = suffix
        if trainBatchNormalization {
            // The scale and bias of the suffix's batch normalizations, all nodes in graph order.
            let layerParameters = trainedNames
            // Not constants an importer made up for an absent scale or bias (Keras `scale=False`):
            // the model has no such weight to carry an update back to its format.
            let graphParameters = Set(graph.parameters.filter { !$0.synthesized }.map(\.name))
            trainedNames = []
            for node in suffix {
                let operands: [String]
                if trainedByNode[node.name] != nil {
                    operands = node.inputs.dropFirst().filter(layerParameters.contains)
                } else if case .batchNormalization = node.operation {
                    operands = node.inputs[1...2].filter { graphParameters.contains($0) && !frozenParameters.contains($0) }
                } else {
                    operands = []
                }
                for operand in operands where !trainedNames.contains(operand) { trainedNames.append(operand) }
            }
            guard trainedNames.count > layerParameters.count else {
                throw .invalidLayerSelection(reason: "no BatchNormalization with a stored scale or bias lies between the trained layers and the loss, so there is none to train (batch normalization may have been folded into the convolutions when the model was exported)")
            }
        }
        self.trainedParameterNames = trainedNames
        var requiresGradient = Set(trainedNames)
        for node in suffix { requiresGradient.insert(node.output) }
        self.requiresGradient = requiresGradient

        // The frozen part: every non-suffix node a suffix node needs (transitively).
        let suffixOutputs = Set(suffix.map(\.output))
        var needed: Set<String> = []
        for node in suffix { for operand in node.inputs where !suffixOutputs.contains(operand) { needed.insert(operand) } }
        let frozenBoundary = needed.filter { producer[$0] != nil }.sorted()
        var required = Set(frozenBoundary)
        var frozenNodes: [Node] = []
        for node in graph.nodes.reversed() where required.contains(node.output) && !suffixOutputs.contains(node.output) {
            frozenNodes.append(node)
            for operand in node.inputs { required.insert(operand) }
        }
        frozenNodes.reverse()
        self.frozenOutputs = frozenBoundary
        if frozenNodes.isEmpty {
            self.frozenSession = nil
        } else {
            let frozenParameters = graph.parameters.filter { required.contains($0.name) }
            let frozen = Graph(name: graph.name + "-frozen", inputs: graph.inputs,
                               outputs: frozenBoundary.map { ValueInfo(name: $0, dimensions: nil) },
                               nodes: frozenNodes, parameters: frozenParameters, provenance: graph.provenance)
            self.frozenSession = InferenceSession(graph: frozen)
        }
        var lastUse: [String: Int] = [:]
        for (index, node) in suffix.enumerated() { for operand in node.inputs { lastUse[operand] = index } }
        self.lastSuffixUse = lastUse

        // Every suffix node must have a backward for the operands that carry a gradient.
        for node in suffix {
            let carrying = node.inputs.enumerated().filter { requiresGradient.contains($0.element) }.map(\.offset)
            if trainedByNode[node.name] != nil { continue }
            if let reason = Self.unsupportedReason(node.operation, gradientOperands: carrying) {
                throw .invalidLayerSelection(reason: "node '\(node.name)' (\(node.operation.opType)) lies between the trained layers and the loss, but \(reason)")
            }
        }

        // LANCE bases.
        var bases: [String: LayerBases] = [:]
        if case .lance(let record) = method {
            for layer in layers where layer.kind != .linear || !layer.isHead || compressHead {
                guard let found = record.layers.first(where: { $0.layer == layer.node }) else {
                    throw .data(reason: "the calibration record has no bases for the trained layer '\(layer.node)'; calibrate with the same layer selection")
                }
                bases[layer.node] = found
            }
        }
        self.bases = bases

        // Values whose gradient the backward pass never forms (`lowRankPointwiseGradients`): the
        // output of a compressed pointwise convolution whose input carries no gradient, read only
        // by a trained pointwise convolution of one group.
        var readers: [String: Int] = [:]
        for node in suffix { for operand in Set(node.inputs) { readers[operand, default: 0] += 1 } }
        var deferred: Set<String> = []
        if method != .full {
            for producerNode in suffix {
                guard let layer = trainedByNode[producerNode.name], layer.kind != .linear,
                      case .convolution(let convolution) = producerNode.operation, convolution.isPointwise,
                      !requiresGradient.contains(producerNode.inputs[0]),
                      bases[producerNode.name].map({ $0.modes.count == 4 }) ?? true else { continue }
                let value = producerNode.output
                guard value != logits, readers[value] == 1, let reader = suffix.first(where: { $0.inputs.contains(value) }),
                      trainedByNode[reader.name] != nil, case .convolution(let next) = reader.operation, next.isPointwise, next.groups == 1,
                      reader.inputs[0] == value, !reader.inputs.dropFirst().contains(value) else { continue }
                deferred.insert(value)
            }
        }
        self.deferredGradients = deferred

        // Convolutions whose output only an activation stored as a mask reads (the next node):
        // the activation runs in the convolution's kernel, and its node only records the mask.
        var fusedActivations: [Int: Activation] = [:]
        for (position, node) in suffix.enumerated().dropLast() {
            let next = suffix[position + 1]
            guard case .convolution = node.operation, case .activation(let activation) = next.operation,
                  ActivationMask.applies(to: activation), next.inputs == [node.output], node.output != logits,
                  readers[node.output] == 1 else { continue }
            fusedActivations[position] = activation
        }
        self.fusedActivations = fusedActivations
    }

    /// Why an operator cannot pass gradients to the operands at `gradientOperands`, or `nil`.
    private static func unsupportedReason(_ operation: Operator, gradientOperands: [Int]) -> String? {
        switch operation {
        case .convolution:
            return gradientOperands == [0] ? nil : "only its data input can carry a gradient (its weights are frozen)"
        case .batchNormalization:
            return Set(gradientOperands).isSubset(of: [0, 1, 2]) ? nil : "its running statistics cannot carry a gradient"
        case .pad(_, let mode, _):
            return mode == .constant ? nil : "the backward of \(mode.rawValue) padding is not supported"
        case .gemm(let gemm):
            return gemm.transposeA && gradientOperands != [0] ? "a transposed A operand is not supported" : nil
        default:
            return nil
        }
    }

    /// Whether a trained layer keeps a compressed input (not the input itself).
    private func compresses(_ layer: TrainedLayer) -> Bool {
        switch method {
        case .full: false
        case .lance, .hosvd: layer.kind != .linear || !layer.isHead || compressHead
        }
    }

    /// The current value of a parameter.
    public func parameter(_ name: String) -> Tensor? {
        parameterIndex[name].map { graph.parameters[$0].tensor }
    }

    /// Replaces a parameter's value (same shape) — what an optimizer step does.
    public mutating func setParameter(_ name: String, to tensor: Tensor) {
        guard let index = parameterIndex[name] else { preconditionFailure("no parameter named '\(name)'") }
        precondition(graph.parameters[index].tensor.shape == tensor.shape,
                     "parameter '\(name)' has shape \(graph.parameters[index].tensor.shape), not \(tensor.shape)")
        graph.parameters[index].tensor = tensor
    }

    /// Runs `body` on the trained parameters' values, by name, and keeps what it leaves (same
    /// shapes). The values are moved out of the graph for the call, so an optimizer updates them
    /// in place instead of copying them.
    public mutating func updateTrainedParameters(_ body: (inout [String: Tensor]) -> Void) {
        var values: [String: Tensor] = [:]
        var shapes: [String: [Int]] = [:]
        for name in trainedParameterNames {
            guard let index = parameterIndex[name] else { continue }
            values[name] = graph.parameters[index].tensor
            shapes[name] = graph.parameters[index].tensor.shape
            graph.parameters[index].tensor = Tensor(shape: [0])
        }
        body(&values)
        for (name, shape) in shapes {
            guard let value = values[name], value.shape == shape else {
                preconditionFailure("the update of parameter '\(name)' left \(values[name]?.shape.description ?? "nothing"), not \(shape)")
            }
            graph.parameters[parameterIndex[name]!].tensor = value
        }
    }

    /// The training forward pass on one batch.
    ///
    /// - Parameter images: the model input `[B, ...]`.
    /// - Throws: `TrainingError.graph` when the input does not fit the model; `.data` when the batch
    ///   differs from the calibration batch under `lance` or the logits are not `[B, K]`;
    ///   `.numeric` when a per-batch HOSVD fails.
    public func forward(images: Tensor) throws(TrainingError) -> ForwardPass {
        try forward(features: try frozenFeatures(images: images))
    }

    /// The values the trained part reads from the frozen part (`frozenFeatureNames`), computed
    /// forward only from a batch of model inputs. They depend on nothing that trains, so a caller
    /// may keep them (for deterministic preprocessing) and call `forward(features:)` with them
    /// again in later epochs instead of running the frozen part each time.
    public func frozenFeatures(images: Tensor) throws(TrainingError) -> [String: Tensor] {
        var values: [String: Tensor] = [inputName: images]
        if let frozenSession {
            do {
                let frozen = try frozenSession.run([inputName: images])
                for name in frozenOutputs { values[name] = frozen[name] }
            } catch {
                throw .graph(error)
            }
            if !suffix.contains(where: { $0.inputs.contains(inputName) }) { values[inputName] = nil }
        } else {
            do {
                _ = try graph.inferShapes(inputShapes: [inputName: images.shape])
            } catch {
                throw .graph(error)
            }
        }
        return values
    }

    /// Samples per slice in `frozenFeatures(batchSize:images:)`: one per core, so that every core
    /// runs a sample of its own (`InferenceSession`) while the slice's model inputs and early-layer
    /// activations stay small next to the weights and the trained part's state.
    public static var frozenSliceSize: Int { max(1, ForwardExecution.threads) }

    /// `frozenFeatures(images:)` for a batch whose model inputs are produced slice by slice.
    ///
    /// The frozen part runs on `frozenSliceSize` samples at a time and each slice's outputs are
    /// copied into `[batchSize, ...]` tensors, so neither the whole batch of model inputs (32 RGB
    /// images at 224×224 are 18.4 MiB) nor a second copy of the features is ever held. The results
    /// are identical to `frozenFeatures(images:)` on the whole batch (the forward pass does not
    /// depend on how a batch is split). When the trained part reads the model input itself, the
    /// whole batch is requested at once.
    ///
    /// - Parameters:
    ///   - batchSize: B, the number of samples.
    ///   - images: returns the model inputs `[n, ...]` of samples `range` (called with consecutive
    ///     ranges covering `0..<batchSize`).
    /// - Throws: what `images` throws, and as `frozenFeatures(images:)`.
    public func frozenFeatures(batchSize: Int, images: (Range<Int>) throws(TrainingError) -> Tensor)
        throws(TrainingError) -> [String: Tensor] {
        let sliceSize = Self.frozenSliceSize
        guard frozenSession != nil, batchSize > sliceSize, !suffix.contains(where: { $0.inputs.contains(inputName) }) else {
            return try frozenFeatures(images: try images(0..<batchSize))
        }
        return try joinedSlices(batchSize: batchSize, sliceSize: sliceSize) { range throws(TrainingError) in
            let slice = try images(range)
            guard slice.shape.first == range.count else {
                throw .data(reason: "a slice of samples \(range) came with \(slice.shape.first ?? 0) model inputs")
            }
            return try frozenFeatures(images: slice)
        }
    }

    /// The names `frozenFeatures(images:)` returns.
    public var frozenFeatureNames: [String] {
        var names = frozenSession == nil ? [] : frozenOutputs
        if frozenSession == nil || suffix.contains(where: { $0.inputs.contains(inputName) }) { names.append(inputName) }
        return names
    }

    /// The training forward pass from the frozen part's outputs (see `frozenFeatures(images:)`).
    ///
    /// The features are consumed: a value the trained part no longer needs (the input of a LANCE
    /// layer once projected) is released during the pass unless the caller still holds it.
    public func forward(features: consuming [String: Tensor]) throws(TrainingError) -> ForwardPass {
        var values = consume features
        let batchSize = values.values.first?.shape.first
        var saved: [String: Tensor] = [:]
        var savedOwner: [String: String] = [:]  // value name → trained node name (paper convention) or ""
        var cores: [String: TuckerCore] = [:]
        var masks: [String: ActivationMask] = [:]
        var inputShapes: [[[Int]]] = []
        inputShapes.reserveCapacity(suffix.count)
        func operand(_ name: String) -> Tensor {
            if let value = values[name] { return value }
            return parameter(name) ?? Tensor(shape: [0])
        }
        func save(_ name: String, owner: String = "") {
            guard parameterIndex[name] == nil, let value = values[name] else { return }
            saved[name] = value
            if !owner.isEmpty || savedOwner[name] == nil { savedOwner[name] = owner }
        }
        // The output of an activation computed with the convolution before it (`fusedActivations`).
        var fusedOutput: Tensor?
        for (position, node) in suffix.enumerated() {
            if let activated = fusedOutput.take() {
                inputShapes.append([activated.shape])
                if case .activation(let activation) = node.operation, let mask = ActivationMask(activation, output: activated) {
                    masks[node.output] = mask
                }
                values[node.output] = activated
                continue
            }
            var operands = node.inputs.map(operand)
            inputShapes.append(operands.map(\.shape))
            let fused = fusedActivations[position]
            let output: Tensor
            if let layer = trainedByNode[node.name] {
                if compresses(layer) {
                    let x = operands[0]
                    let compressed: TuckerCore
                    switch method {
                    case .lance:
                        let layerBases = bases[node.name]!
                        // Bases with three modes on a convolution are those of its im2col tensor
                        // (continual learning, method section 5.1).
                        let unfolded = layerBases.modes.count == 3 && x.rank == 4
                        let view: Tensor
                        if unfolded, case .convolution(let convolution) = node.operation {
                            view = unfoldedInput(x, convolution: convolution)
                        } else {
                            view = x
                        }
                        guard layerBases.inputShape == view.shape else {
                            throw .data(reason: view.shape.first != layerBases.inputShape.first
                                ? "the batch of \(view.shape.first ?? 0) samples differs from the calibration batch size \(layerBases.inputShape.first ?? 0) (the batch basis U₀ ties them); train with batches of the calibration size and drop the last partial batch"
                                : "the input of '\(node.name)' is \(view.shape), but it was calibrated at \(layerBases.inputShape); calibrate at the training input size")
                        }
                        // A few MFLOP: on one thread it does not wake OpenBLAS's threads (whose
                        // buffers would then stay resident for the rest of the run).
                        compressed = ForwardExecution.withSingleThreadedBLAS { TuckerCore(projecting: view, bases: layerBases.modes) }
                    case .hosvd(let energy):
                        do {
                            compressed = try hosvdCompress(x, energy: energy)
                        } catch {
                            throw .numeric(reason: "the per-batch HOSVD of the input of '\(node.name)' failed: \(error.description)")
                        }
                    case .full:
                        preconditionFailure("full backpropagation does not compress")
                    }
                    cores[node.name] = compressed
                } else {
                    save(node.inputs[0], owner: node.name)
                }
                output = Self.evaluate(node.operation, operands, activation: fused)
            } else {
                let input = node.inputs[0]
                if Self.runsInPlace(node.operation), lastSuffixUse[input] == position, input != logitsName,
                   !node.inputs.dropFirst().contains(input), !savedInputs(of: node).contains(input) {
                    // The input's last use: released first, so that the operator overwrites it in
                    // place unless the caller still holds it (one batch-sized buffer less).
                    values[input] = nil
                    output = Self.evaluateInPlace(node.operation, operands.removeFirst(), operands)
                } else {
                    output = Self.evaluate(node.operation, operands, activation: fused)
                }
                values[node.output] = output
                if case .activation(let activation) = node.operation, let mask = ActivationMask(activation, output: output) {
                    masks[node.output] = mask
                }
                for name in savedInputs(of: node) { save(name) }
                if savedOutput(of: node) { save(node.output) }
            }
            if fused != nil {
                // Only the activation reads this output: it is the activation's, handed on.
                values[node.output] = nil
                fusedOutput = output
            } else {
                values[node.output] = output
            }
            for name in node.inputs where lastSuffixUse[name] == position && name != logitsName { values[name] = nil }
        }
        guard let logits = values[logitsName], logits.rank == 2, logits.shape[0] == batchSize else {
            throw .data(reason: "the logits '\(logitsName)' have shape \(values[logitsName]?.shape ?? []), not [batch, classes]")
        }
        // Accounting: each saved value once; cores per trained layer.
        var layerBytes: [String: Int] = [:]
        var other = 0
        for (name, tensor) in saved {
            let bytes = tensor.count * MemoryLayout<Float>.size
            if let owner = savedOwner[name], !owner.isEmpty { layerBytes[owner, default: 0] += bytes } else { other += bytes }
        }
        for (name, core) in cores {
            layerBytes[name, default: 0] += ActivationMemory(inputShape: core.inputShape, compressed: core).lanceBytes
        }
        other += masks.values.reduce(0) { $0 + $1.bytes }
        let memory = BackwardMemory(layers: layers.map { ($0.node, layerBytes[$0.node] ?? 0) }, otherBytes: other)
        return ForwardPass(logits: logits, memory: memory, savedValues: saved, savedCores: cores, savedMasks: masks,
                           inputShapes: inputShapes)
    }

    /// One operator of the trained part, forward: convolutions take the batched path
    /// (`batchedConv2d`, images side by side where the planes are small), the rest are the
    /// inference kernels.
    private static func evaluate(_ operation: Operator, _ operands: [Tensor], activation: Activation? = nil) -> Tensor {
        if case .convolution(let convolution) = operation {
            return batchedConv2d(operands[0], weight: operands[1], bias: operands.count > 2 ? operands[2] : nil,
                                 convolution: convolution, activation: activation)
        }
        return InferenceSession.evaluate(operation, operands, activation: activation)
    }

    /// The value operands a non-trained suffix node keeps for its backward.
    private func savedInputs(of node: Node) -> [String] {
        let carries = node.inputs.map { requiresGradient.contains($0) }
        switch node.operation {
        case .activation(let activation):
            return ActivationMask.applies(to: activation) || activation.isDifferentiableFromOutput ? [] : [node.inputs[0]]
        case .maxPool, .globalMaxPool:
            return [node.inputs[0]]
        case .convolution:
            // Its frozen weights, when they are runtime values rather than parameters.
            return node.inputs.dropFirst().filter { parameterIndex[$0] == nil }
        case .batchNormalization:
            // The same, and its input when its scale trains (dγ reads it).
            return (carries[1] ? [node.inputs[0]] : []) + node.inputs.dropFirst().filter { parameterIndex[$0] == nil }
        case .binary(let op):
            switch op {
            case .add, .subtract: return []
            case .multiply: return [carries[1] ? node.inputs[0] : nil, carries[0] ? node.inputs[1] : nil].compactMap { $0 }
            case .divide: return carries[1] ? node.inputs : [node.inputs[1]]
            }
        case .gemm, .matMul:
            return [carries[1] ? node.inputs[0] : nil, carries[0] ? node.inputs[1] : nil].compactMap { $0 }
        default:
            return []
        }
    }

    /// Whether a non-trained suffix node keeps its output for its backward.
    private func savedOutput(of node: Node) -> Bool {
        switch node.operation {
        case .activation(let activation): !ActivationMask.applies(to: activation) && activation.isDifferentiableFromOutput
        case .softmax: true
        default: false
        }
    }

    /// Whether `evaluateInPlace` takes the operator: element-wise activations and inference-form
    /// batch normalization, which can write their output over their input.
    private static func runsInPlace(_ operation: Operator) -> Bool {
        switch operation {
        case .activation, .batchNormalization: true
        default: false
        }
    }

    /// An operator of `runsInPlace` on its first operand, handed over (overwritten when it holds the
    /// last reference), and the others.
    private static func evaluateInPlace(_ operation: Operator, _ input: consuming Tensor, _ others: [Tensor]) -> Tensor {
        switch operation {
        case .activation(let activation):
            return activate(input, activation)
        case .batchNormalization(let epsilon):
            return batchNormalization(input, scale: others[0], bias: others[1], mean: others[2], variance: others[3], epsilon: epsilon)
        default:
            preconditionFailure("\(operation) does not run in place")
        }
    }

    /// The backward pass from the logits' gradient: gradients of every trained parameter (and of
    /// the values named in `keepingValueGradients`, for inspection and tests).
    ///
    /// Gradients are accumulated where a value feeds several nodes, and each value's gradient is
    /// released once its producer has used it.
    public func backward(_ pass: consuming ForwardPass, logitsGradient: Tensor,
                         keepingValueGradients kept: Set<String> = []) -> BackwardResult {
        var pass = pass
        var gradients: [String: Tensor] = [logitsName: logitsGradient]
        var parameterGradients: [String: Tensor] = [:]
        var valueGradients: [String: Tensor] = [:]
        let trainedSet = Set(trainedParameterNames)
        func accumulate(_ name: String, _ gradient: Tensor?) {
            guard let gradient, requiresGradient.contains(name) else { return }
            let target = trainedSet.contains(name) ? parameterGradients[name] : gradients[name]
            let sum: Tensor
            if var existing = target {
                existing.withUnsafeMutableBufferPointer { e in
                    gradient.withUnsafeBufferPointer { g in for k in 0..<e.count { e[k] += g[k] } }
                }
                sum = existing
            } else {
                sum = gradient
            }
            if trainedSet.contains(name) { parameterGradients[name] = sum } else { gradients[name] = sum }
        }
        func savedOrParameter(_ name: String) -> Tensor? {
            pass.savedValues[name] ?? parameter(name)
        }
        // Output gradients not formed: the reading pointwise convolution's weight, output gradient
        // and the output gradient's sums per channel (its bias gradient).
        var deferred: [String: (weight: Tensor, outputGradient: Tensor, sums: Tensor)] = [:]
        for position in suffix.indices.reversed() {
            let node = suffix[position]
            if let pending = deferred.removeValue(forKey: node.output), let core = pass.savedCores.removeValue(forKey: node.name),
               case .convolution(let convolution) = node.operation, let weight = parameter(node.inputs[1]) {
                // Small gemms (rank-sized), on one thread like the other low-rank gradients.
                let result = ForwardExecution.withSingleThreadedBLAS {
                    lowRankPointwiseGradients(compressed: core, weightShape: weight.shape, groups: convolution.groups,
                                              nextWeight: pending.weight, nextOutputGradient: pending.outputGradient,
                                              nextOutputSums: pending.sums)
                }
                accumulate(node.inputs[1], result.weight)
                if node.inputs.count > 2 { accumulate(node.inputs[2], result.bias) }
                continue
            }
            guard let dy = gradients.removeValue(forKey: node.output) else { continue }
            if kept.contains(node.output) { valueGradients[node.output] = dy }
            let shapes = pass.inputShapes[position]
            var carries = node.inputs.map { requiresGradient.contains($0) }
            if let layer = trainedByNode[node.name] {
                var outputSums: Tensor?
                if carries[0], deferredGradients.contains(node.inputs[0]), !kept.contains(node.inputs[0]),
                   let weight = parameter(node.inputs[1]) {
                    let sums = conv2dBiasGradient(outputGradient: dy)
                    deferred[node.inputs[0]] = (weight, dy, sums)
                    carries[0] = false
                    outputSums = sums
                }
                let core = pass.savedCores.removeValue(forKey: node.name)
                backwardTrained(node: node, layer: layer, core: core, input: core == nil ? pass.savedValues[node.inputs[0]] : nil,
                                shapes: shapes, carries: carries, dy: dy, outputSums: outputSums, accumulate: accumulate)
            } else if let mask = pass.savedMasks.removeValue(forKey: node.output) {
                accumulate(node.inputs[0], mask.inputGradient(consume dy))
            } else if case .batchNormalization(let epsilon) = node.operation, let scale = savedOrParameter(node.inputs[1]),
                      let variance = savedOrParameter(node.inputs[4]) {
                if carries[1] || carries[2], let input = pass.savedValues[node.inputs[0]], let mean = savedOrParameter(node.inputs[3]) {
                    let result = batchNormalizationGradients(input: input, scale: scale, mean: mean, variance: variance, epsilon: epsilon,
                                                             outputGradient: dy)
                    accumulate(node.inputs[0], result.input)
                    accumulate(node.inputs[1], result.scale)
                    accumulate(node.inputs[2], result.bias)
                } else {
                    accumulate(node.inputs[0], frozenBatchNormalizationInputGradient(consume dy, scale: scale, variance: variance, epsilon: epsilon))
                }
            } else {
                let operands = node.inputs.map { savedOrParameter($0) }
                let output = savedOrParameter(node.output)
                let results = Self.inputGradients(node.operation, operands: operands, shapes: shapes, output: output,
                                                  carries: carries, dy: dy)
                for (name, gradient) in zip(node.inputs, results) { accumulate(name, gradient) }
            }
            // Saved values no longer needed by earlier nodes could be released here; the pass is
            // consumed, so they are freed when it ends.
        }
        for name in kept { if let g = gradients[name] { valueGradients[name] = g } }
        return BackwardResult(parameterGradients: parameterGradients, valueGradients: valueGradients)
    }

    /// `outputSums`: a convolution's `conv2dBiasGradient(outputGradient: dy)` when already computed.
    private func backwardTrained(node: Node, layer: TrainedLayer, core: TuckerCore?, input: Tensor?, shapes: [[Int]],
                                 carries: [Bool], dy: Tensor, outputSums: Tensor? = nil, accumulate: (String, Tensor?) -> Void) {
        let weight = parameter(node.inputs[1]) ?? Tensor(shape: [0])
        let inputShape = shapes[0]
        switch node.operation {
        case .convolution(let convolution):
            let hasBias = node.inputs.count > 2
            let weightGradient: Tensor
            if let core, core.factors.count == 3 {
                weightGradient = unfoldedLowRankWeightGradient(compressed: core, outputGradient: dy, weightShape: weight.shape)
            } else if let core {
                // Small gemms (rank-sized): on one thread, like the projection in `forward`.
                weightGradient = ForwardExecution.withSingleThreadedBLAS {
                    lowRankConv2dWeightGradient(compressed: core, outputGradient: dy, weightShape: weight.shape, convolution: convolution)
                }
            } else {
                weightGradient = conv2dWeightGradient(input: input!, outputGradient: dy, weightShape: weight.shape,
                                                      convolution: convolution)
            }
            accumulate(node.inputs[1], weightGradient)
            if hasBias && requiresGradient.contains(node.inputs[2]) { accumulate(node.inputs[2], outputSums ?? conv2dBiasGradient(outputGradient: dy)) }
            if carries[0] {
                accumulate(node.inputs[0], conv2dInputGradient(outputGradient: dy, weight: weight, inputShape: inputShape,
                                                               convolution: convolution))
            }
        case .gemm, .matMul:
            let parameters: Gemm
            if case .gemm(let gemm) = node.operation { parameters = gemm } else { parameters = Gemm() }
            let biasShape = node.inputs.count > 2 ? shapes[2] : nil
            if let core {
                if carries[0] {
                    let result = lowRankLinearBackward(compressed: core, weight: weight, biasShape: biasShape, parameters: parameters,
                                                       outputGradient: dy)
                    accumulate(node.inputs[0], result.input)
                    accumulate(node.inputs[1], result.weight)
                    if let bias = result.bias { accumulate(node.inputs[2], bias) }
                } else {
                    accumulate(node.inputs[1], lowRankLinearWeightGradient(compressed: core, outputGradient: dy,
                                                                           layout: LinearWeightLayout(gemm: parameters),
                                                                           alpha: parameters.alpha))
                    if let biasShape { accumulate(node.inputs[2], Self.scaled(sumToShape(dy, shape: biasShape), parameters.beta)) }
                }
            } else {
                let x = input!
                let features = x.shape[x.rank - 1]
                let rows = x.count / max(features, 1)
                let outputs = dy.shape[dy.rank - 1]
                let result = gemmGradients(a: x.reshaped(to: [rows, features]), b: weight, cShape: biasShape,
                                           outputGradient: dy.reshaped(to: [rows, outputs]), parameters: parameters)
                accumulate(node.inputs[1], result.b)
                if let bias = result.c { accumulate(node.inputs[2], bias) }
                if carries[0] { accumulate(node.inputs[0], result.a.reshaped(to: inputShape)) }
            }
        default:
            preconditionFailure("a trained layer is a convolution or a linear layer")
        }
    }

    private static func scaled(_ tensor: Tensor, _ factor: Float) -> Tensor {
        if factor == 1 { return tensor }
        var result = tensor
        result.withUnsafeMutableBufferPointer { values in for k in values.indices { values[k] *= factor } }
        return result
    }

    /// The gradients of a non-trained operator's operands (`nil` where no gradient is needed).
    private static func inputGradients(_ operation: Operator, operands: [Tensor?], shapes: [[Int]], output: Tensor?,
                                       carries: [Bool], dy: Tensor) -> [Tensor?] {
        var result = [Tensor?](repeating: nil, count: shapes.count)
        func placeholder(_ index: Int) -> Tensor { operands[index] ?? Tensor(shape: shapes[index]) }
        switch operation {
        case .convolution(let convolution):
            result[0] = conv2dInputGradient(outputGradient: dy, weight: operands[1]!, inputShape: shapes[0], convolution: convolution)
        case .batchNormalization(let epsilon):
            result[0] = frozenBatchNormalizationInputGradient(dy, scale: operands[1]!, variance: operands[4]!, epsilon: epsilon)
        case .activation(let activation):
            if activation.isDifferentiableFromOutput, let output {
                result[0] = activationGradient(activation, output: output, outputGradient: dy)
            } else {
                result[0] = activationGradient(activation, input: operands[0]!, outputGradient: dy)
            }
        case .binary(let op):
            switch op {
            case .add, .subtract:
                if carries[0] { result[0] = sumToShape(dy, shape: shapes[0]) }
                if carries[1] { result[1] = scaled(sumToShape(dy, shape: shapes[1]), op == .subtract ? -1 : 1) }
            case .multiply, .divide:
                let gradients = binaryGradients(placeholder(0), placeholder(1), op, outputGradient: dy)
                result[0] = carries[0] ? gradients.a : nil
                result[1] = carries[1] ? gradients.b : nil
            }
        case .concat(let axis):
            let parts = concatGradients(outputGradient: dy, inputShapes: shapes, axis: axis)
            for index in parts.indices where carries[index] { result[index] = parts[index] }
        case .maxPool(let pooling):
            result[0] = maxPool2dGradient(input: operands[0]!, outputGradient: dy, pooling: pooling)
        case .averagePool(let pooling, let countIncludePad):
            result[0] = averagePool2dGradient(inputShape: shapes[0], outputGradient: dy, pooling: pooling, countIncludePad: countIncludePad)
        case .globalAveragePool:
            result[0] = globalAveragePoolGradient(inputShape: shapes[0], outputGradient: dy)
        case .globalMaxPool:
            result[0] = globalMaxPoolGradient(input: operands[0]!, outputGradient: dy)
        case .flatten, .reshape, .squeeze, .unsqueeze, .identity:
            result[0] = reshapeGradient(outputGradient: dy, inputShape: shapes[0])
        case .transpose(let permutation):
            result[0] = transposeGradient(outputGradient: dy, permutation: permutation)
        case .gemm(let parameters):
            let gradients = gemmGradients(a: placeholder(0), b: placeholder(1), cShape: shapes.count > 2 ? shapes[2] : nil,
                                          outputGradient: dy, parameters: parameters)
            result[0] = carries[0] ? gradients.a : nil
            result[1] = carries[1] ? gradients.b : nil
            if shapes.count > 2 && carries[2] { result[2] = gradients.c }
        case .matMul:
            let gradients = matMulGradients(placeholder(0), placeholder(1), outputGradient: dy)
            result[0] = carries[0] ? gradients.a : nil
            result[1] = carries[1] ? gradients.b : nil
        case .softmax(let axis, let coercedTo2D):
            result[0] = softmaxGradient(output: output!, outputGradient: dy, axis: axis, coercedTo2D: coercedTo2D)
        case .pad(let pads, _, _):
            result[0] = padGradient(outputGradient: dy, pads: pads)
        case .reduceMean(let axes, let keepDimensions):
            result[0] = reduceMeanGradient(inputShape: shapes[0], axes: axes, keepDimensions: keepDimensions, outputGradient: dy)
        }
        for index in result.indices where !carries[index] { result[index] = nil }
        return result
    }

    /// One batch's loss, logits and gradients: `forward`, `softmaxCrossEntropy` (mean over the
    /// batch) and `backward`.
    ///
    /// - Throws: as `forward`, and `.data` when a label is outside `0..<K` or their count differs
    ///   from the batch.
    public func lossAndGradients(images: Tensor, labels: [Int], keepingValueGradients kept: Set<String> = [])
        throws(TrainingError) -> (loss: Float, logits: Tensor, gradients: BackwardResult, memory: BackwardMemory) {
        try lossAndGradients(features: try frozenFeatures(images: images), labels: labels, keepingValueGradients: kept)
    }

    /// `lossAndGradients(images:labels:)` from the frozen part's outputs.
    public func lossAndGradients(features: consuming [String: Tensor], labels: [Int], keepingValueGradients kept: Set<String> = [])
        throws(TrainingError) -> (loss: Float, logits: Tensor, gradients: BackwardResult, memory: BackwardMemory) {
        let pass = try forward(features: consume features)
        let logits = pass.logits
        try Self.checkLabels(labels, logits: logits)
        let (loss, logitsGradient) = softmaxCrossEntropy(logits: logits, labels: labels)
        let memory = pass.memory
        let result = backward(pass, logitsGradient: logitsGradient, keepingValueGradients: kept)
        return (loss, logits, result, memory)
    }

    static func checkLabels(_ labels: [Int], logits: Tensor) throws(TrainingError) {
        guard labels.count == logits.shape[0] else {
            throw .data(reason: "\(labels.count) labels for a batch of \(logits.shape[0]) images")
        }
        let classes = logits.shape[1]
        if let bad = labels.first(where: { $0 < 0 || $0 >= classes }) {
            throw .data(reason: "label \(bad) is outside the model's \(classes) classes; give --classes N to train a new head")
        }
    }
}

/// The input gradient of frozen (inference-form) batch normalization over axis 1:
/// `dX[n, c, …] = dY[n, c, …] · scale[c] / √(variance[c] + ε)` — no saved activation is needed.
func frozenBatchNormalizationInputGradient(_ dy: consuming Tensor, scale: Tensor, variance: Tensor, epsilon: Float) -> Tensor {
    let channels = dy.shape[1]
    let plane = dy.shape.dropFirst(2).reduce(1, *)
    let batch = dy.shape[0]
    let factors = (0..<channels).map { scale.scalars[$0] / (variance.scalars[$0] + epsilon).squareRoot() }
    var result = consume dy  // overwritten in place when the caller handed over its last reference
    result.withUnsafeMutableBufferPointer { g in
        for n in 0..<batch {
            for c in 0..<channels {
                let base = (n * channels + c) * plane
                let factor = factors[c]
                for k in 0..<plane { g[base + k] *= factor }
            }
        }
    }
    return result
}

/// What a piecewise-linear activation keeps for its backward: one bit per element saying on which
/// piece the element lies, 32 times smaller than its float32 input or output.
///
/// | activation | bit set when | `dX` |
/// | --- | --- | --- |
/// | `relu` | `y > 0` | `bit ? dY : 0` |
/// | `clip(min, max)` (ReLU6) | `min < y < max` | `bit ? dY : 0` |
/// | `leakyRelu(α > 0)` | `y > 0` | `bit ? dY : α·dY` |
/// | `hardSigmoid(α > 0, β)` | `0 < y < 1` | `bit ? α·dY : 0` |
///
/// The kink conventions are those of `Activation.derivative(fromOutput:)` (PyTorch's).
struct ActivationMask: Sendable {
    /// The slopes on the two pieces: `(bit clear, bit set)`.
    let slopes: (clear: Float, set: Float)
    let shape: [Int]
    let words: [UInt64]

    /// Whether an activation is stored as a mask.
    static func applies(to activation: Activation) -> Bool {
        switch activation {
        case .relu, .clip: true
        case .leakyRelu(let alpha): alpha > 0
        case .hardSigmoid(let alpha, _): alpha > 0
        default: false
        }
    }

    /// The mask of an activation's output, or `nil` when the activation is not piecewise linear
    /// with two slopes.
    init?(_ activation: Activation, output: Tensor) {
        // The piece boundaries: the bit is set when lower < y and (y < upper or there is no upper
        // bound: ReLU and LeakyReLU count +∞ as on the identity piece).
        let bounds: (lower: Float, upper: Float)
        var unboundedAbove = false
        switch activation {
        case .relu:
            slopes = (0, 1)
            bounds = (0, .infinity)
            unboundedAbove = true
        case .clip(let minimum, let maximum):
            slopes = (0, 1)
            bounds = (minimum, maximum)
        case .leakyRelu(let alpha) where alpha > 0:
            slopes = (alpha, 1)
            bounds = (0, .infinity)
            unboundedAbove = true
        case .hardSigmoid(let alpha, _) where alpha > 0:
            slopes = (0, alpha)
            bounds = (0, 1)
        default:
            return nil
        }
        shape = output.shape
        var words = [UInt64](repeating: 0, count: (output.count + 63) / 64)
        output.withUnsafeBufferPointer { y in
            words.withUnsafeMutableBufferPointer { bits in
                intervalBits(y, lower: bounds.lower, upper: unboundedAbove ? nil : bounds.upper, into: bits)
            }
        }
        self.words = words
    }

    /// Bytes held.
    var bytes: Int { words.count * MemoryLayout<UInt64>.size }

    /// `dX[k] = dY[k] · slope(bit k)`, written over `dy` when the caller hands over its last reference.
    func inputGradient(_ dy: consuming Tensor) -> Tensor {
        precondition(dy.shape == shape, "activation gradient \(dy.shape) for an output of \(shape)")
        let (clear, set) = slopes
        var result = consume dy
        result.withUnsafeMutableBufferPointer { g in
            words.withUnsafeBufferPointer { bits in scaleByBits(g, words: bits, clear: clear, set: set) }
        }
        return result
    }
}
