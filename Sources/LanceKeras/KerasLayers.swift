import LanceCore
import LanceModel

extension KerasGraphBuilder {
    /// Layer classes the importer translates.
    static let supportedClasses: Set<String> = [
        "InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization", "Activation",
        "ReLU", "LeakyReLU", "Add", "Multiply", "Concatenate", "MaxPooling2D", "AveragePooling2D",
        "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Reshape", "Dropout",
        "ZeroPadding2D", "Rescaling", "Sequential", "Functional", "Model",
    ]

    /// Translates one call of a leaf layer.
    mutating func convert(_ layer: LayerSpec, inputs: [Value], nodeName: String, layerPath: [String],
                          trainable: Bool) throws(KerasError) -> Value {
        let name = layer.name
        func fail(_ reason: String) -> KerasError { .invalidLayer(path: path, layer: name, reason: reason) }
        if let format = layer.string("data_format"), format != "channels_last" {
            throw fail("data_format '\(format)' is not supported; LANCE imports channels_last models")
        }
        guard let first = inputs.first else { throw fail("the layer is called without inputs") }
        let parameterPrefix = layerPath.joined(separator: "/")
        switch layer.className {
        case "Conv2D", "DepthwiseConv2D", "SeparableConv2D":
            return try convolution(layer, input: try kerasOrdered(first), nodeName: nodeName, layerPath: layerPath, trainable: trainable)
        case "Dense":
            let units = layer.int("units") ?? 0
            let useBias = layer.bool("use_bias", default: true)
            let arrays = try weights(layerPath, expected: useBias ? 2 : 1, layer: name)
            guard let inputShape = shapes[first.name], inputShape.count == 2 else {
                throw fail("Dense on a tensor of rank \(shapes[first.name]?.count ?? 0) is not supported; LANCE needs a flat [batch, features] input")
            }
            guard arrays[0].shape == [inputShape[1], units] else {
                throw .invalidWeights(path: path, layer: name, reason: "kernel has shape \(arrays[0].shape), expected [\(inputShape[1]), \(units)]")
            }
            var kernel = Tensor(shape: arrays[0].shape, scalars: arrays[0].values)
            var change: LayoutChange?
            if let hwc = first.flattenedFrom {
                // Rows in Keras's (H, W, C) order → the graph's (C, H, W) order.
                let layout = LayoutChange(sourceShape: hwc + [units], permutation: [2, 0, 1, 3])
                kernel = Tensor(shape: arrays[0].shape, scalars: layout.apply(to: arrays[0].values))
                change = layout
            }
            var operands = [first.name, addParameter(parameterPrefix + "/kernel", kernel, trainable: trainable, layoutChange: change)]
            if useBias {
                guard arrays[1].shape == [units] else {
                    throw .invalidWeights(path: path, layer: name, reason: "bias has shape \(arrays[1].shape), expected [\(units)]")
                }
                operands.append(addParameter(parameterPrefix + "/bias", Tensor(shape: [units], scalars: arrays[1].values), trainable: trainable))
            }
            let output = try append(.gemm(Gemm()), inputs: operands, name: nodeName, layer: name)
            return try activation(layer.string("activation") ?? "linear", Value(name: output), nodeName: nodeName, layer: name)
        case "BatchNormalization":
            return try batchNormalization(layer, input: try kerasOrdered(first), nodeName: nodeName, layerPath: layerPath, trainable: trainable)
        case "Activation":
            return try activation(layer.string("activation") ?? "linear", try kerasOrdered(first), nodeName: nodeName, layer: name, standalone: true)
        case "ReLU":
            let maximum = layer.float("max_value")
            let slope = layer.float("negative_slope") ?? 0
            let threshold = layer.float("threshold") ?? 0
            let function: Activation
            if threshold == 0 && slope == 0 {
                function = maximum.map { .clip(minimum: 0, maximum: $0) } ?? .relu
            } else if threshold == 0 && maximum == nil {
                function = .leakyRelu(alpha: slope)
            } else {
                function = .thresholdedReLU(threshold: threshold, negativeSlope: slope, maximum: maximum ?? .infinity)
            }
            return Value(name: try append(.activation(function), inputs: [try kerasOrdered(first).name], name: nodeName, layer: name))
        case "LeakyReLU":
            let slope = layer.float("negative_slope") ?? layer.float("alpha") ?? 0.3
            return Value(name: try append(.activation(.leakyRelu(alpha: slope)), inputs: [try kerasOrdered(first).name], name: nodeName, layer: name))
        case "Add", "Multiply":
            guard inputs.count >= 2 else { throw fail("needs at least two inputs") }
            let op: BinaryOperator = layer.className == "Add" ? .add : .multiply
            var current = try kerasOrdered(first).name
            for (index, other) in inputs.dropFirst().enumerated() {
                let stepName = index == inputs.count - 2 ? nodeName : "\(nodeName)/\(index)"
                current = try append(.binary(op), inputs: [current, try kerasOrdered(other).name], name: stepName, layer: name)
            }
            return Value(name: current)
        case "Concatenate":
            var operands: [String] = []
            for input in inputs { operands.append(try kerasOrdered(input).name) }
            let rank = shapes[operands[0]]?.count ?? 0
            let axis = graphAxis(layer.int("axis") ?? -1, rank: rank)
            return Value(name: try append(.concat(axis: axis), inputs: operands, name: nodeName, layer: name))
        case "MaxPooling2D", "AveragePooling2D":
            guard let size = layer.pair("pool_size") else { throw fail("pool_size is missing") }
            let window = WindowGeometry(kernelSize: size, strides: layer.pair("strides") ?? size,
                                        padding: try padding(layer))
            let operation: Operator = layer.className == "MaxPooling2D" ? .maxPool(Pooling(window: window))
                : .averagePool(Pooling(window: window), countIncludePad: false)
            return Value(name: try append(operation, inputs: [try kerasOrdered(first).name], name: nodeName, layer: name))
        case "GlobalAveragePooling2D", "GlobalMaxPooling2D":
            let operation: Operator = layer.className == "GlobalAveragePooling2D" ? .globalAveragePool : .globalMaxPool
            if layer.bool("keepdims", default: false) {
                return Value(name: try append(operation, inputs: [try kerasOrdered(first).name], name: nodeName, layer: name))
            }
            let pooled = try append(operation, inputs: [try kerasOrdered(first).name], name: nodeName + "/pool", layer: name)
            return Value(name: try append(.flatten(axis: 1), inputs: [pooled], name: nodeName, layer: name))
        case "Flatten":
            let input = try kerasOrdered(first)
            let shape = shapes[input.name] ?? []
            let output = try append(.flatten(axis: 1), inputs: [input.name], name: nodeName, layer: name)
            if shape.count == 4 {
                return Value(name: output, flattenedFrom: [shape[2], shape[3], shape[1]])
            }
            if shape.count > 4 { throw fail("flattening a tensor of rank \(shape.count) is not supported") }
            return Value(name: output)
        case "Reshape":
            guard let target = layer.shape("target_shape"), target.allSatisfy({ $0 != nil }) else {
                throw fail("target_shape is missing")
            }
            var input = try kerasOrdered(first).name
            let rank = shapes[input]?.count ?? 0
            if rank >= 3 {
                input = try append(.transpose(permutation: [0] + Array(2..<rank) + [1]), inputs: [input], name: nodeName + "/channels_last", layer: name)
            }
            let targetRank = target.count + 1
            let reshapeName = targetRank >= 3 ? nodeName + "/reshape" : nodeName
            var output = try append(.reshape(shape: [0] + target.map { $0 ?? -1 }, allowZero: false), inputs: [input], name: reshapeName, layer: name)
            if targetRank >= 3 {
                output = try append(.transpose(permutation: [0, targetRank - 1] + Array(1..<(targetRank - 1))), inputs: [output], name: nodeName, layer: name)
            }
            return Value(name: output)
        case "Dropout":
            return first  // inference: identity
        case "ZeroPadding2D":
            let pads = try zeroPadding(layer)
            return Value(name: try append(.pad(pads: [0, 0, pads[0], pads[2], 0, 0, pads[1], pads[3]], mode: .constant, value: 0),
                                          inputs: [try kerasOrdered(first).name], name: nodeName, layer: name))
        case "Rescaling":
            guard let scale = layer.float("scale") else { throw fail("only scalar scale and offset are supported") }
            let offset = layer.float("offset") ?? 0
            let input = try kerasOrdered(first).name
            let scaleName = addParameter(parameterPrefix + "/scale", Tensor(scalar: scale), trainable: false, synthesized: true)
            let scaled = try append(.binary(.multiply), inputs: [input, scaleName], name: offset == 0 ? nodeName : nodeName + "/scale", layer: name)
            if offset == 0 { return Value(name: scaled) }
            let offsetName = addParameter(parameterPrefix + "/offset", Tensor(scalar: offset), trainable: false, synthesized: true)
            return Value(name: try append(.binary(.add), inputs: [scaled, offsetName], name: nodeName, layer: name))
        default:
            throw fail("layer class \(layer.className) is not supported")
        }
    }

