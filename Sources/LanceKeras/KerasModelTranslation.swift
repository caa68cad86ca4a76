import Foundation
import LanceCore
import LanceModel

/// A Keras model described layer by layer, ready to be written as `.h5` or `.keras`.
struct KerasModelDescription {
    var name: String
    /// In the order Keras lists a functional model's layers (`model.layers`).
    var layers: [KerasLayerDescription]
    var inputs: [KerasTensorReference]
    var outputs: [KerasTensorReference]
}

/// The output of a layer as another layer sees it: the producing layer, which of its calls
/// (a shared layer is called more than once), and the Keras shape without the batch axis.
struct KerasTensorReference {
    var layer: String
    var call: Int = 0
    var shape: [Int]
}

/// One weight variable of a layer, in Keras's layout.
struct KerasWeight {
    /// The variable's name inside its layer (`kernel`, `bias`, `gamma`, ...).
    var variable: String
    var shape: [Int]
    var values: [Float]
}

/// One layer: its class and configuration, the tensors of each call, and its weights in Keras's
/// variable order.
struct KerasLayerDescription {
    var className: String
    var name: String
    /// Configuration entries besides `name`, `trainable` and `dtype`.
    var config: [(String, OrderedJSON)]
    /// Per call (a layer whose weights several nodes share is called once per node), its inputs.
    var calls: [[KerasTensorReference]]
    /// Merge layers (Add, Multiply, Concatenate) take their inputs as one list.
    var takesList: Bool
    var weights: [KerasWeight]
    var trainable: Bool
}

/// Translates the NCHW `Graph` into channels-last Keras layers, inverting every layout change
/// the Keras importer applies: kernels back to HWIO, depthwise kernels to `(kH, kW, C, m)`, the
/// rows of a Dense kernel that reads a flattened image back to Keras's (H, W, C) order.
///
/// Each graph value is tracked with the Keras tensor that holds it and how the two layouts
/// relate (`ValueLayout`). A node without a Keras form is recorded (all of them are reported at
/// once) and translation goes on, so the report is complete.
struct KerasModelTranslator {
    /// How a graph value's elements relate to the Keras tensor that holds it.
    enum ValueLayout: Equatable {
        /// The same array (ranks ≤ 2, or a value already in channels-last order).
        case native
        /// The graph holds `[N, C, H, W]`, Keras holds `[N, H, W, C]`.
        case channelsLast
        /// The graph holds an image flattened in (C, H, W) order, Keras in (H, W, C) order.
        case flattenedImage(height: Int, width: Int, channels: Int)
    }

    struct KerasValue {
        var tensor: KerasTensorReference
        var layout: ValueLayout
    }

