import LanceCore
import LanceLinalg
import LanceModel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Applies an element-wise activation; output has the input's shape. The input's buffer is
/// overwritten when the caller hands over its last reference (`consume`), copied otherwise.
public func activate(_ input: consuming Tensor, _ activation: Activation) -> Tensor {
    var output = consume input
    output.withUnsafeMutableBufferPointer { buffer in
        nonisolated(unsafe) let base = buffer.baseAddress!
        parallelFor(buffer.count, minimumPerChunk: 65_536) { range in
            applyActivation(activation, to: base + range.lowerBound, count: range.count)
        }
    }
    return output
}

/// Inference-form batch normalization over axis 1 of `[N, C, ...]`, with an optional fused
/// activation:
///
/// ```
/// y = act( scale[c] · (x − mean[c]) / sqrt(variance[c] + epsilon) + bias[c] )
/// ```
public func batchNormalization(_ input: consuming Tensor, scale: Tensor, bias: Tensor, mean: Tensor, variance: Tensor,
                               epsilon: Float, activation: Activation? = nil) -> Tensor {
    let channels = input.shape[1]
    let planeSize = input.shape.dropFirst(2).reduce(1, *)
    let planes = input.shape[0] * channels
    var multipliers = [Float](repeating: 0, count: channels)
    var shifts = [Float](repeating: 0, count: channels)
    for c in 0..<channels {
        let inverse = 1 / (Double(variance.scalars[c]) + Double(epsilon)).squareRoot()
        multipliers[c] = Float(Double(scale.scalars[c]) * inverse)
        shifts[c] = Float(Double(bias.scalars[c]) - Double(mean.scalars[c]) * Double(scale.scalars[c]) * inverse)
    }
    var output = consume input  // overwritten in place when the caller handed over its last reference
    output.withUnsafeMutableBufferPointer { buffer in
        nonisolated(unsafe) let base = buffer.baseAddress!
        parallelFor(planes, minimumPerChunk: max(1, 16_384 / max(planeSize, 1))) { range in
            for index in range {
                let plane = base + index * planeSize
                let (a, b) = (multipliers[index % channels], shifts[index % channels])
                for k in 0..<planeSize { plane[k] = plane[k] * a + b }
                if let activation { applyActivation(activation, to: plane, count: planeSize) }
            }
        }
    }
    return output
}

/// Row-major strides of a shape, with stride 0 on axes of extent 1 that are broadcast to
/// `target` (the shape must already be left-padded to the target's rank).
func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
    var strides = [Int](repeating: 0, count: target.count)
    var step = 1
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[axis] = shape[axis] == target[axis] ? step : 0
        step *= shape[axis]
    }
    return strides
}

