import LanceCore
import LanceLinalg
import LanceModel

/// 2-D convolution forward, with an optional fused activation.
///
/// ```
/// Y[n, m, oh, ow] = act( B[m] + Σ_{c, i, j} W[m, c, i, j] · Xpad[n, g·Cg + c, oh·sH + i·dH, ow·sW + j·dW] )
/// ```
/// with `g = m / (M / groups)` and `Cg = C / groups`. Shapes: input `[N, C, H, W]`, weight
/// `[M, C / groups, kH, kW]` (OIHW), bias `[M]`, output `[N, M, H', W']`.
///
/// Depthwise convolutions (`groups == C`) run as a direct loop over output planes, split across
/// cores; all others as im2col followed by `cblas_sgemm` per image and group (1×1 stride-1
/// unpadded convolutions skip im2col: the input plane already is the column matrix).
///
/// - Precondition: shapes were checked by shape inference (`Operator.outputShape`).
public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, convolution: Convolution,
                   activation: Activation? = nil) -> Tensor {
    let (batch, channels, height, width) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
    let outputChannels = weight.shape[0]
    let window = convolution.window
    let output = window.outputSize(height: height, width: width)
    let outputShape = [batch, outputChannels, output.height, output.width]
    let pads = window.resolvedPadding(height: height, width: width)
    let geometry = PlaneGeometry(
        inputHeight: height, inputWidth: width, outputHeight: output.height, outputWidth: output.width,
        kernelHeight: window.kernelSize[0], kernelWidth: window.kernelSize[1],
        strideHeight: window.strides[0], strideWidth: window.strides[1],
        dilationHeight: window.dilations[0], dilationWidth: window.dilations[1],
        padTop: pads.top, padLeft: pads.left)
    if convolution.groups == channels && weight.shape[1] == 1 {
        return depthwiseConv2d(input, weight: weight, bias: bias, geometry: geometry, outputShape: outputShape,
                               activation: activation)
    }
    return Tensor(shape: outputShape) { out in
        input.withUnsafeBufferPointer { x in
            weight.withUnsafeBufferPointer { w in
                convolveByGEMM(x: x.baseAddress!, w: w.baseAddress!, y: out.baseAddress!, batch: batch,
                               channels: channels, outputChannels: outputChannels, groups: convolution.groups,
                               geometry: geometry, bias: bias, activation: activation)
            }
        }
    }
}

/// Sizes of one input plane, one output plane and the sliding window between them.
struct PlaneGeometry {
    var inputHeight: Int, inputWidth: Int, outputHeight: Int, outputWidth: Int
    var kernelHeight: Int, kernelWidth: Int, strideHeight: Int, strideWidth: Int
    var dilationHeight: Int, dilationWidth: Int, padTop: Int, padLeft: Int

    var inputPlane: Int { inputHeight * inputWidth }
    var outputPlane: Int { outputHeight * outputWidth }

    /// The output columns `ow` whose input column `ow·sW − padLeft + j·dW` lies inside the input.
    @inline(__always)
    func validColumns(kernelColumn j: Int) -> Range<Int> {
        let offset = j * dilationWidth - padLeft
        // ow·s + offset ≥ 0  ⇔  ow ≥ ceil(−offset / s)
        let first = offset >= 0 ? 0 : (-offset + strideWidth - 1) / strideWidth
        // ow·s + offset ≤ W − 1  ⇔  ow ≤ floor((W − 1 − offset) / s)
        let limit = inputWidth - 1 - offset
        let last = limit < 0 ? -1 : limit / strideWidth
        let end = min(outputWidth, last + 1)
        return first < end ? first..<end : 0..<0
    }

    /// Whether the 1×1 convolution reads the input plane unchanged.
    var isPointwise: Bool {
        kernelHeight == 1 && kernelWidth == 1 && strideHeight == 1 && strideWidth == 1 && padTop == 0
            && padLeft == 0 && outputHeight == inputHeight && outputWidth == inputWidth
    }
}

