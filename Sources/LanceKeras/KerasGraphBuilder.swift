import LanceCore
import LanceHDF5
import LanceModel

/// Translates a parsed Keras architecture plus its weights into the NCHW `Graph`.
///
/// Keras computes channels-last (NHWC); the graph computes channels-first (NCHW). Every value of
/// rank ≥ 3 is therefore held channels-first, Keras axes are mapped (`kerasAxis`), kernels are
/// permuted to OIHW, and a Flatten keeps NCHW order while the Dense layers reading it get their
/// kernel rows permuted from (H, W, C) to (C, H, W) order. Where a flattened value reaches any
/// other layer, it is re-ordered explicitly (transpose, then flatten) so results stay exact.
struct KerasGraphBuilder {
    let path: String
    let kerasMajorVersion: Int
    let store: WeightStore

    var nodes: [Node] = []
    var parameters: [Parameter] = []
    var parameterNames = Set<String>()
    var shapes: [String: [Int]] = [:]
    var valueNames = Set<String>()
    var inputs: [ValueInfo] = []
    /// Legacy weights of nested models, distributed to their layers (key: layer path joined by "/").
    var distributedWeights: [String: [WeightArray]] = [:]

    /// A value flowing between layers.
    struct Value {
        var name: String
        /// `[H, W, C]` when this is the NCHW-ordered flatten of an image that Keras flattens in
        /// (H, W, C) order.
        var flattenedFrom: [Int]?
    }

    init(path: String, kerasMajorVersion: Int, store: WeightStore) {
        self.path = path
        self.kerasMajorVersion = kerasMajorVersion
        self.store = store
    }

    // MARK: - Model

    mutating func build(model: LayerSpec) throws(KerasError) -> Graph {
        guard model.isContainer else {
            throw .invalidArchitecture(path: path, reason: "the top level is a \(model.className), not a Sequential or Functional model")
        }
        var outputs: [Value]
        if model.isSequential {
            let input = try graphInput(for: model)
            outputs = try run(model, inputs: [input], scope: [])
        } else {
            var graphInputs: [Value] = []
            for reference in model.inputs {
                guard let layer = model.sublayers?.first(where: { $0.name == reference.layer }) else {
                    throw .invalidArchitecture(path: path, reason: "input layer '\(reference.layer)' is not among the layers")
                }
                graphInputs.append(try graphInput(for: layer))
            }
            outputs = try run(model, inputs: graphInputs, scope: [])
        }
        var outputInfos: [ValueInfo] = []
        for output in outputs {
            var value = try kerasOrdered(output)
            if let shape = shapes[value.name], shape.count >= 3 {
                // Image-shaped outputs are returned channels-last, as Keras returns them.
                value = Value(name: try append(.transpose(permutation: [0] + Array(2..<shape.count) + [1]),
                                               inputs: [value.name], name: value.name + "/channels_last", layer: value.name))
            }
            outputInfos.append(ValueInfo(name: value.name, dimensions: nil))
        }
        return Graph(name: model.name, inputs: inputs, outputs: outputInfos, nodes: nodes, parameters: parameters,
                     provenance: Provenance(sourceFormat: "keras", producer: "Keras", formatVersion: ""))
    }

    /// The graph input an InputLayer (or a Sequential model's declared input shape) describes.
    private mutating func graphInput(for spec: LayerSpec) throws(KerasError) -> Value {
        var layer = spec
        var name = spec.name
        if spec.isSequential, let first = spec.sublayers?.first {
            layer = first
            name = first.className == "InputLayer" ? first.name : "input"
        }
        let declared = layer.shape("batch_shape") ?? layer.shape("batch_input_shape") ?? spec.shape("build_input_shape")
        guard let declared, declared.count >= 2, declared.dropFirst().allSatisfy({ $0 != nil }) else {
            throw .invalidLayer(path: path, layer: name, reason: "the input shape is not declared; LANCE needs every axis but the batch")
        }
        let keras = declared.dropFirst().map { $0 ?? 1 }
        let channelsFirst = keras.count >= 3 ? [keras[keras.count - 1]] + keras.dropLast() : keras
        name = unique(name)
        inputs.append(ValueInfo(name: name, dimensions: [.symbolic("N")] + channelsFirst.map { .fixed($0) }))
        shapes[name] = [1] + channelsFirst
        return Value(name: name)
    }

