/// Why an operation cannot be applied to inputs of the given shapes.
public struct ShapeError: Error, Sendable, Equatable {
    /// What does not fit, as a sentence fragment.
    public var reason: String

    /// Creates a shape error.
    public init(_ reason: String) { self.reason = reason }
}

/// Resolves a possibly negative axis against a rank, or fails naming the operator's axis.
public func normalizedAxis(_ axis: Int, rank: Int) throws(ShapeError) -> Int {
    let resolved = axis < 0 ? axis + rank : axis
    guard resolved >= 0 && resolved < max(rank, 1) else {
        throw ShapeError("axis \(axis) is out of range for rank \(rank)")
    }
    return resolved
}

/// The numpy broadcast of two shapes (dimensions aligned from the right, extent 1 stretches).
public func broadcastShape(_ a: [Int], _ b: [Int]) throws(ShapeError) -> [Int] {
    let rank = max(a.count, b.count)
    let paddedA = [Int](repeating: 1, count: rank - a.count) + a
    let paddedB = [Int](repeating: 1, count: rank - b.count) + b
    var result: [Int] = []
    for (x, y) in zip(paddedA, paddedB) {
        if x == y || y == 1 { result.append(x) } else if x == 1 { result.append(y) } else {
            throw ShapeError("shapes \(a) and \(b) cannot be broadcast together")
        }
    }
    return result
}

extension Operator {
    /// How many inputs the operation accepts.
    public var inputCountRange: ClosedRange<Int> {
        switch self {
        case .convolution: 2...3
        case .batchNormalization: 5...5
        case .binary, .matMul: 2...2
        case .gemm: 2...3
        case .concat: 1...Int.max
        default: 1...1
        }
    }