/// Writes the im2col matrix `[Cg·kH·kW, H'·W']` of `channelCount` channels starting at `x`.
@inline(__always)
func im2col(_ x: UnsafePointer<Float>, channelCount: Int, geometry g: PlaneGeometry, into columns: UnsafeMutablePointer<Float>) {
    let plane = g.outputPlane
    for c in 0..<channelCount {
        let source = x + c * g.inputPlane
        for i in 0..<g.kernelHeight {
            for j in 0..<g.kernelWidth {
                let row = columns + ((c * g.kernelHeight + i) * g.kernelWidth + j) * plane
                let valid = g.validColumns(kernelColumn: j)
                let columnOffset = j * g.dilationWidth - g.padLeft
                for oh in 0..<g.outputHeight {
                    let target = row + oh * g.outputWidth
                    let ih = oh * g.strideHeight - g.padTop + i * g.dilationHeight
                    if ih < 0 || ih >= g.inputHeight || valid.isEmpty {
                        target.update(repeating: 0, count: g.outputWidth)
                        continue
                    }
                    if valid.lowerBound > 0 { target.update(repeating: 0, count: valid.lowerBound) }
                    if valid.upperBound < g.outputWidth {
                        (target + valid.upperBound).update(repeating: 0, count: g.outputWidth - valid.upperBound)
                    }
                    let sourceRow = source + ih * g.inputWidth + columnOffset
                    if g.strideWidth == 1 {
                        (target + valid.lowerBound).update(from: sourceRow + valid.lowerBound, count: valid.count)
                    } else {
                        for ow in valid { target[ow] = sourceRow[ow * g.strideWidth] }
                    }
                }
            }
        }
    }
}

private func convolveByGEMM(x: UnsafePointer<Float>, w: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                            batch: Int, channels: Int, outputChannels: Int, groups: Int, geometry g: PlaneGeometry,
                            bias: Tensor?, activation: Activation?) {
    let groupChannels = channels / groups
    let groupOutputs = outputChannels / groups
    let depth = groupChannels * g.kernelHeight * g.kernelWidth
    let plane = g.outputPlane
    var columns = g.isPointwise ? [] : [Float](repeating: 0, count: depth * plane)
    columns.withUnsafeMutableBufferPointer { buffer in
        for n in 0..<batch {
            for group in 0..<groups {
                let source = x + (n * channels + group * groupChannels) * g.inputPlane
                let matrix: UnsafePointer<Float>
                if g.isPointwise {
                    matrix = source
                } else {
                    im2col(source, channelCount: groupChannels, geometry: g, into: buffer.baseAddress!)
                    matrix = UnsafePointer(buffer.baseAddress!)
                }
                gemm(m: groupOutputs, n: plane, k: depth,
                     a: w + group * groupOutputs * depth, lda: depth,
                     b: matrix, ldb: plane,
                     c: y + (n * outputChannels + group * groupOutputs) * plane, ldc: plane)
            }
            // The epilogue runs while this image's output is still in cache.
            applyBiasAndActivation(UnsafeMutableBufferPointer(start: y + n * outputChannels * plane, count: outputChannels * plane),
                                   bias: bias, batch: 1, channels: outputChannels, planeSize: plane, activation: activation)
        }
    }
}

/// Adds a per-channel bias and applies an activation in place over `[batch, channels, planeSize]`.
func applyBiasAndActivation(_ y: UnsafeMutableBufferPointer<Float>, bias: Tensor?, batch: Int, channels: Int,
                            planeSize: Int, activation: Activation?) {
    guard bias != nil || activation != nil else { return }
    let biasValues = bias?.scalars
    nonisolated(unsafe) let base = y.baseAddress!
    parallelFor(batch * channels, minimumPerChunk: max(1, 16_384 / max(planeSize, 1))) { planes in
        for index in planes {
            let plane = base + index * planeSize
            let shift = biasValues?[index % channels] ?? 0
            if let activation {
                applyActivation(activation, to: plane, count: planeSize, adding: shift)
            } else {
                for k in 0..<planeSize { plane[k] += shift }
            }
        }
    }
}

/// `x[k] = activation(x[k] + shift)` for `k < count`, with the common activations specialised.
@inline(__always)
func applyActivation(_ activation: Activation, to x: UnsafeMutablePointer<Float>, count: Int, adding shift: Float = 0) {
    switch activation {
    case .relu:
        for k in 0..<count { x[k] = max(x[k] + shift, 0) }
    case .clip(let minimum, let maximum):
        for k in 0..<count { x[k] = min(max(x[k] + shift, minimum), maximum) }
    default:
        for k in 0..<count { x[k] = activation(x[k] + shift) }
    }
}

