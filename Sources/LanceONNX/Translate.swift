import LanceCore
import LanceModel

extension GraphBuilder {
    /// Translates one node into graph nodes, or into a folded constant.
    mutating func translate(_ c: inout NodeContext) throws(ONNXError) {
        let a = c.attributes
        switch c.opType {
        case "Constant":
            constants[c.output] = try constantValue(c)
            return
        case "Shape":
            guard let name = c.input(0) else { throw c.fail("a required input is missing") }
            let shape: (batch1: [Int], batch2: [Int])
            if runtime[name] == nil, let constant = constants[name] {
                shape = (constant.shape, constant.shape)
            } else {
                guard let known = runtime[try data(name, c)] ?? nil else {
                    throw c.fail("needs the static shape of '\(name)', which the model does not declare")
                }
                shape = known
            }
            let rank = shape.batch1.count
            func clamp(_ value: Int) -> Int { min(max(value < 0 ? value + rank : value, 0), rank) }
            let start = clamp(try a.int("start", default: 0)), end = clamp(try a.int("end", default: rank))
            let range = start..<max(start, end)
            constants[c.output] = Folded(shape: [range.count], integers: Array(shape.batch1[range]), atBatch2: Array(shape.batch2[range]))
            return
        default:
            break
        }
        if allConstant(c), let folded = try fold(c) {
            constants[c.output] = folded
            return
        }
        switch c.opType {
        case "Conv":
            let weightName = try data(c.input(1), c, trainable: true)
            guard let weight = parameters[weightName]?.tensor.shape ?? (runtime[weightName] ?? nil)?.batch1, weight.count == 4 else {
                throw c.fail("only 2-D convolution (a 4-D weight) is supported")
            }
            var inputs = [try data(c.input(0), c), weightName]
            if let bias = c.input(2) { inputs.append(try data(bias, c, trainable: true)) }
            let window = try windowGeometry(c, kernel: Array(weight[2...]))
            try append(.convolution(Convolution(window: window, groups: try a.int("group", default: 1))), inputs: inputs, c)
        case "BatchNormalization":
            if try a.int("training_mode", default: 0) != 0 {
                throw c.fail("training_mode=1 (batch statistics) is not supported; export the model in eval mode")
            }
            if opset < 9, try a.int("spatial", default: 1) != 1 { throw c.fail("spatial=0 is not supported") }
            let inputs = [try data(c.input(0), c), try data(c.input(1), c, trainable: true), try data(c.input(2), c, trainable: true),
                          try data(c.input(3), c), try data(c.input(4), c)]
            try append(.batchNormalization(epsilon: try a.float("epsilon", default: 1e-5)), inputs: inputs, c)
        case "Relu": try activation(.relu, c)
        case "Sigmoid": try activation(.sigmoid, c)
        case "Tanh": try activation(.tanh, c)
        case "HardSwish": try activation(.hardSwish, c)
        case "LeakyRelu": try activation(.leakyRelu(alpha: try a.float("alpha", default: 0.01)), c)
        case "HardSigmoid":
            try activation(.hardSigmoid(alpha: try a.float("alpha", default: 0.2), beta: try a.float("beta", default: 0.5)), c)
        case "Clip":
            let minimum: Float, maximum: Float
            if opset < 11 {
                minimum = try a.float("min", default: -.greatestFiniteMagnitude)
                maximum = try a.float("max", default: .greatestFiniteMagnitude)
            } else {
                minimum = try scalar(1, c) ?? -.infinity
                maximum = try scalar(2, c) ?? .infinity
            }
            try activation(.clip(minimum: minimum, maximum: maximum), c)
        case "Add", "Sub", "Mul", "Div":
            let op: BinaryOperator = ["Add": .add, "Sub": .subtract, "Mul": .multiply, "Div": .divide][c.opType] ?? .add
            try append(.binary(op), inputs: [try data(c.input(0), c), try data(c.input(1), c)], c)
        case "Concat":
            guard let axis = try a.ints("axis")?.first else { throw c.fail("attribute 'axis' is required") }
            var inputs: [String] = []
            for index in c.inputs.indices where c.input(index) != nil { inputs.append(try data(c.input(index), c)) }
            try append(.concat(axis: axis), inputs: inputs, c)
        case "MaxPool", "AveragePool":
            guard let kernel = try a.ints("kernel_shape") else { throw c.fail("attribute 'kernel_shape' is required") }
            guard kernel.count == 2 else { throw c.fail("only 2-D pooling is supported; kernel_shape is \(kernel)") }
            if try a.int("storage_order", default: 0) != 0 { throw c.fail("storage_order=1 is not supported") }
            let pooling = Pooling(window: try windowGeometry(c, kernel: kernel), ceilMode: try a.int("ceil_mode", default: 0) != 0)
            let operation: Operator = c.opType == "MaxPool" ? .maxPool(pooling)
                : .averagePool(pooling, countIncludePad: try a.int("count_include_pad", default: 0) != 0)
            try append(operation, inputs: [try data(c.input(0), c)], c)
        case "GlobalAveragePool": try append(.globalAveragePool, inputs: [try data(c.input(0), c)], c)
        case "GlobalMaxPool": try append(.globalMaxPool, inputs: [try data(c.input(0), c)], c)
        case "Flatten": try append(.flatten(axis: try a.int("axis", default: 1)), inputs: [try data(c.input(0), c)], c)
        case "Reshape":
            let input = try data(c.input(0), c)
            guard let target = try constant(1, c) else { throw c.fail("input 'shape' is required") }
            let allowZero = try a.int("allowzero", default: 0) != 0
            try append(.reshape(shape: try reshapeTarget(target, input: input, c), allowZero: allowZero), inputs: [input], c)
        case "Transpose": try append(.transpose(permutation: try a.ints("perm")), inputs: [try data(c.input(0), c)], c)
        case "Gemm":
            let gemm = Gemm(alpha: try a.float("alpha", default: 1), beta: try a.float("beta", default: 1),
                            transposeA: try a.int("transA", default: 0) != 0, transposeB: try a.int("transB", default: 0) != 0)
            var inputs = [try data(c.input(0), c), try data(c.input(1), c, trainable: true)]
            if let bias = c.input(2) { inputs.append(try data(bias, c, trainable: true)) }
            try append(.gemm(gemm), inputs: inputs, c)
        case "MatMul":
            try append(.matMul, inputs: [try data(c.input(0), c), try data(c.input(1), c, trainable: true)], c)
        case "Softmax":
            try append(.softmax(axis: try a.int("axis", default: opset < 13 ? 1 : -1), coercedTo2D: opset < 13),
                       inputs: [try data(c.input(0), c)], c)
        case "Dropout":
            // Opset 12+: a true `training_mode` input drops random elements (none when the ratio is 0).
            if opset >= 12, let training = try scalar(2, c), training != 0, try scalar(1, c) ?? 0.5 != 0 {
                throw c.fail("training_mode=1 drops random elements, which LANCE does not do; export the model in eval mode")
            }
            try append(.identity, inputs: [try data(c.input(0), c)], c)
        case "Identity":
            try append(.identity, inputs: [try data(c.input(0), c)], c)
        case "Cast":
            // Run-time data is float32, so a Cast to FLOAT changes nothing; other targets need other types.
            let target = try a.int("to", default: 0)
            guard target == Int(ElementType.float.rawValue) else {
                throw c.fail("Cast to \(ElementType.name(of: Int32(truncatingIfNeeded: target))) is supported only on constant and shape values; on data computed at run time only Cast to FLOAT is (LANCE computes float32)")
            }
            try append(.identity, inputs: [try data(c.input(0), c)], c)
        case "Pad":
            try translatePad(c)
        case "Squeeze", "Unsqueeze":
            let axes = opset < 13 ? try a.ints("axes") : try integers(1, c)
            let input = try data(c.input(0), c)
            if c.opType == "Squeeze" {
                try append(.squeeze(axes: axes), inputs: [input], c)
            } else {
                guard let axes else { throw c.fail("axes are required") }
                try append(.unsqueeze(axes: axes), inputs: [input], c)
            }
        case "ReduceMean":
            var axes = opset < 18 ? try a.ints("axes") : try integers(1, c)
            if opset >= 18, axes?.isEmpty ?? true, try a.int("noop_with_empty_axes", default: 0) != 0 {
                try append(.identity, inputs: [try data(c.input(0), c)], c)
                return
            }
            if axes?.isEmpty == true { axes = nil }
            try append(.reduceMean(axes: axes, keepDimensions: try a.int("keepdims", default: 1) != 0),
                       inputs: [try data(c.input(0), c)], c)
        case "Gather", "Slice":
            throw c.fail("\(c.opType) is supported only on constant and shape values, not on data computed at run time")
        default:
            throw c.fail("not implemented")
        }
    }

