import LanceCore
import LanceModel

/// Joins tensors along `axis`; all other extents must agree.
public func concatenate(_ inputs: [Tensor], axis: Int) -> Tensor {
    let rank = inputs[0].rank
    let resolved = axis < 0 ? axis + rank : axis
    let outer = inputs[0].shape[..<resolved].reduce(1, *)
    let blocks = inputs.map { $0.shape[resolved...].reduce(1, *) }
    var shape = inputs[0].shape
    shape[resolved] = inputs.reduce(0) { $0 + $1.shape[resolved] }
    let rowSize = blocks.reduce(0, +)
    return Tensor(shape: shape) { out in
        var offset = 0
        for (input, block) in zip(inputs, blocks) {
            input.withUnsafeBufferPointer { x in
                for o in 0..<outer {
                    (out.baseAddress! + o * rowSize + offset).update(from: x.baseAddress! + o * block, count: block)
                }
            }
            offset += block
        }
    }
}

/// Permutes axes: output axis `i` is input axis `permutation[i]` (`nil`: reversed axes).
public func transpose(_ input: Tensor, permutation: [Int]?) -> Tensor {
    let rank = input.rank
    let order = permutation ?? Array((0..<rank).reversed())
    let shape = order.map { input.shape[$0] }
    var inputStrides = [Int](repeating: 1, count: rank)
    for axis in stride(from: rank - 2, through: 0, by: -1) { inputStrides[axis] = inputStrides[axis + 1] * input.shape[axis + 1] }
    let strides = order.map { inputStrides[$0] }
    return Tensor(shape: shape) { out in
        input.withUnsafeBufferPointer { x in
            var index = [Int](repeating: 0, count: rank)
            var source = 0
            for k in 0..<out.count {
                out[k] = x[source]
                var axis = rank - 1
                while axis >= 0 {
                    index[axis] += 1
                    source += strides[axis]
                    if index[axis] < shape[axis] { break }
                    source -= strides[axis] * shape[axis]
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
    }
}

/// Pads (or crops, for negative entries) every axis: `pads = [begin0, ..., end0, ...]`.
/// `constant` fills with `value`; `reflect` mirrors without repeating the edge; `edge` repeats it.
public func pad(_ input: Tensor, pads: [Int], mode: PadMode, value: Float) -> Tensor {
    let rank = input.rank
    let shape = (0..<rank).map { input.shape[$0] + pads[$0] + pads[$0 + rank] }
    var inputStrides = [Int](repeating: 1, count: rank)
    for axis in stride(from: rank - 2, through: 0, by: -1) { inputStrides[axis] = inputStrides[axis + 1] * input.shape[axis + 1] }
    return Tensor(shape: shape) { out in
        input.withUnsafeBufferPointer { x in
            var index = [Int](repeating: 0, count: rank)
            for k in 0..<out.count {
                var source = 0
                var inside = true
                for axis in 0..<rank {
                    var position = index[axis] - pads[axis]
                    let extent = input.shape[axis]
                    if position < 0 || position >= extent {
                        switch mode {
                        case .constant: inside = false
                        case .edge: position = min(max(position, 0), extent - 1)
                        case .reflect:
                            if extent == 1 { position = 0 } else {
                                let period = 2 * (extent - 1)
                                position = ((position % period) + period) % period
                                if position >= extent { position = period - position }
                            }
                        }
                    }
                    if !inside { break }
                    source += position * inputStrides[axis]
                }
                out[k] = inside ? x[source] : value
                var axis = rank - 1
                while axis >= 0 {
                    index[axis] += 1
                    if index[axis] < shape[axis] { break }
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
    }
}