    /// Runs a Sequential or Functional container on `inputs`, returning its outputs.
    private mutating func run(_ container: LayerSpec, inputs: [Value], scope: [String]) throws(KerasError) -> [Value] {
        let layers = container.sublayers ?? []
        let frozen = !container.bool("trainable", default: true)
        if container.isSequential {
            guard var current = inputs.first, inputs.count == 1 else {
                throw .invalidLayer(path: path, layer: container.name, reason: "a Sequential model takes one input")
            }
            for layer in layers where layer.className != "InputLayer" {
                current = try call(layer, inputs: [current], scope: scope, callIndex: 0, frozen: frozen).first ?? current
            }
            return [current]
        }
        var values: [TensorReference: Value] = [:]
        guard container.inputs.count == inputs.count else {
            throw .invalidLayer(path: path, layer: container.name, reason: "expects \(container.inputs.count) inputs, got \(inputs.count)")
        }
        for (reference, value) in zip(container.inputs, inputs) { values[reference] = value }
        var pending = layers.filter { $0.className != "InputLayer" }.flatMap { layer in layer.calls.indices.map { (layer, $0) } }
        while !pending.isEmpty {
            var remaining: [(LayerSpec, Int)] = []
            for (layer, callIndex) in pending {
                let references = layer.calls[callIndex]
                guard references.allSatisfy({ values[$0] != nil }) else {
                    remaining.append((layer, callIndex))
                    continue
                }
                let outputs = try call(layer, inputs: references.compactMap { values[$0] }, scope: scope, callIndex: callIndex, frozen: frozen)
                for (index, output) in outputs.enumerated() {
                    values[TensorReference(layer: layer.name, node: callIndex, tensor: index)] = output
                }
            }
            if remaining.count == pending.count {
                throw .invalidLayer(path: path, layer: remaining[0].0.name,
                                    reason: "its inputs (\(remaining[0].0.calls[remaining[0].1].map(\.layer).joined(separator: ", "))) are never computed")
            }
            pending = remaining
        }
        return try container.outputs.map { (reference: TensorReference) throws(KerasError) -> Value in
            guard let value = values[reference] else {
                throw .invalidLayer(path: path, layer: reference.layer, reason: "model output is never computed")
            }
            return value
        }
    }

    /// One call of a layer (a nested model is run inline).
    private mutating func call(_ layer: LayerSpec, inputs: [Value], scope: [String], callIndex: Int, frozen: Bool) throws(KerasError) -> [Value] {
        if layer.isContainer {
            return try run(layer, inputs: inputs, scope: scope + [layer.name])
        }
        let layerPath = scope + [layer.name]
        let nodeName = layerPath.joined(separator: "/") + (callIndex > 0 ? ":\(callIndex)" : "")
        return [try convert(layer, inputs: inputs, nodeName: nodeName, layerPath: layerPath,
                            trainable: !frozen && layer.bool("trainable", default: true))]
    }

    // MARK: - Weights

    /// The weight arrays of a layer, in Keras's variable order.
    mutating func weights(_ layerPath: [String], expected: Int, layer: String) throws(KerasError) -> [WeightArray] {
        var arrays: [WeightArray]
        switch store {
        case .legacy(let root):
            if layerPath.count == 1 {
                arrays = try WeightStore.legacyArrays(root, layer: layerPath[0], path: path)
            } else {
                arrays = distributedWeights[layerPath.joined(separator: "/")] ?? []
            }
        case .objectTree(let root):
            var container = root
            for name in layerPath.dropLast() {
                guard let group = try WeightStore.objectTreeArrays(container, layer: name, path: path).group else {
                    throw .invalidWeights(path: path, layer: layer, reason: "no weights for nested model '\(name)'")
                }
                container = group
            }
            arrays = try WeightStore.objectTreeArrays(container, layer: layerPath[layerPath.count - 1], path: path).arrays
        }
        guard arrays.count == expected else {
            throw .invalidWeights(path: path, layer: layer, reason: "expected \(expected) weight arrays, the file has \(arrays.count)")
        }
        return arrays
    }