    private mutating func activation(_ function: Activation, _ c: NodeContext) throws(ONNXError) {
        try append(.activation(function), inputs: [try data(c.input(0), c)], c)
    }

    private func windowGeometry(_ c: NodeContext, kernel: [Int]) throws(ONNXError) -> WindowGeometry {
        let a = c.attributes
        if let declared = try a.ints("kernel_shape"), declared != kernel {
            throw c.fail("kernel_shape \(declared) does not match the weight's kernel \(kernel)")
        }
        let rank = kernel.count
        let strides = try a.ints("strides") ?? [Int](repeating: 1, count: rank)
        let dilations = try a.ints("dilations") ?? [Int](repeating: 1, count: rank)
        let autoPad = try a.string("auto_pad", default: "NOTSET")
        let padding: AutoPad
        switch autoPad {
        case "NOTSET":
            let pads = try a.ints("pads") ?? [Int](repeating: 0, count: 2 * rank)
            guard pads.count == 4 else { throw c.fail("pads \(pads) must have four entries [top, left, bottom, right]") }
            padding = .explicit(top: pads[0], left: pads[1], bottom: pads[2], right: pads[3])
        case "VALID": padding = .valid
        case "SAME_UPPER": padding = .sameUpper
        case "SAME_LOWER": padding = .sameLower
        default: throw c.fail("auto_pad '\(autoPad)' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
        }
        guard strides.count == rank, dilations.count == rank else {
            throw c.fail("strides \(strides) and dilations \(dilations) must have \(rank) entries")
        }
        return WindowGeometry(kernelSize: kernel, strides: strides, dilations: dilations, padding: padding)
    }

    private mutating func translatePad(_ c: NodeContext) throws(ONNXError) {
        let a = c.attributes
        let modeName = try a.string("mode", default: "constant")
        guard let mode = PadMode(rawValue: modeName) else { throw c.fail("pad mode '\(modeName)' is not supported") }
        let input = try data(c.input(0), c)
        var pads: [Int]
        var value: Float = 0
        if opset < 11 {
            guard let attribute = try a.ints("pads") else { throw c.fail("attribute 'pads' is required") }
            pads = attribute
            value = try a.float("value", default: 0)
        } else {
            guard let padsInput = try integers(1, c) else { throw c.fail("input 'pads' is required") }
            pads = padsInput
            value = try scalar(2, c) ?? 0
            if let axes = try integers(3, c) {
                // Pads given for some axes only: spread them over all axes.
                guard let rank = (runtime[input] ?? nil)?.batch1.count ?? parameters[input]?.tensor.rank else {
                    throw c.fail("input 'axes' needs the rank of '\(input)', which the model does not declare")
                }
                guard pads.count == 2 * axes.count else {
                    throw c.fail("pads needs 2 entries per axis in 'axes' (\(2 * axes.count)), got \(pads.count)")
                }
                var full = [Int](repeating: 0, count: 2 * rank)
                for (index, axis) in axes.enumerated() {
                    let resolved = axis < 0 ? axis + rank : axis
                    guard resolved >= 0 && resolved < rank else { throw c.fail("axis \(axis) out of range") }
                    full[resolved] = pads[index]
                    full[resolved + rank] = pads[index + axes.count]
                }
                pads = full
            }
        }
        try append(.pad(pads: pads, mode: mode, value: value), inputs: [input], c)
    }

    /// Turns a (possibly batch-dependent) shape tensor into Reshape's static target.
    private func reshapeTarget(_ target: Folded, input: String, _ c: NodeContext) throws(ONNXError) -> [Int] {
        guard let first = target.integers else { throw c.fail("input 'shape' must be an integer tensor") }
        guard let second = target.integersAtBatch2 else { return first }
        guard let inputShape = runtime[input] ?? nil else { throw c.fail("needs the static shape of '\(input)'") }
        var result: [Int] = []
        for (index, (value1, value2)) in zip(first, second).enumerated() {
            if value1 == value2 {
                result.append(value1)
            } else if index < inputShape.batch1.count, inputShape.batch1[index] == value1, inputShape.batch2[index] == value2 {
                result.append(0)  // copies the batch-dependent axis from the input
            } else if !result.contains(-1), !first[(index + 1)...].contains(-1) {
                result.append(-1)
            } else {
                throw c.fail("the target shape depends on the batch size in a way LANCE cannot keep symbolic")
            }
        }
        return result
    }

    private func constantValue(_ c: NodeContext) throws(ONNXError) -> Folded {
        let a = c.attributes
        guard let (name, value) = a.values.first, a.values.count == 1 else {
            throw c.fail("a Constant node needs exactly one value attribute")
        }
        switch (name, value) {
        case ("value", .tensor(let tensor)): return Folded(tensor)
        case ("value_float", .float(let value)): return Folded(shape: [], floats: [value])
        case ("value_floats", .floats(let values)): return Folded(shape: [values.count], floats: values)
        case ("value_int", .int(let value)): return Folded(shape: [], integers: [value])
        case ("value_ints", .ints(let values)): return Folded(shape: [values.count], integers: values)
        default: throw c.fail("Constant attribute '\(name)' is not supported (use value, value_float(s) or value_int(s))")
        }
    }
}