private func depthwiseConv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, geometry g: PlaneGeometry,
                             outputShape: [Int], activation: Activation?) -> Tensor {
    let channels = input.shape[1]
    let outputChannels = outputShape[1]
    let multiplier = outputChannels / channels
    let planes = outputShape[0] * outputChannels
    let biasValues = bias?.scalars
    return Tensor(shape: outputShape) { out in
        input.withUnsafeBufferPointer { xBuffer in
            weight.withUnsafeBufferPointer { wBuffer in
                nonisolated(unsafe) let x = xBuffer.baseAddress!
                nonisolated(unsafe) let w = wBuffer.baseAddress!
                nonisolated(unsafe) let y = out.baseAddress!
                let kernelArea = g.kernelHeight * g.kernelWidth
                parallelFor(planes) { range in
                    for index in range {
                        let n = index / outputChannels
                        let m = index % outputChannels
                        let source = x + (n * channels + m / multiplier) * g.inputPlane
                        let target = y + index * g.outputPlane
                        target.update(repeating: biasValues?[m] ?? 0, count: g.outputPlane)
                        depthwisePlane(source: source, kernel: w + m * kernelArea, target: target, geometry: g)
                        if let activation { applyActivation(activation, to: target, count: g.outputPlane) }
                    }
                }
            }
        }
    }
}

/// Accumulates one depthwise output plane row by row, so that the row being summed stays in the
/// L1 cache while all `kH·kW` taps are added: `target[oh, ow] += Σ_ij kernel[i, j] · source[ih, iw]`.
@inline(__always)
private func depthwisePlane(source: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                            target: UnsafeMutablePointer<Float>, geometry g: PlaneGeometry) {
    let columnRanges = (0..<g.kernelWidth).map { g.validColumns(kernelColumn: $0) }
    for oh in 0..<g.outputHeight {
        let row = target + oh * g.outputWidth
        for i in 0..<g.kernelHeight {
            let ih = oh * g.strideHeight - g.padTop + i * g.dilationHeight
            if ih < 0 || ih >= g.inputHeight { continue }
            let sourceRow = source + ih * g.inputWidth
            for j in 0..<g.kernelWidth {
                let valid = columnRanges[j]
                if valid.isEmpty { continue }
                let weight = kernel[i * g.kernelWidth + j]
                // Input column of output column ow: ow·stride + offset.
                let offset = j * g.dilationWidth - g.padLeft
                switch g.strideWidth {
                case 1: accumulateStride1(row, sourceRow + offset, weight, valid)
                case 2: accumulateStride2(row, sourceRow + offset, weight, valid)
                default:
                    for ow in valid { row[ow] += weight * sourceRow[ow * g.strideWidth + offset] }
                }
            }
        }
    }
}

/// `row[ow] += weight · source[ow]` for `ow` in `columns`, eight lanes at a time.
@inline(__always)
private func accumulateStride1(_ row: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>, _ weight: Float,
                               _ columns: Range<Int>) {
    var ow = columns.lowerBound
    let splat = SIMD8<Float>(repeating: weight)
    let rowBytes = UnsafeMutableRawPointer(row), sourceBytes = UnsafeRawPointer(source)
    while ow + 8 <= columns.upperBound {
        let sum = rowBytes.loadUnaligned(fromByteOffset: ow * 4, as: SIMD8<Float>.self)
            + splat * sourceBytes.loadUnaligned(fromByteOffset: ow * 4, as: SIMD8<Float>.self)
        rowBytes.storeBytes(of: sum, toByteOffset: ow * 4, as: SIMD8<Float>.self)
        ow += 8
    }
    while ow < columns.upperBound {
        row[ow] += weight * source[ow]
        ow += 1
    }
}

/// `row[ow] += weight · source[2·ow]` for `ow` in `columns`, eight lanes at a time (the even
/// lanes of sixteen loaded inputs).
@inline(__always)
private func accumulateStride2(_ row: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>, _ weight: Float,
                               _ columns: Range<Int>) {
    var ow = columns.lowerBound
    let splat = SIMD8<Float>(repeating: weight)
    let rowBytes = UnsafeMutableRawPointer(row), sourceBytes = UnsafeRawPointer(source)
    // The last 16-wide load reads source[2·ow ... 2·ow + 15]; stop while 2·ow + 15 stays inside
    // the valid input span (2·(end − 1) is the last valid input column).
    while ow + 8 <= columns.upperBound && 2 * ow + 15 <= 2 * (columns.upperBound - 1) {
        let inputs = sourceBytes.loadUnaligned(fromByteOffset: 2 * ow * 4, as: SIMD16<Float>.self)
        let sum = rowBytes.loadUnaligned(fromByteOffset: ow * 4, as: SIMD8<Float>.self) + splat * inputs.evenHalf
        rowBytes.storeBytes(of: sum, toByteOffset: ow * 4, as: SIMD8<Float>.self)
        ow += 8
    }
    while ow < columns.upperBound {
        row[ow] += weight * source[2 * ow]
        ow += 1
    }
}
