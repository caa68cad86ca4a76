import LanceCore
import LanceLinalg
import LanceModel

/// The input positions one pooling output window covers along one axis.
private struct PoolingTaps {
    /// Input positions inside the input.
    var valid: [Int]
    /// Window positions inside the padded input (the `count_include_pad` count).
    var paddedCount: Int
}

/// The taps of every output position along one axis, as the forward pooling defines them: window
/// start `o·stride − padBefore`, taps `start + k·dilation`; a tap counts as padded when it lies in
/// `[−padBefore, size + padAfter)` (so with `ceilMode` a window reaching past the padded end is clipped).
private func poolingTaps(outputCount: Int, size: Int, kernel: Int, stride: Int, dilation: Int,
                         padBefore: Int, padAfter: Int) -> [PoolingTaps] {
    (0..<outputCount).map { o in
        let start = o * stride - padBefore
        var taps = PoolingTaps(valid: [], paddedCount: 0)
        for k in 0..<kernel {
            let position = start + k * dilation
            if position >= 0 && position < size { taps.valid.append(position) }
            if position >= -padBefore && position < size + padAfter { taps.paddedCount += 1 }
        }
        return taps
    }
}

private func poolingLayout(inputShape: [Int], outputGradient: Tensor, pooling: Pooling)
    -> (rows: [PoolingTaps], columns: [PoolingTaps], planes: Int) {
    precondition(inputShape.count == 4, "2-D pooling gradient needs an [N, C, H, W] input, got \(inputShape)")
    let (height, width) = (inputShape[2], inputShape[3])
    let window = pooling.window
    let output = window.outputSize(height: height, width: width, ceilMode: pooling.ceilMode)
    precondition(outputGradient.shape == [inputShape[0], inputShape[1], output.height, output.width],
                 "pooling output gradient \(outputGradient.shape) differs from the output [\(inputShape[0]), \(inputShape[1]), \(output.height), \(output.width)]")
    let pads = window.resolvedPadding(height: height, width: width)
    let rows = poolingTaps(outputCount: output.height, size: height, kernel: window.kernelSize[0], stride: window.strides[0],
                           dilation: window.dilations[0], padBefore: pads.top, padAfter: pads.bottom)
    let columns = poolingTaps(outputCount: output.width, size: width, kernel: window.kernelSize[1], stride: window.strides[1],
                              dilation: window.dilations[1], padBefore: pads.left, padAfter: pads.right)
    return (rows, columns, inputShape[0] * inputShape[1])
}

/// The input gradient of 2-D max pooling: each output's gradient goes to the input position
/// that won its window,
///
/// ```
/// dX[n, c, h, w] = Σ_{oh, ow : argmax(window(oh, ow)) = (h, w)} dY[n, c, oh, ow]
/// ```
///
/// Padded positions never win; on ties the first maximum in row-major window order (kernel row,
/// then kernel column) wins, as in PyTorch. Any stride, dilation, padding, `ceilMode`.
///
/// - Parameters: `input` X `[N, C, H, W]` (saved from the forward), `outputGradient` dY `[N, C, H', W']`.
/// - Returns: dX `[N, C, H, W]`.
public func maxPool2dGradient(input: Tensor, outputGradient: Tensor, pooling: Pooling) -> Tensor {
    let (rows, columns, planes) = poolingLayout(inputShape: input.shape, outputGradient: outputGradient, pooling: pooling)
    let (height, width) = (input.shape[2], input.shape[3])
    let (outputHeight, outputWidth) = (rows.count, columns.count)
    return Tensor(shape: input.shape) { out in
        out.initialize(repeating: 0)
        input.withUnsafeBufferPointer { x in
            outputGradient.withUnsafeBufferPointer { dy in
                for plane in 0..<planes {
                    let source = plane * height * width
                    for oh in 0..<outputHeight {
                        for ow in 0..<outputWidth {
                            var best = -1
                            var largest = -Float.infinity
                            for h in rows[oh].valid {
                                for w in columns[ow].valid {
                                    let value = x[source + h * width + w]
                                    if best < 0 || value > largest {
                                        best = source + h * width + w
                                        largest = value
                                    }
                                }
                            }
                            if best >= 0 { out[best] += dy[(plane * outputHeight + oh) * outputWidth + ow] }
                        }
                    }
                }
            }
        }
    }
}

