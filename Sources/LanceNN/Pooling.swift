import LanceCore
import LanceLinalg
import LanceModel

/// 2-D max pooling of `[N, C, H, W]` → `[N, C, H', W']`; padded positions never win.
public func maxPool2d(_ input: Tensor, pooling: Pooling) -> Tensor {
    pool2d(input, pooling: pooling) { window in
        var largest = -Float.infinity
        window.forEach { largest = max(largest, $0) }
        return largest
    }
}

/// 2-D average pooling of `[N, C, H, W]` → `[N, C, H', W']`. The divisor is the number of input
/// pixels under the window, or with `countIncludePad` the window area clipped to the padded input.
public func averagePool2d(_ input: Tensor, pooling: Pooling, countIncludePad: Bool) -> Tensor {
    pool2d(input, pooling: pooling) { window in
        var sum: Float = 0
        window.forEach { sum += $0 }
        return sum / Float(countIncludePad ? window.paddedCount : window.validCount)
    }
}

/// The input pixels under one pooling window.
struct PoolingWindow {
    let source: UnsafePointer<Float>
    let rows: [Int]
    let columns: [Int]
    let width: Int
    /// Window positions inside the padded input (for `count_include_pad`).
    let paddedCount: Int

    var validCount: Int { rows.count * columns.count }

    @inline(__always)
    func forEach(_ body: (Float) -> Void) {
        for row in rows { for column in columns { body(source[row * width + column]) } }
    }
}

private func pool2d(_ input: Tensor, pooling: Pooling, reduce: (PoolingWindow) -> Float) -> Tensor {
    let (batch, channels, height, width) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
    let window = pooling.window
    let output = window.outputSize(height: height, width: width, ceilMode: pooling.ceilMode)
    let pads = window.resolvedPadding(height: height, width: width)
    func taps(_ o: Int, axis: Int, before: Int, size: Int) -> (valid: [Int], padded: Int) {
        let start = o * window.strides[axis] - before
        var valid: [Int] = []
        var padded = 0
        let paddedEnd = size + (axis == 0 ? pads.bottom : pads.right)
        for k in 0..<window.kernelSize[axis] {
            let position = start + k * window.dilations[axis]
            if position >= 0 && position < size { valid.append(position) }
            if position >= -before && position < paddedEnd { padded += 1 }
        }
        return (valid, padded)
    }
    let rowTaps = (0..<output.height).map { taps($0, axis: 0, before: pads.top, size: height) }
    let columnTaps = (0..<output.width).map { taps($0, axis: 1, before: pads.left, size: width) }
    return Tensor(shape: [batch, channels, output.height, output.width]) { out in
        input.withUnsafeBufferPointer { x in
            for plane in 0..<(batch * channels) {
                let source = x.baseAddress! + plane * height * width
                for oh in 0..<output.height {
                    for ow in 0..<output.width {
                        let window = PoolingWindow(source: source, rows: rowTaps[oh].valid, columns: columnTaps[ow].valid,
                                                   width: width, paddedCount: rowTaps[oh].padded * columnTaps[ow].padded)
                        out[(plane * output.height + oh) * output.width + ow] = reduce(window)
                    }
                }
            }
        }
    }
}

/// Mean over all spatial axes: `[N, C, d...]` → `[N, C, 1, ...]`.
public func globalAveragePool(_ input: Tensor) -> Tensor {
    globalPool(input) { plane, count in
        var sum: Float = 0
        for k in 0..<count { sum += plane[k] }
        return sum / Float(count)
    }
}

/// Maximum over all spatial axes: `[N, C, d...]` → `[N, C, 1, ...]`.
public func globalMaxPool(_ input: Tensor) -> Tensor {
    globalPool(input) { plane, count in
        var largest = -Float.infinity
        for k in 0..<count { largest = max(largest, plane[k]) }
        return largest
    }
}

private func globalPool(_ input: Tensor, reduce: (UnsafePointer<Float>, Int) -> Float) -> Tensor {
    let planes = input.shape[0] * input.shape[1]
    let planeSize = input.shape.dropFirst(2).reduce(1, *)
    let shape = [input.shape[0], input.shape[1]] + [Int](repeating: 1, count: input.rank - 2)
    return Tensor(shape: shape) { out in
        input.withUnsafeBufferPointer { x in
            for plane in 0..<planes { out[plane] = reduce(x.baseAddress! + plane * planeSize, planeSize) }
        }
    }
}
