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
    let layout = PaddedPlaneLayout(g)
    return Tensor(shape: outputShape) { out in
        input.withUnsafeBufferPointer { xBuffer in
            weight.withUnsafeBufferPointer { wBuffer in
                nonisolated(unsafe) let x = xBuffer.baseAddress!
                nonisolated(unsafe) let w = wBuffer.baseAddress!
                nonisolated(unsafe) let y = out.baseAddress!
                let kernelArea = g.kernelHeight * g.kernelWidth
                // Byte offset of each tap (i, j) from the window's top-left corner in the scratch plane.
                let tapOffsets = (0..<g.kernelHeight).flatMap { i in
                    (0..<g.kernelWidth).map { j in (i * g.dilationHeight * layout.rowWidth + j * g.dilationWidth) * 4 }
                }
                parallelFor(planes, minimumPerChunk: max(1, 4_096 / max(1, g.outputPlane))) { range in
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: layout.scratchCount) { scratch in
                        scratch.initialize(repeating: 0)
                        tapOffsets.withUnsafeBufferPointer { offsets in
                            for index in range {
                                let n = index / outputChannels
                                let m = index % outputChannels
                                let source = x + (n * channels + m / multiplier) * g.inputPlane
                                layout.fill(scratch.baseAddress!, from: source)
                                let plane = DepthwisePlane(padded: scratch.baseAddress!, layout: layout, tapOffsets: offsets.baseAddress!,
                                                           kernel: w + m * kernelArea, bias: biasValues?[m] ?? 0,
                                                           target: y + index * g.outputPlane)
                                switch g.strideWidth {
                                case 1: plane.run(stride: 1, activation: activation)
                                case 2: plane.run(stride: 2, activation: activation)
                                default: plane.runScalar(activation: activation)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A zero-padded copy of one input plane, wide enough that every output column, rounded up to
/// eight lanes, reads inside it: rows `H + padTop + padBottom`, row stride `rowWidth`.
struct PaddedPlaneLayout {
    let geometry: PlaneGeometry
    let rowWidth: Int
    let rows: Int
    /// Output columns rounded up to a multiple of eight.
    let vectorWidth: Int

    init(_ g: PlaneGeometry) {
        geometry = g
        vectorWidth = (g.outputWidth + 7) / 8 * 8
        // Last read: column (vectorWidth − 1)·s + (kW − 1)·dW, plus one more lane pair for the
        // 16-wide loads of stride 2.
        let needed = (vectorWidth - 1) * g.strideWidth + (g.kernelWidth - 1) * g.dilationWidth + g.strideWidth + 1
        rowWidth = max(needed, g.padLeft + g.inputWidth)
        let neededRows = (g.outputHeight - 1) * g.strideHeight + (g.kernelHeight - 1) * g.dilationHeight + 1
        rows = max(neededRows, g.padTop + g.inputHeight)
    }

    var scratchCount: Int { rows * rowWidth }

    /// Copies the input plane into the scratch buffer at (padTop, padLeft); the border stays zero.
    @inline(__always)
    func fill(_ scratch: UnsafeMutablePointer<Float>, from source: UnsafePointer<Float>) {
        let g = geometry
        for row in 0..<g.inputHeight {
            (scratch + (row + g.padTop) * rowWidth + g.padLeft).update(from: source + row * g.inputWidth, count: g.inputWidth)
        }
    }
}

/// One depthwise output plane from a zero-padded input plane, with bias and activation fused:
/// `target[oh, ow] = act(bias + Σ_ij kernel[i, j] · padded[oh·sH + i·dH, ow·sW + j·dW])`.
struct DepthwisePlane {
    let padded: UnsafePointer<Float>
    let layout: PaddedPlaneLayout
    let tapOffsets: UnsafePointer<Int>
    let kernel: UnsafePointer<Float>
    let bias: Float
    let target: UnsafeMutablePointer<Float>

    /// Strides 1 and 2: eight output columns at a time summed over all taps in registers; the
    /// activation runs over each finished row while it is in the L1 cache.
    @inline(__always)
    func run(stride: Int, activation: Activation?) {
        let g = layout.geometry
        let taps = g.kernelHeight * g.kernelWidth
        for oh in 0..<g.outputHeight {
            let rowStart = UnsafeRawPointer(padded + oh * g.strideHeight * layout.rowWidth)
            let row = target + oh * g.outputWidth
            var ow = 0
            while ow < g.outputWidth {
                var sum = SIMD8<Float>(repeating: bias)
                let base = rowStart + ow * stride * 4
                for tap in 0..<taps {
                    let inputs = stride == 1
                        ? base.loadUnaligned(fromByteOffset: tapOffsets[tap], as: SIMD8<Float>.self)
                        : base.loadUnaligned(fromByteOffset: tapOffsets[tap], as: SIMD16<Float>.self).evenHalf
                    sum += SIMD8(repeating: kernel[tap]) * inputs
                }
                if ow + 8 <= g.outputWidth {
                    UnsafeMutableRawPointer(row + ow).storeBytes(of: sum, as: SIMD8<Float>.self)
                } else {
                    for lane in 0..<(g.outputWidth - ow) { row[ow + lane] = sum[lane] }
                }
                ow += 8
            }
            if let activation { applyActivation(activation, to: row, count: g.outputWidth) }
        }
    }

    /// Any stride, one output at a time.
    func runScalar(activation: Activation?) {
        let g = layout.geometry
        for oh in 0..<g.outputHeight {
            for ow in 0..<g.outputWidth {
                var sum = bias
                let base = padded + oh * g.strideHeight * layout.rowWidth + ow * g.strideWidth
                for i in 0..<g.kernelHeight {
                    for j in 0..<g.kernelWidth {
                        sum += kernel[i * g.kernelWidth + j] * base[i * g.dilationHeight * layout.rowWidth + j * g.dilationWidth]
                    }
                }
                target[oh * g.outputWidth + ow] = activation.map { $0(sum) } ?? sum
            }
        }
    }
}

