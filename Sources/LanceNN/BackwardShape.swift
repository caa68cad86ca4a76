import LanceCore
import LanceModel

/// The input gradient of every operation that only reinterprets the shape — Flatten, Reshape,
/// Squeeze, Unsqueeze, Identity: the elements keep their row-major order, so
/// `dX = dY` viewed with the input's shape.
///
/// - Precondition: `outputGradient.count == inputShape.reduce(1, *)`.
public func reshapeGradient(outputGradient: Tensor, inputShape: [Int]) -> Tensor {
    precondition(outputGradient.count == inputShape.reduce(1, *),
                 "reshape gradient: \(outputGradient.shape) cannot take the input shape \(inputShape)")
    return outputGradient.reshaped(to: inputShape)
}

/// The input gradient of Transpose (`output axis i = input axis permutation[i]`): the output
/// gradient transposed by the inverse permutation, `dX = transpose(dY, permutation⁻¹)`.
///
/// - Parameter permutation: the forward permutation (`nil`: reversed axes, its own inverse).
public func transposeGradient(outputGradient: Tensor, permutation: [Int]?) -> Tensor {
    let rank = outputGradient.rank
    let order = permutation ?? Array((0..<rank).reversed())
    precondition(order.count == rank && Set(order) == Set(0..<rank), "transpose gradient: \(order) is not a permutation of rank \(rank)")
    var inverse = [Int](repeating: 0, count: rank)
    for (outputAxis, inputAxis) in order.enumerated() { inverse[inputAxis] = outputAxis }
    return transpose(outputGradient, permutation: inverse)
}

/// The input gradients of Concat along `axis`: the output gradient split back into the inputs'
/// extents along that axis, `dX_k = dY[..., offset_k ..< offset_k + d_k, ...]`.
///
/// - Parameters: `inputShapes` of the forward inputs, in order; `axis` negative counts from the end.
public func concatGradients(outputGradient: Tensor, inputShapes: [[Int]], axis: Int) -> [Tensor] {
    let rank = outputGradient.rank
    let resolved = axis < 0 ? axis + rank : axis
    precondition(inputShapes.reduce(0) { $0 + $1[resolved] } == outputGradient.shape[resolved],
                 "concat gradient: the inputs' extents along axis \(axis) do not add up to \(outputGradient.shape)")
    let outer = outputGradient.shape[..<resolved].reduce(1, *)
    let rowSize = outputGradient.shape[resolved...].reduce(1, *)
    var offset = 0
    var parts: [Tensor] = []
    outputGradient.withUnsafeBufferPointer { dy in
        for shape in inputShapes {
            let block = shape[resolved...].reduce(1, *)
            parts.append(Tensor(shape: shape) { out in
                for o in 0..<outer {
                    (out.baseAddress! + o * block).initialize(from: dy.baseAddress! + o * rowSize + offset, count: block)
                }
            })
            offset += block
        }
    }
    return parts
}

/// The input gradient of constant-mode Pad (`pads = [begin0, ..., end0, ...]`, negative entries
/// crop): the output gradient with the padding cut away again, and zeros where the forward
/// cropped, `dX[i] = dY[i + begin]` (0 outside dY) — `pad(dY, pads: −pads)`.
///
/// Only constant padding is supported (`reflect`/`edge` would also route border gradients back
/// onto interior elements).
public func padGradient(outputGradient: Tensor, pads: [Int]) -> Tensor {
    precondition(pads.count == 2 * outputGradient.rank, "pad gradient: \(pads.count) pads for rank \(outputGradient.rank)")
    return pad(outputGradient, pads: pads.map { -$0 }, mode: .constant, value: 0)
}