    private func padding(_ layer: LayerSpec) throws(KerasError) -> AutoPad {
        switch layer.string("padding") ?? "valid" {
        case "valid": return .valid
        case "same": return .sameUpper  // Keras puts the odd extra pixel at the end
        case let other: throw .invalidLayer(path: path, layer: layer.name, reason: "padding '\(other)' is not supported")
        }
    }

    /// `[top, bottom, left, right]` of a ZeroPadding2D (given as n, (h, w) or ((t, b), (l, r))).
    private func zeroPadding(_ layer: LayerSpec) throws(KerasError) -> [Int] {
        if let single = layer.int("padding") { return [single, single, single, single] }
        if let list = layer.config["padding"]?.array {
            let flat = list.compactMap(\.integer)
            if flat.count == 2 { return [flat[0], flat[0], flat[1], flat[1]] }
            let nested = list.compactMap { $0.array?.compactMap(\.integer) }
            if nested.count == 2, nested.allSatisfy({ $0.count == 2 }) { return nested[0] + nested[1] }
        }
        throw .invalidLayer(path: path, layer: layer.name, reason: "padding must be n, (h, w) or ((top, bottom), (left, right))")
    }

    private mutating func convolution(_ layer: LayerSpec, input: Value, nodeName: String, layerPath: [String],
                                      trainable: Bool) throws(KerasError) -> Value {
        let name = layer.name
        let prefix = layerPath.joined(separator: "/")
        guard let kernelSize = layer.pair("kernel_size"), let channels = shapes[input.name].flatMap({ $0.count == 4 ? $0[1] : nil }) else {
            throw .invalidLayer(path: path, layer: name, reason: "needs a kernel_size and an image input [batch, H, W, C]")
        }
        let window = WindowGeometry(kernelSize: kernelSize, strides: layer.pair("strides") ?? [1, 1],
                                    dilations: layer.pair("dilation_rate") ?? [1, 1], padding: try padding(layer))
        let useBias = layer.bool("use_bias", default: true)
        let (kh, kw) = (kernelSize[0], kernelSize[1])
        func expect(_ array: WeightArray, _ shape: [Int], _ role: String) throws(KerasError) {
            guard array.shape == shape else {
                throw .invalidWeights(path: path, layer: name, reason: "\(role) has shape \(array.shape), expected \(shape)")
            }
        }
        /// Depthwise kernel (kH, kW, C, multiplier) → OIHW (C·multiplier, 1, kH, kW).
        func depthwiseKernel(_ array: WeightArray, multiplier: Int, role: String) throws(KerasError) -> String {
            try expect(array, [kh, kw, channels, multiplier], role)
            let layout = LayoutChange(sourceShape: [kh, kw, channels * multiplier], permutation: [2, 0, 1])
            return addParameter("\(prefix)/\(role)", Tensor(shape: [channels * multiplier, 1, kh, kw], scalars: layout.apply(to: array.values)),
                                trainable: trainable, layoutChange: layout)
        }
        /// Ordinary kernel HWIO → OIHW.
        func kernel(_ array: WeightArray, shape: [Int], role: String) throws(KerasError) -> String {
            try expect(array, shape, role)
            let layout = LayoutChange(sourceShape: shape, permutation: [3, 2, 0, 1])
            return addParameter("\(prefix)/\(role)", Tensor(shape: layout.permutedShape, scalars: layout.apply(to: array.values)),
                                trainable: trainable, layoutChange: layout)
        }
        func bias(_ array: WeightArray, count: Int) throws(KerasError) -> String {
            try expect(array, [count], "bias")
            return addParameter("\(prefix)/bias", Tensor(shape: [count], scalars: array.values), trainable: trainable)
        }
        var output: String
        switch layer.className {
        case "Conv2D":
            let filters = layer.int("filters") ?? 0
            let groups = layer.int("groups") ?? 1
            guard groups >= 1, channels % groups == 0 else {
                throw .invalidLayer(path: path, layer: name, reason: "groups \(groups) does not divide \(channels) input channels")
            }
            let arrays = try weights(layerPath, expected: useBias ? 2 : 1, layer: name)
            var operands = [input.name, try kernel(arrays[0], shape: [kh, kw, channels / groups, filters], role: "kernel")]
            if useBias { operands.append(try bias(arrays[1], count: filters)) }
            output = try append(.convolution(Convolution(window: window, groups: groups)), inputs: operands, name: nodeName, layer: name)
        case "DepthwiseConv2D":
            let multiplier = layer.int("depth_multiplier") ?? 1
            let arrays = try weights(layerPath, expected: useBias ? 2 : 1, layer: name)
            var operands = [input.name, try depthwiseKernel(arrays[0], multiplier: multiplier, role: "depthwise_kernel")]
            if useBias { operands.append(try bias(arrays[1], count: channels * multiplier)) }
            output = try append(.convolution(Convolution(window: window, groups: channels)), inputs: operands, name: nodeName, layer: name)
        default:  // SeparableConv2D: depthwise, then a 1×1 convolution with the bias
            let multiplier = layer.int("depth_multiplier") ?? 1
            let filters = layer.int("filters") ?? 0
            let arrays = try weights(layerPath, expected: useBias ? 3 : 2, layer: name)
            let depthwise = try append(.convolution(Convolution(window: window, groups: channels)),
                                       inputs: [input.name, try depthwiseKernel(arrays[0], multiplier: multiplier, role: "depthwise_kernel")],
                                       name: nodeName + "/depthwise", layer: name)
            var operands = [depthwise, try kernel(arrays[1], shape: [1, 1, channels * multiplier, filters], role: "pointwise_kernel")]
            if useBias { operands.append(try bias(arrays[2], count: filters)) }
            output = try append(.convolution(Convolution(window: WindowGeometry(kernelSize: [1, 1]))), inputs: operands, name: nodeName, layer: name)
        }
        return try activation(layer.string("activation") ?? "linear", Value(name: output), nodeName: nodeName, layer: name)
    }