    /// The output shape for inputs of the given shapes, with every constraint of the operation
    /// checked (ranks, channel counts, parameter extents, window sizes).
    public func outputShape(inputs: [[Int]]) throws(ShapeError) -> [Int] {
        guard inputCountRange.contains(inputs.count) else {
            throw ShapeError("expects \(inputCountRange.lowerBound == inputCountRange.upperBound ? "\(inputCountRange.lowerBound)" : "\(inputCountRange.lowerBound) to \(inputCountRange.upperBound == Int.max ? "any number of" : "\(inputCountRange.upperBound)")") inputs, got \(inputs.count)")
        }
        let x = inputs[0]
        switch self {
        case .convolution(let convolution):
            return try convolutionShape(convolution, input: x, weight: inputs[1], bias: inputs.count > 2 ? inputs[2] : nil)
        case .batchNormalization:
            guard x.count >= 2 else { throw ShapeError("input must have rank ≥ 2, got \(x)") }
            for (index, name) in ["scale", "bias", "mean", "variance"].enumerated() where inputs[index + 1] != [x[1]] {
                throw ShapeError("\(name) has shape \(inputs[index + 1]) but the input has \(x[1]) channels")
            }
            return x
        case .activation, .identity:
            return x
        case .binary:
            return try broadcastShape(x, inputs[1])
        case .concat(let axis):
            let resolved = try normalizedAxis(axis, rank: x.count)
            var result = x
            for other in inputs.dropFirst() {
                guard other.count == x.count,
                      zip(other, x).enumerated().allSatisfy({ $0.offset == resolved || $0.element.0 == $0.element.1 })
                else { throw ShapeError("cannot concatenate \(other) with \(x) along axis \(axis)") }
                result[resolved] += other[resolved]
            }
            return result
        case .maxPool(let pooling), .averagePool(let pooling, _):
            return try poolingShape(pooling, input: x)
        case .globalAveragePool, .globalMaxPool:
            guard x.count >= 3 else { throw ShapeError("input must be [N, C, spatial...], got \(x)") }
            return [x[0], x[1]] + [Int](repeating: 1, count: x.count - 2)
        case .flatten(let axis):
            let resolved = axis < 0 ? axis + x.count : axis
            guard resolved >= 0 && resolved <= x.count else {
                throw ShapeError("axis \(axis) is out of range for rank \(x.count)")
            }
            return [x[..<resolved].reduce(1, *), x[resolved...].reduce(1, *)]
        case .reshape(let target, let allowZero):
            return try reshapeShape(target, allowZero: allowZero, input: x)
        case .transpose(let permutation):
            let order = permutation ?? Array((0..<x.count).reversed())
            guard order.count == x.count, Set(order) == Set(0..<x.count) else {
                throw ShapeError("permutation \(order) does not fit rank \(x.count)")
            }
            return order.map { x[$0] }
        case .gemm(let gemm):
            let b = inputs[1]
            guard x.count == 2, b.count == 2 else { throw ShapeError("A and B must be 2-D, got \(x) and \(b)") }
            let (m, k) = gemm.transposeA ? (x[1], x[0]) : (x[0], x[1])
            let (kB, n) = gemm.transposeB ? (b[1], b[0]) : (b[0], b[1])
            guard k == kB else { throw ShapeError("inner extents differ: A is \(x), B is \(b)") }
            if inputs.count > 2 {
                let c = inputs[2]
                guard c.count <= 2, (try? broadcastShape([m, n], c)) == [m, n] else {
                    throw ShapeError("C of shape \(c) cannot be broadcast to [\(m), \(n)]")
                }
            }
            return [m, n]
        case .matMul:
            return try matMulShape(x, inputs[1])
        case .softmax(let axis, _):
            _ = try normalizedAxis(axis, rank: x.count)
            return x
        case .pad(let pads, _, _):
            guard pads.count == 2 * x.count else {
                throw ShapeError("pads has \(pads.count) entries but the input has rank \(x.count)")
            }
            let result = x.indices.map { x[$0] + pads[$0] + pads[$0 + x.count] }
            guard result.allSatisfy({ $0 >= 0 }) else { throw ShapeError("pads \(pads) crop \(x) below zero") }
            return result
        case .squeeze(let axes):
            guard let axes else { return x.filter { $0 != 1 } }
            var resolved = Set<Int>()
            for axis in axes {
                let index = try normalizedAxis(axis, rank: x.count)
                guard x[index] == 1 else { throw ShapeError("cannot squeeze axis \(axis) of extent \(x[index])") }
                resolved.insert(index)
            }
            return x.indices.filter { !resolved.contains($0) }.map { x[$0] }
        case .unsqueeze(let axes):
            let rank = x.count + axes.count
            var resolved = Set<Int>()
            for axis in axes { resolved.insert(try normalizedAxis(axis, rank: rank)) }
            guard resolved.count == axes.count else { throw ShapeError("repeated axis in \(axes)") }
            var remaining = x.makeIterator()
            return (0..<rank).map { resolved.contains($0) ? 1 : remaining.next() ?? 1 }
        case .reduceMean(let axes, let keepDimensions):
            var reduced = Set<Int>()
            for axis in axes ?? Array(x.indices) { reduced.insert(try normalizedAxis(axis, rank: x.count)) }
            return keepDimensions ? x.indices.map { reduced.contains($0) ? 1 : x[$0] }
                : x.indices.filter { !reduced.contains($0) }.map { x[$0] }
        }
    }

    private func convolutionShape(_ convolution: Convolution, input x: [Int], weight w: [Int], bias: [Int]?) throws(ShapeError) -> [Int] {
        guard x.count == 4 else { throw ShapeError("only 2-D convolution is supported; input is \(x)") }
        guard w.count == 4 else { throw ShapeError("weight must be [M, C/groups, kH, kW], got \(w)") }
        let groups = convolution.groups
        guard groups >= 1, x[1] % groups == 0, w[0] % groups == 0 else {
            throw ShapeError("group \(groups) does not divide \(x[1]) input and \(w[0]) output channels")
        }
        guard w[1] * groups == x[1] else {
            throw ShapeError("weight \(w) expects \(w[1] * groups) input channels, the input has \(x[1])")
        }
        let window = convolution.window
        guard [w[2], w[3]] == window.kernelSize else {
            throw ShapeError("kernel_shape \(window.kernelSize) does not match weight \(w)")
        }
        if let bias, bias != [w[0]] { throw ShapeError("bias has shape \(bias), expected [\(w[0])]") }
        try checkWindow(window)
        let output = window.outputSize(height: x[2], width: x[3])
        guard output.height > 0, output.width > 0 else {
            throw ShapeError("the \(window.kernelSize) kernel does not fit the \(x[2])x\(x[3]) input")
        }
        return [x[0], w[0], output.height, output.width]
    }