/// An element-wise binary operator with numpy broadcasting: output shape is the broadcast of the
/// two input shapes.
///
/// - Precondition: the shapes broadcast (`broadcastShape` succeeds).
public func binary(_ a: Tensor, _ b: Tensor, _ op: BinaryOperator) -> Tensor {
    if a.shape == b.shape {
        return Tensor(shape: a.shape) { out in
            a.withUnsafeBufferPointer { x in
                b.withUnsafeBufferPointer { y in
                    for k in 0..<out.count { out[k] = op(x[k], y[k]) }
                }
            }
        }
    }
    // Broadcasting shapes are valid by precondition.
    let shape = (try? broadcastShape(a.shape, b.shape)) ?? a.shape
    let rank = shape.count
    let aShape = [Int](repeating: 1, count: rank - a.rank) + a.shape
    let bShape = [Int](repeating: 1, count: rank - b.rank) + b.shape
    let aStrides = broadcastStrides(aShape, to: shape)
    let bStrides = broadcastStrides(bShape, to: shape)
    return Tensor(shape: shape) { out in
        a.withUnsafeBufferPointer { x in
            b.withUnsafeBufferPointer { y in
                guard !out.isEmpty else { return }
                // Iterate the last axis in an inner loop, the others with an odometer.
                let inner = shape[rank - 1]
                let (aInner, bInner) = (aStrides[rank - 1], bStrides[rank - 1])
                var index = [Int](repeating: 0, count: rank)
                var position = 0
                while position < out.count {
                    var aOffset = 0, bOffset = 0
                    for axis in 0..<(rank - 1) {
                        aOffset += index[axis] * aStrides[axis]
                        bOffset += index[axis] * bStrides[axis]
                    }
                    for k in 0..<inner {
                        out[position + k] = op(x[aOffset + k * aInner], y[bOffset + k * bInner])
                    }
                    position += inner
                    var axis = rank - 2
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
}

/// Softmax along `axis`: `y_i = e^(x_i − max) / Σ_j e^(x_j − max)`. With `coercedTo2D`, all axes
/// from `axis` on form the softmax row (ONNX opset < 13).
public func softmax(_ input: Tensor, axis: Int, coercedTo2D: Bool) -> Tensor {
    let resolved = axis < 0 ? axis + input.rank : axis
    let outer = input.shape[..<resolved].reduce(1, *)
    let extent = coercedTo2D ? input.shape[resolved...].reduce(1, *) : input.shape[resolved]
    let inner = coercedTo2D ? 1 : input.shape[(resolved + 1)...].reduce(1, *)
    var output = input
    output.withUnsafeMutableBufferPointer { y in
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * extent * inner + i
                var largest = -Float.infinity
                for k in 0..<extent { largest = max(largest, y[base + k * inner]) }
                var sum: Float = 0
                for k in 0..<extent {
                    let e = expf(y[base + k * inner] - largest)
                    y[base + k * inner] = e
                    sum += e
                }
                for k in 0..<extent { y[base + k * inner] /= sum }
            }
        }
    }
    return output
}

/// Mean over `axes` (`nil`: all), keeping reduced axes as extent 1 when `keepDimensions`.
public func reduceMean(_ input: Tensor, axes: [Int]?, keepDimensions: Bool) -> Tensor {
    let rank = input.rank
    let reduced = Set((axes ?? Array(0..<rank)).map { $0 < 0 ? $0 + rank : $0 })
    let keptShape = (0..<rank).map { reduced.contains($0) ? 1 : input.shape[$0] }
    let outputStrides = broadcastStrides(keptShape, to: input.shape)
    let count = max(1, reduced.reduce(1) { $0 * input.shape[$1] })
    let shape = keepDimensions ? keptShape : (0..<rank).filter { !reduced.contains($0) }.map { input.shape[$0] }
    if !reduced.isEmpty, reduced == Set((rank - reduced.count)..<rank) {
        // Trailing axes (a spatial mean): each output is the mean of one contiguous run.
        // Rows summed over 16 lanes, shared by the cores.
        return Tensor(shape: shape) { out in
            input.withUnsafeBufferPointer { x in
                nonisolated(unsafe) let (source, target) = (x.baseAddress!, out.baseAddress!)
                parallelFor(out.count, minimumPerChunk: max(1, 65_536 / count)) { rows in
                    for row in rows { target[row] = laneSum(source + row * count, count: count) / Float(count) }
                }
            }
        }
    }
    var sums = [Double](repeating: 0, count: keptShape.reduce(1, *))
    input.withUnsafeBufferPointer { x in
        var index = [Int](repeating: 0, count: rank)
        for k in 0..<x.count {
            var target = 0
            for axis in 0..<rank { target += index[axis] * outputStrides[axis] }
            sums[target] += Double(x[k])
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < input.shape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
    }
    return Tensor(shape: shape, scalars: sums.map { Float($0 / Double(count)) })
}

/// `Σ_k x[k]` in single precision over 16 lanes (then the lanes, then the tail).
func laneSum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var lanes = SIMD16<Float>()
    var k = 0
    while k + 16 <= count {
        lanes += UnsafeRawPointer(x + k).loadUnaligned(as: SIMD16<Float>.self)
        k += 16
    }
    var sum = lanes.sum()
    while k < count {
        sum += x[k]
        k += 1
    }
    return sum
}