    private mutating func batchNormalization(_ layer: LayerSpec, input: Value, nodeName: String, layerPath: [String],
                                             trainable: Bool) throws(KerasError) -> Value {
        let name = layer.name
        let prefix = layerPath.joined(separator: "/")
        guard let shape = shapes[input.name], shape.count >= 2 else {
            throw .invalidLayer(path: path, layer: name, reason: "needs an input with a channel axis")
        }
        let axes = layer.config["axis"]?.array?.compactMap(\.integer) ?? [layer.int("axis") ?? -1]
        guard axes.count == 1, graphAxis(axes[0], rank: shape.count) == 1 else {
            throw .invalidLayer(path: path, layer: name, reason: "only normalization over the channel axis is supported (axis \(axes))")
        }
        let channels = shape[1]
        let scale = layer.bool("scale", default: true), center = layer.bool("center", default: true)
        let arrays = try weights(layerPath, expected: (scale ? 1 : 0) + (center ? 1 : 0) + 2, layer: name)
        for array in arrays where array.shape != [channels] {
            throw .invalidWeights(path: path, layer: name, reason: "a weight has shape \(array.shape), expected [\(channels)]")
        }
        var index = 0
        func next(_ role: String, present: Bool, fill: Float, trainable: Bool) -> String {
            guard present else {
                // Keras has no such variable (scale=False / center=False): a fixed 1 or 0.
                return addParameter("\(prefix)/\(role)", Tensor(shape: [channels], repeating: fill), trainable: false, synthesized: true)
            }
            defer { index += 1 }
            return addParameter("\(prefix)/\(role)", Tensor(shape: [channels], scalars: arrays[index].values), trainable: trainable)
        }
        let operands = [input.name, next("gamma", present: scale, fill: 1, trainable: trainable),
                        next("beta", present: center, fill: 0, trainable: trainable),
                        next("moving_mean", present: true, fill: 0, trainable: false),
                        next("moving_variance", present: true, fill: 1, trainable: false)]
        let epsilon = layer.float("epsilon") ?? 1e-3
        return Value(name: try append(.batchNormalization(epsilon: epsilon), inputs: operands, name: nodeName, layer: name))
    }