/// The input gradient of 2-D average pooling: each output's gradient is shared equally by the
/// input positions of its window,
///
/// ```
/// dX[n, c, h, w] = Σ_{oh, ow : (h, w) ∈ window(oh, ow)} dY[n, c, oh, ow] / count(oh, ow)
/// ```
///
/// where `count` is the number of input pixels under the window, or with `countIncludePad` the
/// window positions inside the padded input (as the forward `averagePool2d`; with `ceilMode` a
/// window hanging past the padded end counts only its part inside).
///
/// - Parameters: `inputShape` `[N, C, H, W]`, `outputGradient` dY `[N, C, H', W']`.
/// - Returns: dX `[N, C, H, W]`.
public func averagePool2dGradient(inputShape: [Int], outputGradient: Tensor, pooling: Pooling,
                                  countIncludePad: Bool) -> Tensor {
    let (rows, columns, planes) = poolingLayout(inputShape: inputShape, outputGradient: outputGradient, pooling: pooling)
    let (height, width) = (inputShape[2], inputShape[3])
    let (outputHeight, outputWidth) = (rows.count, columns.count)
    return Tensor(shape: inputShape) { out in
        out.initialize(repeating: 0)
        outputGradient.withUnsafeBufferPointer { dy in
            for plane in 0..<planes {
                let target = plane * height * width
                for oh in 0..<outputHeight {
                    for ow in 0..<outputWidth {
                        let count = countIncludePad ? rows[oh].paddedCount * columns[ow].paddedCount
                                                    : rows[oh].valid.count * columns[ow].valid.count
                        guard count > 0 else { continue }
                        let share = dy[(plane * outputHeight + oh) * outputWidth + ow] / Float(count)
                        for h in rows[oh].valid {
                            for w in columns[ow].valid { out[target + h * width + w] += share }
                        }
                    }
                }
            }
        }
    }
}

/// The input gradient of global average pooling `[N, C, d...]` → `[N, C, 1, ...]`:
/// `dX[n, c, …] = dY[n, c] / (d1 · d2 · …)`.
public func globalAveragePoolGradient(inputShape: [Int], outputGradient: Tensor) -> Tensor {
    let planes = inputShape[0] * inputShape[1]
    let planeSize = inputShape.dropFirst(2).reduce(1, *)
    precondition(outputGradient.count == planes, "global pooling gradient \(outputGradient.shape) does not fit \(inputShape)")
    return Tensor(shape: inputShape) { out in
        outputGradient.withUnsafeBufferPointer { dy in
            for plane in 0..<planes {
                let share = dy[plane] / Float(planeSize)
                (out.baseAddress! + plane * planeSize).initialize(repeating: share, count: planeSize)
            }
        }
    }
}

/// The input gradient of global max pooling: `dY[n, c]` goes to the first maximum of plane
/// `(n, c)` (row-major order); all other positions get 0.
public func globalMaxPoolGradient(input: Tensor, outputGradient: Tensor) -> Tensor {
    let planes = input.shape[0] * input.shape[1]
    let planeSize = input.shape.dropFirst(2).reduce(1, *)
    precondition(outputGradient.count == planes, "global pooling gradient \(outputGradient.shape) does not fit \(input.shape)")
    return Tensor(shape: input.shape) { out in
        out.initialize(repeating: 0)
        input.withUnsafeBufferPointer { x in
            outputGradient.withUnsafeBufferPointer { dy in
                for plane in 0..<planes where planeSize > 0 {
                    let base = plane * planeSize
                    var best = base
                    for k in base..<(base + planeSize) where x[k] > x[best] { best = k }
                    out[best] = dy[plane]
                }
            }
        }
    }
}

/// The input gradient of `reduceMean(axes:keepDimensions:)`: the output gradient broadcast back
/// over the reduced axes and divided by the number of elements averaged,
/// `dX[i] = dY[kept(i)] / Π_{a ∈ axes} d_a`.
///
/// - Parameters: `inputShape` of X; `axes` as in the forward (`nil`: all, negative from the end);
///   `outputGradient` with the forward output's shape.
public func reduceMeanGradient(inputShape: [Int], axes: [Int]?, keepDimensions: Bool, outputGradient: Tensor) -> Tensor {
    let rank = inputShape.count
    let reduced = Set((axes ?? Array(0..<rank)).map { $0 < 0 ? $0 + rank : $0 })
    let keptShape = (0..<rank).map { reduced.contains($0) ? 1 : inputShape[$0] }
    precondition(outputGradient.count == keptShape.reduce(1, *), "reduce-mean gradient \(outputGradient.shape) does not fit \(inputShape)")
    let count = Float(max(1, reduced.reduce(1) { $0 * inputShape[$1] }))
    if let first = reduced.min(), reduced == Set(first..<rank) {
        // Trailing axes (global average pooling): each dY element fills one contiguous block.
        let block = inputShape[first...].reduce(1, *)
        return Tensor(shape: inputShape) { out in
            outputGradient.withUnsafeBufferPointer { dyBuffer in
                nonisolated(unsafe) let (dy, target) = (dyBuffer.baseAddress!, out.baseAddress!)
                parallelFor(dyBuffer.count, minimumPerChunk: max(1, 65_536 / max(block, 1))) { indices in
                    for index in indices { (target + index * block).initialize(repeating: dy[index] / count, count: block) }
                }
            }
        }
    }
    let strides = reductionStrides(keptShape, to: inputShape)
    return Tensor(shape: inputShape) { out in
        outputGradient.withUnsafeBufferPointer { dy in
            forEachBroadcastOffset(inputShape, strides, strides) { position, offset, _ in
                out[position] = dy[offset] / count
            }
        }
    }
}