    /// Why one node has no Keras form.
    struct NodeFailure: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }

    let graph: Graph
    let path: String
    let parameters: [String: Parameter]
    /// Value shapes at batch size 1 and 2 (to tell the batch axis apart).
    let shapes: [String: [Int]]
    let shapesAtBatchTwo: [String: [Int]]
    let consumers: [String: [Int]]
    let graphOutputs: Set<String>

    var values: [String: KerasValue] = [:]
    var layers: [KerasLayerDescription] = []
    var usedNames = Set<String>()
    var reservedNames = Set<String>()
    var absorbed = Set<Int>()
    /// The layer that holds each weight parameter already exported.
    var layerSharingWeight: [String: Int] = [:]
    var failures: [UnexportableNode] = []

    init(graph: Graph, path: String) throws(KerasError) {
        self.graph = graph
        self.path = path
        parameters = graph.parametersByName
        do {
            shapes = try graph.inferShapes(inputShapes: graph.inputShapes(batchSize: 1))
            shapesAtBatchTwo = try graph.inferShapes(inputShapes: graph.inputShapes(batchSize: 2))
        } catch {
            throw .unexportableGraph(path: path, reason: error.description)
        }
        var consumers: [String: [Int]] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for input in Set(node.inputs) { consumers[input, default: []].append(index) }
        }
        self.consumers = consumers
        graphOutputs = Set(graph.outputs.map(\.name))
        // Names that are already valid Keras layer names stay what they are.
        reservedNames = Set((graph.inputs.map(\.name) + graph.nodes.map(\.name)).filter { Self.isValidLayerName($0) })
    }

    // MARK: - Whole graph

    mutating func translate() throws(KerasError) -> KerasModelDescription {
        var inputs: [KerasTensorReference] = []
        for input in graph.inputs {
            let shape = shapes[input.name] ?? []
            let name = layerName(for: input.name)
            let layout: ValueLayout
            let kerasShape: [Int]
            switch shape.count {
            case 4:
                layout = .channelsLast
                kerasShape = [shape[2], shape[3], shape[1]]
            case 2:
                layout = .native
                kerasShape = [shape[1]]
            default:
                failures.append(UnexportableNode(opType: "input", node: input.name,
                                                 reason: "an input of rank \(shape.count); LANCE exports image [N, C, H, W] and flat [N, F] inputs"))
                layout = .native
                kerasShape = Array(shape.dropFirst())
            }
            layers.append(KerasLayerDescription(className: "InputLayer", name: name,
                                                config: [("batch_shape", .batchShape(kerasShape)), ("sparse", .bool(false)), ("ragged", .bool(false))],
                                                calls: [], takesList: false, weights: [], trainable: true))
            let reference = KerasTensorReference(layer: name, shape: kerasShape)
            values[input.name] = KerasValue(tensor: reference, layout: layout)
            inputs.append(reference)
        }
        for index in graph.nodes.indices where !absorbed.contains(index) {
            let node = graph.nodes[index]
            do {
                try translate(node, at: index)
            } catch {
                failures.append(UnexportableNode(opType: node.operation.opType, node: node.name, reason: error.reason))
                // Carry on with a stand-in so that later nodes are checked too.
                let shape = shapes[node.output] ?? []
                values[node.output] = KerasValue(tensor: KerasTensorReference(layer: "", shape: shape.count == 4 ? [shape[2], shape[3], shape[1]] : Array(shape.dropFirst())),
                                                 layout: shape.count == 4 ? .channelsLast : .native)
            }
        }
        var outputs: [KerasTensorReference] = []
        for output in graph.outputs {
            guard let value = values[output.name] else {
                failures.append(UnexportableNode(opType: "output", node: output.name, reason: "the output is a constant, not computed by a layer"))
                continue
            }
            if case .flattenedImage(let height, let width, let channels) = value.layout, height * width > 1, channels > 1 {
                failures.append(UnexportableNode(opType: "output", node: output.name,
                                                 reason: "a flattened image output: Keras flattens channels-last, so the element order would differ"))
            }
            outputs.append(value.tensor)
        }
        if !failures.isEmpty { throw .unexportableNodes(path: path, nodes: failures) }
        return KerasModelDescription(name: Self.sanitized(graph.name.isEmpty ? "model" : graph.name),
                                     layers: Self.kerasOrder(layers, inputs: inputs, outputs: outputs),
                                     inputs: inputs, outputs: outputs)
    }

    /// The layers reachable from the outputs, in the order Keras's functional models list them
    /// (`keras.src.ops.function.map_graph`: by decreasing depth from the outputs, ties in
    /// depth-first traversal order). Legacy `.h5` weights are matched to layers in this order and
    /// `.keras` weight groups are named by it.
    static func kerasOrder(_ layers: [KerasLayerDescription], inputs: [KerasTensorReference],
                           outputs: [KerasTensorReference]) -> [KerasLayerDescription] {
        struct Call: Hashable {
            var layer: String
            var index: Int
        }
        let byName = Dictionary(layers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        func callInputs(_ call: Call) -> [KerasTensorReference] {
            guard let calls = byName[call.layer]?.calls, call.index < calls.count else { return [] }
            return calls[call.index]
        }
        var traversalIndex: [String: Int] = [:]
        var finished = Set<Call>()
        var postOrder: [Call] = []
        func visit(_ tensor: KerasTensorReference) {
            let call = Call(layer: tensor.layer, index: tensor.call)
            guard !finished.contains(call), byName[tensor.layer] != nil else { return }
            if traversalIndex[tensor.layer] == nil { traversalIndex[tensor.layer] = traversalIndex.count }
            for input in callInputs(call) { visit(input) }
            finished.insert(call)
            postOrder.append(call)
        }
        for output in outputs { visit(output) }
        var callDepths: [Call: Int] = [:]
        var depths: [String: Int] = [:]
        for call in postOrder.reversed() {
            // A shared layer takes the greatest depth of its calls.
            let depth = max(callDepths[call, default: 0], depths[call.layer, default: 0])
            depths[call.layer] = depth
            callDepths[call] = depth
            for input in callInputs(call) {
                let parent = Call(layer: input.layer, index: input.call)
                callDepths[parent] = max(depth + 1, callDepths[parent, default: 0])
            }
        }
        for input in inputs where depths[input.layer] == nil {
            depths[input.layer] = 0
            traversalIndex[input.layer] = -1
        }
        let names = depths.keys.sorted { lhs, rhs in
            let (left, right) = (depths[lhs]!, depths[rhs]!)
            return left != right ? left > right : traversalIndex[lhs]! < traversalIndex[rhs]!
        }
        return names.compactMap { byName[$0] }
    }

    // MARK: - Names

    /// Keras 3 forbids `/` in layer names and its torch backend `.`; letters, digits, `_` and `-`
    /// are safe everywhere.
    static func isValidLayerName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy(isSafe)
    }

    static func isSafe(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || scalar == "_" || scalar == "-")
    }

    static func sanitized(_ name: String) -> String {
        var text = String(String.UnicodeScalarView(name.unicodeScalars.map { isSafe($0) ? $0 : "_" }))
        while text.hasPrefix("_") { text.removeFirst() }
        while text.hasSuffix("_") { text.removeLast() }
        return text.isEmpty ? "layer" : text
    }

    /// A unique Keras layer name for the node (or input) `name`: the name itself when Keras
    /// accepts it (Keras 3 forbids `/`), otherwise a cleaned-up form.
    mutating func layerName(for name: String) -> String {
        if reservedNames.contains(name) && !usedNames.contains(name) {
            usedNames.insert(name)
            return name
        }
        let base = Self.sanitized(name)
        var candidate = base
        var counter = 1
        while usedNames.contains(candidate) || (reservedNames.contains(candidate) && candidate != name) {
            candidate = "\(base)_\(counter)"
            counter += 1
        }
        usedNames.insert(candidate)
        return candidate
    }

    // MARK: - Values

    /// The Keras value of a node input that must be computed (not a constant).
    func value(_ name: String) throws(NodeFailure) -> KerasValue {
        if let value = values[name] { return value }
        if parameters[name] != nil {
            throw NodeFailure("its input '\(name)' is a constant tensor; Keras layers hold constants only as their own weights")
        }
        throw NodeFailure("its input '\(name)' is not computed by any layer")
    }

    func parameter(_ name: String, role: String) throws(NodeFailure) -> Parameter {
        guard let parameter = parameters[name] else {
            throw NodeFailure("its \(role) '\(name)' is computed at run time; Keras layers need it as a weight")
        }
        return parameter
    }

    /// The Keras shape (no batch axis) of a graph value held in `layout`.
    func kerasShape(_ name: String, layout: ValueLayout) -> [Int] {
        let shape = shapes[name] ?? []
        switch layout {
        case .channelsLast where shape.count == 4: return [shape[2], shape[3], shape[1]]
        default: return Array(shape.dropFirst())
        }
    }

    /// Whether a node's output keeps the batch axis first (checked at two batch sizes).
    func keepsBatchAxis(_ name: String) -> Bool {
        shapes[name]?.first == 1 && shapesAtBatchTwo[name]?.first == 2
    }

    /// Adds a layer for `nodeName` called on `inputs` (or another call of the layer that already
    /// holds `sharedWeight`) and records the Keras value of the graph value `output`.
    @discardableResult
    mutating func addLayer(_ className: String, for nodeName: String, config: [(String, OrderedJSON)], inputs: [KerasValue],
                           takesList: Bool = false, weights: [KerasWeight] = [], trainable: Bool = true,
                           output: String?, layout: ValueLayout, kerasShape shape: [Int]? = nil,
                           sharedWeight: String? = nil) -> KerasValue {
        let tensorShape = shape ?? output.map { kerasShape($0, layout: layout) } ?? []
        // A layer whose weight an earlier node already uses, with the same configuration, is that
        // layer called again (Keras's shared layers; the importer names the node `layer:1`).
        if let sharedWeight, let index = layerSharingWeight[sharedWeight], layers[index].className == className,
           OrderedJSON.object(layers[index].config).text == OrderedJSON.object(config).text {
            layers[index].calls.append(inputs.map(\.tensor))
            let value = KerasValue(tensor: KerasTensorReference(layer: layers[index].name, call: layers[index].calls.count - 1, shape: tensorShape),
                                   layout: layout)
            if let output { values[output] = value }
            return value
        }
        let name = layerName(for: nodeName)
        if let sharedWeight { layerSharingWeight[sharedWeight] = layers.count }
        layers.append(KerasLayerDescription(className: className, name: name, config: config, calls: [inputs.map(\.tensor)],
                                            takesList: takesList, weights: weights, trainable: trainable))
        let value = KerasValue(tensor: KerasTensorReference(layer: name, shape: tensorShape), layout: layout)
        if let output { values[output] = value }
        return value
    }

    /// The single consumer of a node's output, when nothing else (not even the graph's outputs)
    /// reads it.
    func soleConsumer(of node: Node) -> (index: Int, node: Node)? {
        guard !graphOutputs.contains(node.output), let readers = consumers[node.output], readers.count == 1,
              !absorbed.contains(readers[0]) else { return nil }
        let reader = graph.nodes[readers[0]]
        return reader.inputs == [node.output] || reader.inputs.first == node.output ? (readers[0], reader) : nil
    }

    /// A Keras activation name for an activation node that can be folded into the preceding
    /// Conv2D / Dense (`activation=`), with the node it absorbs.
    func foldableActivation(after node: Node, layout: ValueLayout) -> (name: String, index: Int, output: String)? {
        guard let (index, reader) = soleConsumer(of: node), reader.inputs == [node.output] else { return nil }
        switch reader.operation {
        case .activation(let activation):
            guard let name = Self.activationName(activation) else { return nil }
            return (name, index, reader.output)
        case .softmax(let axis, let coerced):
            guard softmaxIsOverLastKerasAxis(axis: axis, coerced: coerced, input: node.output, layout: layout) else { return nil }
            return ("softmax", index, reader.output)
        default:
            return nil
        }
    }

    /// The name of a Keras activation function computing `activation` (as the importer reads it).
    static func activationName(_ activation: Activation) -> String? {
        switch activation {
        case .relu: "relu"
        case .clip(let minimum, let maximum) where minimum == 0 && maximum == 6: "relu6"
        case .clip(let minimum, let maximum) where minimum == 0 && maximum == .infinity: "relu"
        case .sigmoid: "sigmoid"
        case .tanh: "tanh"
        case .hardSigmoid(let alpha, let beta) where alpha == 1 / 6 && beta == 0.5: "hard_sigmoid"
        case .hardSwish: "hard_swish"
        case .leakyRelu(let alpha) where alpha == 0.2: "leaky_relu"
        default: nil
        }
    }

    func softmaxIsOverLastKerasAxis(axis: Int, coerced: Bool, input: String, layout: ValueLayout) -> Bool {
        let rank = shapes[input]?.count ?? 0
        let resolved = axis < 0 ? axis + rank : axis
        if coerced && resolved != rank - 1 { return false }
        switch layout {
        case .channelsLast: return rank == 4 && resolved == 1
        case .native, .flattenedImage: return resolved == rank - 1 && rank >= 2
        }
    }

    // MARK: - Nodes

    mutating func translate(_ node: Node, at index: Int) throws(NodeFailure) {
        switch node.operation {
        case .convolution(let convolution):
            try translateConvolution(node, convolution)
        case .batchNormalization(let epsilon):
            try translateBatchNormalization(node, epsilon: epsilon)
        case .activation(let activation):
            try translateActivation(node, activation)
        case .softmax(let axis, let coerced):
            let input = try value(node.inputs[0])
            guard softmaxIsOverLastKerasAxis(axis: axis, coerced: coerced, input: node.inputs[0], layout: input.layout) else {
                throw NodeFailure("softmax over axis \(axis) is not over Keras's last (channels) axis")
            }
            addLayer("Activation", for: node.name, config: [("activation", .string("softmax"))], inputs: [input],
                     output: node.output, layout: input.layout)
        case .binary(let op):
            try translateBinary(node, op, at: index)
        case .concat(let axis):
            try translateConcat(node, axis: axis)
        case .maxPool(let pooling):
            try translatePooling(node, pooling, className: "MaxPooling2D", countIncludePad: false)
        case .averagePool(let pooling, let countIncludePad):
            try translatePooling(node, pooling, className: "AveragePooling2D", countIncludePad: countIncludePad)
        case .globalAveragePool:
            try translateGlobalPooling(node, className: "GlobalAveragePooling2D")
        case .globalMaxPool:
            try translateGlobalPooling(node, className: "GlobalMaxPooling2D")
        case .reduceMean(let axes, let keepDimensions):
            let input = try value(node.inputs[0])
            let rank = shapes[node.inputs[0]]?.count ?? 0
            let resolved = Set((axes ?? []).map { $0 < 0 ? $0 + rank : $0 })
            guard input.layout == .channelsLast, rank == 4, resolved == [2, 3] else {
                throw NodeFailure("a mean over axes \(axes.map { "\($0)" } ?? "all") of a rank-\(rank) value; only the mean over an image's height and width (GlobalAveragePooling2D) has a Keras layer")
            }
            addLayer("GlobalAveragePooling2D", for: node.name, config: [("data_format", .string("channels_last")), ("keepdims", .bool(keepDimensions))],
                     inputs: [input], output: node.output, layout: keepDimensions ? .channelsLast : .native)
        case .flatten(let axis):
            try translateFlatten(node, axis: axis)
        case .reshape:
            try translateReshape(node)
        case .transpose(let permutation):
            let input = try value(node.inputs[0])
            let rank = shapes[node.inputs[0]]?.count ?? 0
            if input.layout == .channelsLast && rank == 4 && permutation == [0, 2, 3, 1] {
                values[node.output] = KerasValue(tensor: input.tensor, layout: .native)  // Keras already holds NHWC
            } else if input.layout == .native && rank == 4 && permutation == [0, 3, 1, 2] {
                values[node.output] = KerasValue(tensor: input.tensor, layout: .channelsLast)
            } else {
                throw NodeFailure("a transpose \(permutation.map { "\($0)" } ?? "reversing the axes") other than between NCHW and NHWC; Keras's Permute layer is not among the layers LANCE reads back")
            }
        case .gemm(let gemm):
            guard gemm.alpha == 1, !gemm.transposeA, node.inputs.count < 3 || gemm.beta == 1 else {
                throw NodeFailure("Gemm with alpha \(gemm.alpha), beta \(gemm.beta), transA \(gemm.transposeA); Dense computes x·W + b only")
            }
            try translateDense(node, transposedKernel: gemm.transposeB, biasName: node.inputs.count > 2 ? node.inputs[2] : nil)
        case .matMul:
            try translateDense(node, transposedKernel: false, biasName: nil)
        case .identity:
            values[node.output] = try value(node.inputs[0])
        case .pad(let pads, let mode, let padValue):
            let input = try value(node.inputs[0])
            guard mode == .constant, padValue == 0, input.layout == .channelsLast, pads.count == 8,
                  pads[0] == 0, pads[1] == 0, pads[4] == 0, pads[5] == 0, pads.allSatisfy({ $0 >= 0 }) else {
                throw NodeFailure("only zero padding of an image's height and width has a Keras layer (ZeroPadding2D); this pads \(pads) in \(mode.rawValue) mode with \(padValue)")
            }
            addLayer("ZeroPadding2D", for: node.name,
                     config: [("padding", .array([.integers([pads[2], pads[6]]), .integers([pads[3], pads[7]])])),
                              ("data_format", .string("channels_last"))],
                     inputs: [input], output: node.output, layout: .channelsLast)
        case .squeeze(let axes):
            let input = try value(node.inputs[0])
            let shape = shapes[node.inputs[0]] ?? []
            let resolved = Set((axes ?? []).map { $0 < 0 ? $0 + shape.count : $0 })
            guard input.layout == .channelsLast, shape.count == 4, shape[2] == 1, shape[3] == 1, axes == nil || resolved == [2, 3] else {
                throw NodeFailure("only squeezing the 1×1 spatial axes of an image has a Keras form (Flatten)")
            }
            addLayer("Flatten", for: node.name, config: [("data_format", .string("channels_last"))], inputs: [input],
                     output: node.output, layout: .native)
        case .unsqueeze:
            throw NodeFailure("Keras has no layer inserting axes that LANCE reads back")
        }
    }

    mutating func translateConvolution(_ node: Node, _ convolution: Convolution) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let inputShape = shapes[node.inputs[0]] ?? []
        guard input.layout == .channelsLast, inputShape.count == 4 else {
            throw NodeFailure("a convolution of a value Keras does not hold as an image [N, H, W, C]")
        }
        let weight = try parameter(node.inputs[1], role: "kernel")
        let bias = node.inputs.count > 2 ? try parameter(node.inputs[2], role: "bias") : nil
        let window = convolution.window
        guard window.kernelSize.count == 2, weight.tensor.rank == 4 else { throw NodeFailure("only 2-D convolutions have a Keras layer") }
        if window.strides.contains(where: { $0 > 1 }) && window.dilations.contains(where: { $0 > 1 }) {
            throw NodeFailure("Keras does not combine strides > 1 with dilation > 1")
        }
        let (channels, filters) = (inputShape[1], weight.tensor.shape[0])
        let (kernelHeight, kernelWidth, channelsPerGroup) = (weight.tensor.shape[2], weight.tensor.shape[3], weight.tensor.shape[1])
        let source = try paddedInput(node, input: input, window: window, inputShape: inputShape, use: .zeros)
        var config: [(String, OrderedJSON)] = []
        var weights: [KerasWeight] = []
        let className: String
        if convolution.groups > 1 && convolution.groups == channels && channelsPerGroup == 1 {
            className = "DepthwiseConv2D"
            let multiplier = filters / channels
            // The importer's (kH, kW, C·m) → (C·m, kH, kW) change, undone.
            let change = LayoutChange(sourceShape: [kernelHeight, kernelWidth, channels * multiplier], permutation: [2, 0, 1])
            weights.append(KerasWeight(variable: "kernel", shape: [kernelHeight, kernelWidth, channels, multiplier],
                                       values: change.invert(weight.tensor.scalars)))
            config.append(("depth_multiplier", .integer(multiplier)))
        } else {
            className = "Conv2D"
            // The importer's HWIO → OIHW change, undone.
            let change = LayoutChange(sourceShape: [kernelHeight, kernelWidth, channelsPerGroup, filters], permutation: [3, 2, 0, 1])
            weights.append(KerasWeight(variable: "kernel", shape: change.sourceShape, values: change.invert(weight.tensor.scalars)))
            config.append(("filters", .integer(filters)))
        }
        config += [("kernel_size", .integers(window.kernelSize)), ("strides", .integers(window.strides)), ("padding", .string(source.padding)),
                   ("data_format", .string("channels_last")), ("dilation_rate", .integers(window.dilations))]
        if className == "Conv2D" { config.append(("groups", .integer(convolution.groups))) }
        if let bias {
            weights.append(KerasWeight(variable: "bias", shape: [bias.tensor.count], values: bias.tensor.scalars))
        }
        let activation = foldableActivation(after: node, layout: .channelsLast)
        config += [("activation", .string(activation?.name ?? "linear")), ("use_bias", .bool(bias != nil))]
        if let activation { absorbed.insert(activation.index) }
        addLayer(className, for: node.name, config: config, inputs: [source.value], weights: weights,
                 trainable: weight.trainable || bias?.trainable == true, output: activation?.output ?? node.output, layout: .channelsLast,
                 sharedWeight: weight.name)
    }

    /// How an operation's padding can be expressed in Keras.
    enum PaddingUse {
        /// Convolution: zeros, so a ZeroPadding2D layer can stand in for any explicit padding.
        case zeros
        /// Max pooling (pads with −∞) and average pooling that leaves padding out: only none or
        /// Keras's own `same`.
        case noneOrSame
        /// Average pooling that counts the padding: a ZeroPadding2D layer, never `same`.
        case countedZeros
    }

    /// The Keras padding mode for a window operation, inserting a ZeroPadding2D layer first when
    /// the graph's explicit padding is neither none nor Keras's `same` (Keras's `same` puts an odd
    /// extra pixel at the end, as SAME_UPPER).
    mutating func paddedInput(_ node: Node, input: KerasValue, window: WindowGeometry, inputShape: [Int],
                              use: PaddingUse) throws(NodeFailure) -> (value: KerasValue, padding: String) {
        let (height, width) = (inputShape[2], inputShape[3])
        let pads = window.resolvedPadding(height: height, width: width)
        var same = window
        same.padding = .sameUpper
        let samePads = same.resolvedPadding(height: height, width: width)
        if pads == (0, 0, 0, 0) { return (input, "valid") }
        if pads == samePads && use != .countedZeros { return (input, "same") }
        guard use != .noneOrSame, pads.top >= 0, pads.left >= 0, pads.bottom >= 0, pads.right >= 0 else {
            throw NodeFailure("padding (top \(pads.top), left \(pads.left), bottom \(pads.bottom), right \(pads.right)) is neither none nor Keras's 'same'")
        }
        let padded = addLayer("ZeroPadding2D", for: node.name + "_pad",
                              config: [("padding", .array([.integers([pads.top, pads.bottom]), .integers([pads.left, pads.right])])),
                                       ("data_format", .string("channels_last"))],
                              inputs: [input], output: nil, layout: .channelsLast,
                              kerasShape: [height + pads.top + pads.bottom, width + pads.left + pads.right, inputShape[1]])
        return (padded, "valid")
    }

    mutating func translateBatchNormalization(_ node: Node, epsilon: Float) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let rank = shapes[node.inputs[0]]?.count ?? 0
        let axis: Int
        switch input.layout {
        case .channelsLast: axis = -1
        case .native where rank == 2: axis = -1
        case .native: throw NodeFailure("normalizes axis 1 of a rank-\(rank) value Keras holds channels-last")
        case .flattenedImage(let height, let width, let channels) where height * width == 1 || channels == 1: axis = -1
        case .flattenedImage: throw NodeFailure("normalizes a flattened image per feature; Keras flattens channels-last, so the features are in another order")
        }
        guard node.inputs.count == 5 else { throw NodeFailure("BatchNormalization needs scale, bias, mean and variance") }
        let gamma = try parameter(node.inputs[1], role: "scale"), beta = try parameter(node.inputs[2], role: "bias")
        let mean = try parameter(node.inputs[3], role: "mean"), variance = try parameter(node.inputs[4], role: "variance")
        // A scale or bias the importer made up (Keras's scale=False / center=False) is left out again.
        let scale = !(gamma.synthesized && gamma.tensor.scalars.allSatisfy { $0 == 1 })
        let center = !(beta.synthesized && beta.tensor.scalars.allSatisfy { $0 == 0 })
        var weights: [KerasWeight] = []
        if scale { weights.append(KerasWeight(variable: "gamma", shape: [gamma.tensor.count], values: gamma.tensor.scalars)) }
        if center { weights.append(KerasWeight(variable: "beta", shape: [beta.tensor.count], values: beta.tensor.scalars)) }
        weights.append(KerasWeight(variable: "moving_mean", shape: [mean.tensor.count], values: mean.tensor.scalars))
        weights.append(KerasWeight(variable: "moving_variance", shape: [variance.tensor.count], values: variance.tensor.scalars))
        let trainable = (scale && gamma.trainable) || (center && beta.trainable) || (!scale && !center)
        addLayer("BatchNormalization", for: node.name,
                 config: [("axis", .integer(axis)), ("momentum", .number(0.99)), ("epsilon", .number(epsilon)),
                          ("center", .bool(center)), ("scale", .bool(scale))],
                 inputs: [input], weights: weights, trainable: trainable, output: node.output, layout: input.layout,
                 sharedWeight: mean.name)
    }

    mutating func translateActivation(_ node: Node, _ activation: Activation) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let className: String
        let config: [(String, OrderedJSON)]
        switch activation {
        case .clip(let minimum, let maximum) where minimum == 0 && maximum.isFinite:
            className = "ReLU"
            config = [("max_value", .number(maximum)), ("negative_slope", .number(0)), ("threshold", .number(0))]
        case .clip(let minimum, let maximum) where minimum != 0:
            throw NodeFailure("Clip(\(minimum), \(maximum)): Keras's ReLU clips from 0 only")
        case .leakyRelu(let alpha):
            className = "LeakyReLU"
            config = [("negative_slope", .number(alpha))]
        case .thresholdedReLU(let threshold, let negativeSlope, let maximum):
            className = "ReLU"
            config = [("max_value", maximum.isFinite ? .number(maximum) : .null), ("negative_slope", .number(negativeSlope)),
                      ("threshold", .number(threshold))]
        case .hardSigmoid(let alpha, let beta) where Self.activationName(activation) == nil:
            throw NodeFailure("HardSigmoid(alpha \(alpha), beta \(beta)): Keras 3's hard_sigmoid is relu6(x + 3) / 6 (alpha 1/6, beta 0.5)")
        default:
            guard let name = Self.activationName(activation) else { throw NodeFailure("no Keras activation computes \(activation)") }
            className = "Activation"
            config = [("activation", .string(name))]
        }
        addLayer(className, for: node.name, config: config, inputs: [input], output: node.output, layout: input.layout)
    }

    mutating func translateBinary(_ node: Node, _ op: BinaryOperator, at index: Int) throws(NodeFailure) {
        let (left, right) = (node.inputs[0], node.inputs[1])
        if values[left] != nil && values[right] != nil {
            let (a, b) = (try value(left), try value(right))
            guard a.layout == b.layout else { throw NodeFailure("its operands are held in different layouts by Keras") }
            let shapeA = shapes[left] ?? [], shapeB = shapes[right] ?? []
            guard shapeA.count == shapeB.count else { throw NodeFailure("its operands have different ranks (\(shapeA.count), \(shapeB.count))") }
            let className: String
            switch op {
            case .add: className = "Add"
            case .multiply: className = "Multiply"
            case .subtract, .divide:
                throw NodeFailure("\(op.opType) of two computed values; Keras's Subtract / Divide are not among the layers LANCE reads back")
            }
            addLayer(className, for: node.name, config: [], inputs: [a, b], takesList: true, output: node.output, layout: a.layout)
            return
        }
        // One operand a constant: only a scalar has a Keras form (Rescaling: x · scale + offset).
        let constantFirst = parameters[left] != nil && values[left] == nil
        let (dataName, constantName) = constantFirst ? (right, left) : (left, right)
        let data = try value(dataName)
        guard let constant = parameters[constantName], constant.tensor.count == 1 else {
            throw NodeFailure("\(op.opType) with a per-element constant '\(constantName)'; Keras has a layer only for a scalar (Rescaling)")
        }
        let c = constant.tensor.scalars[0]
        var scale: Float = 1, offset: Float = 0, output = node.output, layerNode = node.name
        switch (op, constantFirst) {
        case (.multiply, _):
            scale = c
            // x · s followed by + o is one Rescaling (what the importer makes of one).
            if let (next, reader) = soleConsumer(of: node), case .binary(let nextOp) = reader.operation, nextOp == .add || nextOp == .subtract,
               let other = reader.inputs.first(where: { $0 != node.output }), reader.inputs.count == 2,
               let addend = parameters[other], values[other] == nil, addend.tensor.count == 1,
               nextOp == .add || reader.inputs[0] == node.output {
                offset = nextOp == .add ? addend.tensor.scalars[0] : -addend.tensor.scalars[0]
                output = reader.output
                layerNode = reader.name
                absorbed.insert(next)
            }
        case (.add, _): offset = c
        case (.subtract, false): offset = -c
        case (.subtract, true):
            scale = -1
            offset = c
        case (.divide, _):
            throw NodeFailure("division by a constant; Rescaling multiplies, and 1/c is not exact")
        }
        guard scale.isFinite, offset.isFinite else { throw NodeFailure("a constant that is not finite") }
        addLayer("Rescaling", for: layerNode, config: [("scale", .number(scale)), ("offset", .number(offset))], inputs: [data],
                 output: output, layout: data.layout)
    }

    mutating func translateConcat(_ node: Node, axis: Int) throws(NodeFailure) {
        var inputs: [KerasValue] = []
        for name in node.inputs { inputs.append(try value(name)) }
        guard let layout = inputs.first?.layout, inputs.allSatisfy({ $0.layout == layout }) else {
            throw NodeFailure("its inputs are held in different layouts by Keras")
        }
        let rank = shapes[node.inputs[0]]?.count ?? 0
        let resolved = axis < 0 ? axis + rank : axis
        let kerasAxis: Int
        switch layout {
        case .channelsLast: kerasAxis = resolved == 1 ? -1 : resolved - 1
        case .native: kerasAxis = resolved == rank - 1 ? -1 : resolved
        case .flattenedImage: throw NodeFailure("joins flattened images; Keras flattens channels-last, so the element order would differ")
        }
        guard resolved > 0 else { throw NodeFailure("joins along the batch axis") }
        addLayer("Concatenate", for: node.name, config: [("axis", .integer(kerasAxis))], inputs: inputs, takesList: true,
                 output: node.output, layout: layout)
    }

    mutating func translatePooling(_ node: Node, _ pooling: Pooling, className: String, countIncludePad: Bool) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let inputShape = shapes[node.inputs[0]] ?? []
        guard input.layout == .channelsLast, inputShape.count == 4 else { throw NodeFailure("pools a value Keras does not hold as an image") }
        let window = pooling.window
        guard window.dilations.allSatisfy({ $0 == 1 }) else { throw NodeFailure("dilated pooling has no Keras layer") }
        if pooling.ceilMode {
            let (height, width) = (inputShape[2], inputShape[3])
            guard window.outputSize(height: height, width: width, ceilMode: true) == window.outputSize(height: height, width: width) else {
                throw NodeFailure("ceil_mode adds a partial window; Keras pooling rounds down")
            }
        }
        let source = try paddedInput(node, input: input, window: window, inputShape: inputShape,
                                     use: className == "AveragePooling2D" && countIncludePad ? .countedZeros : .noneOrSame)
        addLayer(className, for: node.name,
                 config: [("pool_size", .integers(window.kernelSize)), ("strides", .integers(window.strides)),
                          ("padding", .string(source.padding)), ("data_format", .string("channels_last"))],
                 inputs: [source.value], output: node.output, layout: .channelsLast)
    }

    mutating func translateGlobalPooling(_ node: Node, className: String) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let inputShape = shapes[node.inputs[0]] ?? []
        guard input.layout == .channelsLast, inputShape.count == 4 else { throw NodeFailure("pools a value Keras does not hold as an image") }
        // Pooling then flattening [N, C, 1, 1] to [N, C] is one layer with keepdims=False.
        if let (index, reader) = soleConsumer(of: node), shapes[reader.output] == [1, inputShape[1]], keepsBatchAxis(reader.output) {
            switch reader.operation {
            case .flatten, .reshape, .squeeze:
                absorbed.insert(index)
                addLayer(className, for: reader.name, config: [("data_format", .string("channels_last")), ("keepdims", .bool(false))],
                         inputs: [input], output: reader.output, layout: .native)
                return
            default: break
            }
        }
        addLayer(className, for: node.name, config: [("data_format", .string("channels_last")), ("keepdims", .bool(true))],
                 inputs: [input], output: node.output, layout: .channelsLast)
    }

    /// The layout of an image `[C, H, W]` flattened by Keras: the same order as the graph's when
    /// only one of channels and positions has more than one element.
    static func flattenedLayout(channels: Int, height: Int, width: Int) -> ValueLayout {
        height * width == 1 || channels == 1 ? .native : .flattenedImage(height: height, width: width, channels: channels)
    }

    mutating func translateFlatten(_ node: Node, axis: Int) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let shape = shapes[node.inputs[0]] ?? []
        guard axis == 1 || (axis == -(shape.count - 1) && shape.count > 1) else {
            throw NodeFailure("Flatten at axis \(axis); Keras's Flatten keeps only the batch axis")
        }
        switch input.layout {
        case .channelsLast:
            addLayer("Flatten", for: node.name, config: [("data_format", .string("channels_last"))], inputs: [input],
                     output: node.output, layout: Self.flattenedLayout(channels: shape[1], height: shape[2], width: shape[3]))
        case .native where shape.count <= 2, .flattenedImage:
            values[node.output] = input
        case .native:
            addLayer("Flatten", for: node.name, config: [("data_format", .string("channels_last"))], inputs: [input],
                     output: node.output, layout: .native)
        }
    }

    mutating func translateReshape(_ node: Node) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let inputShape = shapes[node.inputs[0]] ?? [], outputShape = shapes[node.output] ?? []
        guard keepsBatchAxis(node.output), keepsBatchAxis(node.inputs[0]) || graph.inputs.contains(where: { $0.name == node.inputs[0] }) else {
            throw NodeFailure("a reshape that moves the batch axis")
        }
        let target = Array(outputShape.dropFirst())
        switch input.layout {
        case .channelsLast where outputShape.count == 2:
            // The graph's (C, H, W) order, as a Flatten.
            addLayer("Flatten", for: node.name, config: [("data_format", .string("channels_last"))], inputs: [input],
                     output: node.output, layout: Self.flattenedLayout(channels: inputShape[1], height: inputShape[2], width: inputShape[3]))
        case .channelsLast:
            throw NodeFailure("a reshape of an image to \(outputShape); Keras holds the image channels-last")
        case .flattenedImage(let height, let width, let channels):
            guard target == [channels, height, width] else {
                guard outputShape.count == 2 else { throw NodeFailure("a reshape of a flattened image to \(outputShape)") }
                values[node.output] = input
                return
            }
            // Back to the image: Keras's flat tensor is in (H, W, C) order.
            addLayer("Reshape", for: node.name, config: [("target_shape", .integers([height, width, channels]))], inputs: [input],
                     output: node.output, layout: .channelsLast)
        case .native:
            addLayer("Reshape", for: node.name, config: [("target_shape", .integers(target))], inputs: [input],
                     output: node.output, layout: .native)
        }
    }

    mutating func translateDense(_ node: Node, transposedKernel: Bool, biasName: String?) throws(NodeFailure) {
        let input = try value(node.inputs[0])
        let inputShape = shapes[node.inputs[0]] ?? []
        guard inputShape.count == 2 else { throw NodeFailure("a matrix product of a rank-\(inputShape.count) value; Dense here takes [N, features]") }
        let weight = try parameter(node.inputs[1], role: "weight")
        guard weight.tensor.rank == 2 else { throw NodeFailure("a weight of rank \(weight.tensor.rank)") }
        var kernel = weight.tensor
        if transposedKernel {
            let (rows, columns) = (kernel.shape[0], kernel.shape[1])
            kernel = Tensor(shape: [columns, rows], scalars: LayoutChange(sourceShape: [rows, columns], permutation: [1, 0]).apply(to: kernel.scalars))
        }
        let (features, units) = (kernel.shape[0], kernel.shape[1])
        var values = kernel.scalars
        if case .flattenedImage(let height, let width, let channels) = input.layout {
            // The importer's (H, W, C) → (C, H, W) row permutation, undone.
            values = LayoutChange(sourceShape: [height, width, channels, units], permutation: [2, 0, 1, 3]).invert(values)
        }
        var weights = [KerasWeight(variable: "kernel", shape: [features, units], values: values)]
        var trainable = weight.trainable
        if let biasName {
            let bias = try parameter(biasName, role: "bias")
            guard bias.tensor.count == units, bias.tensor.shape.last == units else {
                throw NodeFailure("a bias of shape \(bias.tensor.shape); Dense adds one value per unit [\(units)]")
            }
            weights.append(KerasWeight(variable: "bias", shape: [units], values: bias.tensor.scalars))
            trainable = trainable || bias.trainable
        }
        let activation = foldableActivation(after: node, layout: .native)
        if let activation { absorbed.insert(activation.index) }
        addLayer("Dense", for: node.name,
                 config: [("units", .integer(units)), ("activation", .string(activation?.name ?? "linear")), ("use_bias", .bool(biasName != nil))],
                 inputs: [input], weights: weights, trainable: trainable, output: activation?.output ?? node.output, layout: .native,
                 sharedWeight: weight.name)
    }
}