    private func poolingShape(_ pooling: Pooling, input x: [Int]) throws(ShapeError) -> [Int] {
        guard x.count == 4 else { throw ShapeError("only 2-D pooling is supported; input is \(x)") }
        try checkWindow(pooling.window)
        let output = pooling.window.outputSize(height: x[2], width: x[3], ceilMode: pooling.ceilMode)
        guard output.height > 0, output.width > 0 else {
            throw ShapeError("the \(pooling.window.kernelSize) window does not fit the \(x[2])x\(x[3]) input")
        }
        return [x[0], x[1], output.height, output.width]
    }

    private func checkWindow(_ window: WindowGeometry) throws(ShapeError) {
        guard window.kernelSize.count == 2, window.strides.count == 2, window.dilations.count == 2 else {
            throw ShapeError("kernel, strides and dilations need two entries (height, width)")
        }
        guard window.kernelSize.allSatisfy({ $0 > 0 }), window.strides.allSatisfy({ $0 > 0 }),
              window.dilations.allSatisfy({ $0 > 0 }) else {
            throw ShapeError("kernel \(window.kernelSize), strides \(window.strides) and dilations \(window.dilations) must be positive")
        }
        if case .explicit(let top, let left, let bottom, let right) = window.padding,
           [top, left, bottom, right].contains(where: { $0 < 0 }) {
            throw ShapeError("negative padding \([top, left, bottom, right])")
        }
    }

    private func reshapeShape(_ target: [Int], allowZero: Bool, input x: [Int]) throws(ShapeError) -> [Int] {
        var result = target
        var inferred: Int?
        for (index, extent) in target.enumerated() {
            if extent == 0 && !allowZero {
                guard index < x.count else { throw ShapeError("shape \(target) copies axis \(index), which \(x) lacks") }
                result[index] = x[index]
            } else if extent == -1 {
                guard inferred == nil else { throw ShapeError("shape \(target) has more than one -1") }
                inferred = index
            } else if extent < 0 {
                throw ShapeError("shape \(target) has a negative extent")
            }
        }
        let total = x.reduce(1, *)
        if let inferred {
            let known = result.enumerated().filter { $0.offset != inferred }.reduce(1) { $0 * $1.element }
            guard known > 0, total % known == 0 else { throw ShapeError("cannot reshape \(x) to \(target)") }
            result[inferred] = total / known
        }
        guard result.reduce(1, *) == total else { throw ShapeError("cannot reshape \(x) (\(total) elements) to \(target)") }
        return result
    }

    private func matMulShape(_ a: [Int], _ b: [Int]) throws(ShapeError) -> [Int] {
        guard !a.isEmpty, !b.isEmpty else { throw ShapeError("MatMul inputs must have rank ≥ 1") }
        let a2 = a.count == 1 ? [1] + a : a
        let b2 = b.count == 1 ? b + [1] : b
        guard a2[a2.count - 1] == b2[b2.count - 2] else {
            throw ShapeError("inner extents differ: \(a) times \(b)")
        }
        let batch = try broadcastShape(Array(a2.dropLast(2)), Array(b2.dropLast(2)))
        var result = batch
        if a.count > 1 { result.append(a2[a2.count - 2]) }
        if b.count > 1 { result.append(b2[b2.count - 1]) }
        return result
    }
}