    /// A Keras activation by name, as nodes after `input` (none for `linear`).
    mutating func activation(_ function: String, _ input: Value, nodeName: String, layer: String,
                             standalone: Bool = false) throws(KerasError) -> Value {
        let name = standalone ? nodeName : nodeName + "/activation"
        let simple: Activation?
        switch function {
        case "linear": return input
        case "relu": simple = .relu
        case "relu6": simple = .clip(minimum: 0, maximum: 6)
        case "sigmoid": simple = .sigmoid
        case "tanh": simple = .tanh
        case "hard_sigmoid":
            // Keras 3: relu6(x + 3) / 6; Keras 2: clip(0.2·x + 0.5, 0, 1).
            simple = .hardSigmoid(alpha: kerasMajorVersion >= 3 ? 1 / 6 : 0.2, beta: 0.5)
        case "hard_swish", "hard_silu": simple = .hardSwish
        case "leaky_relu": simple = .leakyRelu(alpha: 0.2)
        case "softmax":
            let rank = shapes[input.name]?.count ?? 2
            return Value(name: try append(.softmax(axis: graphAxis(-1, rank: rank), coercedTo2D: false), inputs: [input.name], name: name, layer: layer))
        case "swish", "silu":
            let gate = try append(.activation(.sigmoid), inputs: [input.name], name: name + "/sigmoid", layer: layer)
            return Value(name: try append(.binary(.multiply), inputs: [input.name, gate], name: name, layer: layer))
        default:
            throw .invalidLayer(path: path, layer: layer, reason: "activation '\(function)' is not supported")
        }
        return Value(name: try append(.activation(simple ?? .relu), inputs: [input.name], name: name, layer: layer))
    }
}
