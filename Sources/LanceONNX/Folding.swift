import LanceModel

extension GraphBuilder {
    /// Evaluates a node whose inputs are all constants, for the operators that shape sub-graphs
    /// use; `nil` for other operators (they then run as ordinary nodes on parameters).
    func fold(_ c: NodeContext) throws(ONNXError) -> Folded? {
        let a = c.attributes
        func input(_ index: Int) throws(ONNXError) -> Folded {
            guard let value = try constant(index, c) else { throw c.fail("a required input is missing") }
            guard value.floats != nil || value.integers != nil else {
                throw c.fail("input '\(c.inputs[index])' has unusable type \(value.elementType)")
            }
            return value
        }
        let rowMajor = { (shape: [Int]) -> [Int] in
            var strides = [Int](repeating: 1, count: shape.count)
            for axis in stride(from: shape.count - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * shape[axis + 1] }
            return strides
        }
        switch c.opType {
        case "Identity", "Dropout":
            return try input(0)
        case "Cast":
            var value = try input(0)
            let to = try a.int("to", default: 1)
            if [1, 10, 11, 16].contains(to) {
                if value.floats == nil { value.floats = value.integers?.map { Float($0) } }
                value.integers = nil
                value.integersAtBatch2 = nil
                value.elementType = ElementType.name(of: Int32(to))
            } else if to == Int(ElementType.bool.rawValue) {
                value.integers = value.integers?.map { $0 != 0 ? 1 : 0 } ?? value.floats?.map { $0 != 0 ? 1 : 0 }
                value.integersAtBatch2 = value.integersAtBatch2?.map { $0 != 0 ? 1 : 0 }
                value.floats = nil
                value.elementType = ElementType.name(of: Int32(to))
            } else {
                if value.integers == nil { value.integers = value.floats?.map { $0.isFinite ? Int($0.rounded(.towardZero)) : 0 } }
                value.floats = nil
                value.elementType = ElementType.name(of: Int32(to))
            }
            return value
        case "Unsqueeze", "Squeeze", "Reshape", "Flatten":
            let value = try input(0)
            let operation: Operator
            switch c.opType {
            case "Unsqueeze":
                guard let axes = opset < 13 ? try a.ints("axes") : try integers(1, c) else { throw c.fail("axes are required") }
                operation = .unsqueeze(axes: axes)
            case "Squeeze":
                operation = .squeeze(axes: opset < 13 ? try a.ints("axes") : try integers(1, c))
            case "Flatten":
                operation = .flatten(axis: try a.int("axis", default: 1))
            default:
                guard let target = try integers(1, c) else { throw c.fail("input 'shape' is required") }
                operation = .reshape(shape: target, allowZero: try a.int("allowzero", default: 0) != 0)
            }
            do {
                let shape = try operation.outputShape(inputs: [value.shape])
                return value.remapped(shape: shape, from: Array(0..<value.count))
            } catch {
                throw c.fail(error.reason)
            }
        case "Gather":
            let data = try input(0)
            guard let indices = try input(1).integers else { throw c.fail("indices must be integers") }
            let indexShape = try input(1).shape
            guard !data.shape.isEmpty else { throw c.fail("cannot gather from a scalar") }
            let axis: Int
            let requested = try a.int("axis", default: 0)
            do { axis = try normalizedAxis(requested, rank: data.shape.count) } catch { throw c.fail(error.reason) }
            let extent = data.shape[axis]
            let outer = data.shape[..<axis].reduce(1, *), inner = data.shape[(axis + 1)...].reduce(1, *)
            var sources: [Int] = []
            for o in 0..<outer {
                for index in indices {
                    let resolved = index < 0 ? index + extent : index
                    guard resolved >= 0 && resolved < extent else { throw c.fail("index \(index) is out of range for extent \(extent)") }
                    for i in 0..<inner { sources.append((o * extent + resolved) * inner + i) }
                }
            }
            return data.remapped(shape: Array(data.shape[..<axis]) + indexShape + Array(data.shape[(axis + 1)...]), from: sources)
        case "Concat":
            let parts = try (0..<c.inputs.count).filter { c.input($0) != nil }.map { (index: Int) throws(ONNXError) -> Folded in try input(index) }
            guard let first = parts.first else { throw c.fail("needs at least one input") }
            let axis: Int
            let requested = try a.int("axis", default: 0)
            do { axis = try normalizedAxis(requested, rank: first.shape.count) } catch { throw c.fail(error.reason) }
            var result = first
            for part in parts.dropFirst() {
                guard part.shape.count == first.shape.count, (part.floats == nil) == (first.floats == nil) else {
                    throw c.fail("constant inputs of different rank or type cannot be concatenated")
                }
                let outer = result.shape[..<axis].reduce(1, *)
                let blockA = result.shape[axis...].reduce(1, *), blockB = part.shape[axis...].reduce(1, *)
                func join<T>(_ x: [T]?, _ y: [T]?) -> [T]? {
                    guard let x, let y else { return nil }
                    var joined: [T] = []
                    for o in 0..<outer {
                        let startA = o * blockA, startB = o * blockB
                        joined.append(contentsOf: x[startA..<(startA + blockA)])
                        joined.append(contentsOf: y[startB..<(startB + blockB)])
                    }
                    return joined
                }
                let batch2 = (result.integersAtBatch2 != nil || part.integersAtBatch2 != nil)
                    ? join(result.integersAtBatch2 ?? result.integers, part.integersAtBatch2 ?? part.integers) : nil
                result.floats = join(result.floats, part.floats)
                result.integers = join(result.integers, part.integers)
                result.integersAtBatch2 = batch2
                result.shape[axis] += part.shape[axis]
            }
            return result
        case "Slice":
            let data = try input(0)
            let rank = data.shape.count
            let starts: [Int], ends: [Int], axes: [Int], steps: [Int]
            if opset < 10 {
                guard let s = try a.ints("starts"), let e = try a.ints("ends") else { throw c.fail("starts and ends are required") }
                (starts, ends) = (s, e)
                axes = try a.ints("axes") ?? Array(0..<s.count)
                steps = [Int](repeating: 1, count: s.count)
            } else {
                guard let s = try integers(1, c), let e = try integers(2, c) else { throw c.fail("starts and ends are required") }
                (starts, ends) = (s, e)
                axes = try integers(3, c) ?? Array(0..<s.count)
                steps = try integers(4, c) ?? [Int](repeating: 1, count: s.count)
            }
            guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
                throw c.fail("starts, ends, axes and steps must have equal length")
            }
            var ranges: [[Int]] = data.shape.map { Array(0..<$0) }
            for (k, rawAxis) in axes.enumerated() {
                let axis = rawAxis < 0 ? rawAxis + rank : rawAxis
                guard axis >= 0 && axis < rank, steps[k] != 0 else { throw c.fail("invalid axis \(rawAxis) or step 0") }
                let extent = data.shape[axis]
                func clamp(_ value: Int, _ low: Int, _ high: Int) -> Int { min(max(value < 0 ? value + extent : value, low), high) }
                if steps[k] > 0 {
                    let start = clamp(starts[k], 0, extent), end = clamp(ends[k], 0, extent)
                    ranges[axis] = Array(stride(from: start, to: end, by: steps[k]))
                } else {
                    let start = clamp(starts[k], 0, extent - 1), end = clamp(ends[k], -1, extent - 1)
                    ranges[axis] = Array(stride(from: start, to: end, by: steps[k]))
                }
            }
            let strides = rowMajor(data.shape)
            var sources = [0]
            for axis in 0..<rank { sources = sources.flatMap { base in ranges[axis].map { base + $0 * strides[axis] } } }
            return data.remapped(shape: ranges.map(\.count), from: sources)
        case "Add", "Sub", "Mul", "Div":
            let x = try input(0), y = try input(1)
            let shape: [Int]
            do { shape = try broadcastShape(x.shape, y.shape) } catch { throw c.fail(error.reason) }
            let count = shape.reduce(1, *)
            func sources(_ operandShape: [Int]) -> [Int] {
                let padded = [Int](repeating: 1, count: shape.count - operandShape.count) + operandShape
                let strides = rowMajor(padded)
                return (0..<count).map { flat in
                    var remainder = flat, offset = 0
                    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
                        let index = remainder % shape[axis]
                        remainder /= shape[axis]
                        if padded[axis] != 1 { offset += index * strides[axis] }
                    }
                    return offset
                }
            }
            let (sx, sy) = (sources(x.shape), sources(y.shape))
            if let xf = x.floats, let yf = y.floats {
                let op: BinaryOperator = ["Add": .add, "Sub": .subtract, "Mul": .multiply, "Div": .divide][c.opType] ?? .add
                return Folded(shape: shape, floats: zip(sx, sy).map { op(xf[$0], yf[$1]) })
            }
            guard let xi = x.integers, let yi = y.integers else { throw c.fail("cannot mix float and integer constants") }
            func apply(_ p: Int, _ q: Int) throws(ONNXError) -> Int {
                switch c.opType {
                case "Add": return p &+ q
                case "Sub": return p &- q
                case "Mul": return p &* q
                default:
                    guard q != 0 else { throw c.fail("integer division by zero") }
                    return p / q
                }
            }
            func compute(_ xs: [Int], _ ys: [Int]) throws(ONNXError) -> [Int] {
                var result: [Int] = []
                for (i, j) in zip(sx, sy) { result.append(try apply(xs[i], ys[j])) }
                return result
            }
            let first = try compute(xi, yi)
            let dependent = x.integersAtBatch2 != nil || y.integersAtBatch2 != nil
            let second = dependent ? try compute(x.integersAtBatch2 ?? xi, y.integersAtBatch2 ?? yi) : nil
            return Folded(shape: shape, integers: first, atBatch2: second)
        default:
            return nil
        }
    }
}