    /// For legacy files: splits a nested model's weight list (all trainable arrays of its layers,
    /// then all non-trainable ones) among its layers.
    mutating func distributeLegacyWeights(of model: LayerSpec) throws(KerasError) {
        guard case .legacy(let root) = store else { return }
        for top in model.sublayers ?? [] where top.isContainer {
            let flat = try WeightStore.legacyArrays(root, layer: top.name, path: path)
            var leaves: [(path: [String], trainable: Int, nonTrainable: Int)] = []
            func collect(_ container: LayerSpec, _ prefix: [String], frozen: Bool) {
                for layer in container.sublayers ?? [] {
                    let layerFrozen = frozen || !layer.bool("trainable", default: true)
                    if layer.isContainer {
                        collect(layer, prefix + [layer.name], frozen: layerFrozen)
                    } else {
                        let (trainable, nonTrainable) = Self.variableCounts(layer)
                        leaves.append(layerFrozen ? (prefix + [layer.name], 0, trainable + nonTrainable)
                                                  : (prefix + [layer.name], trainable, nonTrainable))
                    }
                }
            }
            collect(top, [top.name], frozen: !top.bool("trainable", default: true))
            let trainableTotal = leaves.reduce(0) { $0 + $1.trainable }
            let total = trainableTotal + leaves.reduce(0) { $0 + $1.nonTrainable }
            guard flat.count == total else {
                throw .invalidWeights(path: path, layer: top.name, reason: "expected \(total) weight arrays for the nested model, the file has \(flat.count)")
            }
            var trainableOffset = 0, nonTrainableOffset = trainableTotal
            for leaf in leaves {
                distributedWeights[leaf.path.joined(separator: "/")] =
                    Array(flat[trainableOffset..<(trainableOffset + leaf.trainable)])
                    + Array(flat[nonTrainableOffset..<(nonTrainableOffset + leaf.nonTrainable)])
                trainableOffset += leaf.trainable
                nonTrainableOffset += leaf.nonTrainable
            }
        }
    }

    /// How many trainable and non-trainable variables a layer creates.
    static func variableCounts(_ layer: LayerSpec) -> (Int, Int) {
        let bias = layer.bool("use_bias", default: true) ? 1 : 0
        switch layer.className {
        case "Conv2D", "Dense", "DepthwiseConv2D": return (1 + bias, 0)
        case "SeparableConv2D": return (2 + bias, 0)
        case "BatchNormalization":
            return ((layer.bool("scale", default: true) ? 1 : 0) + (layer.bool("center", default: true) ? 1 : 0), 2)
        default: return (0, 0)
        }
    }

    mutating func addParameter(_ name: String, _ tensor: Tensor, trainable: Bool, layoutChange: LayoutChange? = nil,
                               synthesized: Bool = false) -> String {
        if !parameterNames.contains(name) {
            parameterNames.insert(name)
            parameters.append(Parameter(name: name, tensor: tensor, trainable: trainable, layoutChange: layoutChange,
                                        synthesized: synthesized))
            shapes[name] = tensor.shape
        }
        return name
    }

    // MARK: - Nodes

    mutating func unique(_ name: String) -> String {
        var candidate = name
        var counter = 1
        while valueNames.contains(candidate) || parameterNames.contains(candidate) {
            candidate = "\(name)_\(counter)"
            counter += 1
        }
        valueNames.insert(candidate)
        return candidate
    }

    /// Appends a node computing `operation` and returns its output name; shapes are checked.
    mutating func append(_ operation: Operator, inputs: [String], name: String, layer: String) throws(KerasError) -> String {
        let output = unique(name)
        let operandShapes = inputs.map { shapes[$0] ?? [] }
        do {
            shapes[output] = try operation.outputShape(inputs: operandShapes)
        } catch {
            throw .invalidLayer(path: path, layer: layer, reason: error.reason)
        }
        nodes.append(Node(name: output, operation: operation, inputs: inputs, output: output))
        return output
    }

    /// A flattened value in Keras's (H, W, C) element order (inserting the re-ordering nodes when
    /// the value was flattened channels-first).
    mutating func kerasOrdered(_ value: Value) throws(KerasError) -> Value {
        guard let hwc = value.flattenedFrom else { return value }
        let image = try append(.reshape(shape: [0, hwc[2], hwc[0], hwc[1]], allowZero: false), inputs: [value.name],
                               name: value.name + "/image", layer: value.name)
        let channelsLast = try append(.transpose(permutation: [0, 2, 3, 1]), inputs: [image], name: value.name + "/channels_last", layer: value.name)
        return Value(name: try append(.flatten(axis: 1), inputs: [channelsLast], name: value.name + "/keras_order", layer: value.name))
    }

    /// The graph axis of a Keras (channels-last) axis for a value of rank `rank`.
    func graphAxis(_ axis: Int, rank: Int) -> Int {
        let resolved = axis < 0 ? axis + rank : axis
        guard rank >= 3, resolved > 0 else { return resolved }
        return resolved == rank - 1 ? 1 : resolved + 1
    }
}
