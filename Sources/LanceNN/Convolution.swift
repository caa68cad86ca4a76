import CLanceKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LanceCore
import LanceLinalg
import LanceModel

/// Whether the AVX-512 kernels of `CLanceKernels` run on this CPU (checked once).
let avx512Kernels = lance_kernels_avx512() != 0

/// The clamp bounds of ReLU and Clip, which the C kernels apply in registers; `nil` for other
/// activations (applied afterwards in Swift).
@inline(__always)
func clampBounds(_ activation: Activation?) -> (clamp: Bool, low: Float, high: Float)? {
    switch activation {
    case nil: return (false, 0, 0)
    case .relu?: return (true, 0, .infinity)
    case .clip(let minimum, let maximum)?: return (true, minimum, maximum)
    default: return nil
    }
}

/// 2-D convolution forward, with an optional fused activation.
///
/// ```
/// Y[n, m, oh, ow] = act( B[m] + Σ_{c, i, j} W[m, c, i, j] · Xpad[n, g·Cg + c, oh·sH + i·dH, ow·sW + j·dW] )
/// ```
/// with `g = m / (M / groups)` and `Cg = C / groups`. Shapes: input `[N, C, H, W]`, weight
/// `[M, C / groups, kH, kW]` (OIHW), bias `[M]`, output `[N, M, H', W']`.
///
/// Depthwise convolutions (`groups == C`) run as a direct loop over output planes, split across
/// cores (3×3 ones, and dense 3×3 ones with at most 12 input channels, by the AVX-512 kernels of
/// `CLanceKernels` when the CPU has AVX-512); all others as im2col followed by `cblas_sgemm` per
/// image and group (1×1 stride-1
/// unpadded convolutions skip im2col: the input plane already is the column matrix). The GEMM is
/// cut into tiles of output columns (or, for small planes, of output channels) that the cores
/// share, each tile multiplied by a single-threaded `sgemm` and finished (bias, activation) while
/// it is still in the cache. The output comes from the calling thread's `TensorRecycler` when it
/// has one of the right size.
///
/// - Precondition: shapes were checked by shape inference (`Operator.outputShape`).
public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, convolution: Convolution,
                   activation: Activation? = nil) -> Tensor {
    convolve(input, weight: weight, bias: bias, convolution: convolution, activation: activation, residual: nil)
}

/// 2-D convolution forward followed by the element-wise addition of a tensor of the output's
/// shape (a residual connection), in one pass:
///
/// ```
/// Y[n, m, oh, ow] = R[n, m, oh, ow] + B[m] + Σ_{c, i, j} W[m, c, i, j] · Xpad[n, g·Cg + c, oh·sH + i·dH, ow·sW + j·dW]
/// ```
/// Shapes as in `conv2d(_:weight:bias:convolution:activation:)`; `residual` is `[N, M, H', W']`.
/// The GEMM path starts each output tile from `R + B` and lets `sgemm` accumulate onto it.
///
/// - Precondition: shapes were checked by shape inference, and `residual.shape` is the output shape.
public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, convolution: Convolution,
                   adding residual: Tensor) -> Tensor {
    convolve(input, weight: weight, bias: bias, convolution: convolution, activation: nil, residual: residual)
}

private func convolve(_ input: Tensor, weight: Tensor, bias: Tensor?, convolution: Convolution,
                      activation: Activation?, residual: Tensor?) -> Tensor {
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
    precondition(residual == nil || residual!.shape == outputShape,
                 "residual shape \(residual!.shape) differs from the convolution output \(outputShape)")
    let directable = avx512Kernels && geometry.kernelHeight == 3 && geometry.kernelWidth == 3
        && geometry.dilationHeight == 1 && geometry.dilationWidth == 1 && geometry.strideHeight == geometry.strideWidth
        && (geometry.strideWidth == 1 || geometry.strideWidth == 2)
    let depthwise = convolution.groups == channels && weight.shape[1] == 1
    if directable && (depthwise || (convolution.groups == 1 && channels <= 12)) {
        // 3×3 depthwise, or dense with few input channels (the stem convolution): direct, AVX-512.
        var result = directConv3x3(input, weight: weight, bias: bias, groups: convolution.groups, geometry: geometry,
                                   outputShape: outputShape, activation: activation)
        if let residual {
            result.withUnsafeMutableBufferPointer { y in
                residual.withUnsafeBufferPointer { r in
                    for k in 0..<y.count { y[k] += r[k] }
                }
            }
        }
        return result
    }
    if depthwise {
        var result = depthwiseConv2d(input, weight: weight, bias: bias, geometry: geometry, outputShape: outputShape,
                                     activation: activation)
        if let residual {
            result.withUnsafeMutableBufferPointer { y in
                residual.withUnsafeBufferPointer { r in
                    for k in 0..<y.count { y[k] += r[k] }
                }
            }
        }
        return result
    }
    return makeOutput(shape: outputShape) { out in
        input.withUnsafeBufferPointer { x in
            weight.withUnsafeBufferPointer { w in
                withOptionalBuffer(bias) { b in
                    withOptionalBuffer(residual) { r in
                        let job = GEMMConvolution(
                            x: x.baseAddress!, w: w.baseAddress!, y: out.baseAddress!, bias: b, residual: r,
                            batch: batch, channels: channels, outputChannels: outputChannels,
                            groups: convolution.groups, geometry: geometry, activation: activation)
                        job.run()
                    }
                }
            }
        }
    }
}

@inline(__always)
func withOptionalBuffer<R>(_ tensor: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let tensor else { return body(nil) }
    return tensor.withUnsafeBufferPointer { body($0.baseAddress) }
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
    im2col(x, channelCount: channelCount, geometry: g, pixels: 0..<g.outputPlane, into: columns)
}

/// Writes the columns `pixels` (output pixels `oh·W' + ow`) of the im2col matrix
/// `[Cg·kH·kW, H'·W']` of `channelCount` channels starting at `x`, as a
/// `[Cg·kH·kW, pixels.count]` matrix.
func im2col(_ x: UnsafePointer<Float>, channelCount: Int, geometry g: PlaneGeometry, pixels: Range<Int>,
            into columns: UnsafeMutablePointer<Float>) {
    let width = pixels.count
    guard width > 0 else { return }
    let firstRow = pixels.lowerBound / g.outputWidth
    let lastRow = (pixels.upperBound - 1) / g.outputWidth
    for c in 0..<channelCount {
        let source = x + c * g.inputPlane
        for i in 0..<g.kernelHeight {
            for j in 0..<g.kernelWidth {
                let row = columns + ((c * g.kernelHeight + i) * g.kernelWidth + j) * width
                let valid = g.validColumns(kernelColumn: j)
                let columnOffset = j * g.dilationWidth - g.padLeft
                for oh in firstRow...lastRow {
                    // The part of output row `oh` inside `pixels`.
                    let from = oh == firstRow ? pixels.lowerBound - oh * g.outputWidth : 0
                    let to = oh == lastRow ? pixels.upperBound - oh * g.outputWidth : g.outputWidth
                    let target = row + (oh * g.outputWidth - pixels.lowerBound)
                    let ih = oh * g.strideHeight - g.padTop + i * g.dilationHeight
                    let lower = max(from, valid.lowerBound)
                    let upper = min(to, valid.upperBound)
                    if ih < 0 || ih >= g.inputHeight || lower >= upper {
                        (target + from).update(repeating: 0, count: to - from)
                        continue
                    }
                    if lower > from { (target + from).update(repeating: 0, count: lower - from) }
                    if upper < to { (target + upper).update(repeating: 0, count: to - upper) }
                    let sourceRow = source + ih * g.inputWidth + columnOffset
                    if g.strideWidth == 1 {
                        (target + lower).update(from: sourceRow + lower, count: upper - lower)
                    } else {
                        for ow in lower..<upper { target[ow] = sourceRow[ow * g.strideWidth] }
                    }
                }
            }
        }
    }
}

/// One convolution as GEMMs `Y[g] = W[g] · cols(X[g])` per image `n` and group `g`, cut into tiles
/// of `rows × columns` of the output `[Mg, H'·W']` that the cores share.
///
/// A tile is `rows` output channels by a run of `columns` output pixels. Each tile is prefilled
/// with `bias (+ residual)` and multiplied with `beta = 1` (or with `beta = 0` when there is
/// neither), then gets its activation, all while it is in the cache. Each `sgemm` is
/// single-threaded (`BLASThreads.withSingleThread`); the tiles run in parallel (`parallelFor`).
private struct GEMMConvolution: @unchecked Sendable {
    let x: UnsafePointer<Float>, w: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>
    let bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?
    let batch: Int, channels: Int, outputChannels: Int, groups: Int
    let geometry: PlaneGeometry
    let activation: Activation?

    /// Bytes of one tile's output plus its column matrix that should stay in the L2 cache.
    static let tileBytes = 256 << 10

    func run() {
        let g = geometry
        let groupChannels = channels / groups
        let groupOutputs = outputChannels / groups
        let depth = groupChannels * g.kernelHeight * g.kernelWidth
        let plane = g.outputPlane
        guard batch > 0, groupOutputs > 0, plane > 0 else { return }
        // Columns per tile: the tile's output rows and its column matrix fit `tileBytes`.
        // The tiles depend only on the layer's shape and the machine's core count, never on the
        // batch or on whether this call runs inside another parallel loop, so every image gets
        // the same sgemm calls (bit-identical results however a batch is sliced).
        let fitting = Self.tileBytes / (MemoryLayout<Float>.size * max(1, groupOutputs + depth))
        let workers = kernelThreadCount
        var columnTiles = (plane + max(128, fitting) - 1) / max(128, fitting)
        if workers > 1 && columnTiles > 1 {
            // Equal tiles, as many as the threads (or their pieces, see `parallelFor`) can share evenly.
            let multiple = columnTiles >= 4 * workers ? 4 * workers : workers
            columnTiles = min(plane, (columnTiles + multiple - 1) / multiple * multiple)
        }
        let columnTile = (plane + columnTiles - 1) / columnTiles
        columnTiles = (plane + columnTile - 1) / columnTile
        // Too few tiles per image to share: split the output channels as well (at least 16 per tile).
        var rowTiles = 1
        if columnTiles < workers {
            rowTiles = min((workers + columnTiles - 1) / columnTiles, max(1, groupOutputs / 16))
        }
        let rowTile = (groupOutputs + rowTiles - 1) / rowTiles
        let tiles = batch * groups * columnTiles * rowTiles
        let pointwise = g.isPointwise
        BLASThreads.withSingleThread {
            parallelFor(tiles) { range in
              withThreadScratch(count: pointwise ? 0 : depth * columnTile) { threadScratch in
                let scratch: UnsafeMutablePointer<Float>? = pointwise ? nil : threadScratch
                for tile in range {
                    var rest = tile
                    let rowIndex = rest % rowTiles; rest /= rowTiles
                    let columnIndex = rest % columnTiles; rest /= columnTiles
                    let group = rest % groups
                    let n = rest / groups
                    let columns = (columnIndex * columnTile)..<min(plane, (columnIndex + 1) * columnTile)
                    let rows = (rowIndex * rowTile)..<min(groupOutputs, (rowIndex + 1) * rowTile)
                    guard !rows.isEmpty else { continue }
                    let source = x + (n * channels + group * groupChannels) * g.inputPlane
                    let matrix: UnsafePointer<Float>
                    let ldb: Int
                    if let scratch {
                        im2col(source, channelCount: groupChannels, geometry: g, pixels: columns, into: scratch)
                        (matrix, ldb) = (UnsafePointer(scratch), columns.count)
                    } else {
                        (matrix, ldb) = (source + columns.lowerBound, plane)
                    }
                    let firstChannel = group * groupOutputs + rows.lowerBound
                    let target = y + (n * outputChannels + firstChannel) * plane + columns.lowerBound
                    let residualTile = residual.map { $0 + (n * outputChannels + firstChannel) * plane + columns.lowerBound }
                    var beta: Float = 0
                    if avx512Kernels && (bias != nil || residualTile != nil) {
                        beta = 1
                        lance_fill_rows_avx512(target, plane, Int32(rows.count), Int32(columns.count),
                                               bias.map { $0 + firstChannel }, residualTile, plane)
                    } else if bias != nil || residualTile != nil {
                        beta = 1
                        for row in 0..<rows.count {
                            let shift = bias?[firstChannel + row] ?? 0
                            let out = target + row * plane
                            if let residualTile {
                                let r = residualTile + row * plane
                                for k in 0..<columns.count { out[k] = r[k] + shift }
                            } else {
                                out.update(repeating: shift, count: columns.count)
                            }
                        }
                    }
                    gemm(m: rows.count, n: columns.count, k: depth,
                         a: w + (group * groupOutputs + rows.lowerBound) * depth, lda: depth,
                         b: matrix, ldb: ldb, beta: beta, c: target, ldc: plane)
                    if avx512Kernels, let (clamp, low, high) = clampBounds(activation), clamp {
                        lance_shift_clamp_rows_avx512(target, plane, Int32(rows.count), Int32(columns.count), nil,
                                                      low, high)
                    } else if let activation {
                        for row in 0..<rows.count {
                            applyActivation(activation, to: target + row * plane, count: columns.count)
                        }
                    }
                }
              }
            }
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

/// 3×3 convolutions (dilation 1, equal strides 1 or 2) computed directly by the AVX-512 kernels:
/// depthwise (each output plane from one input plane, planes split over the cores) or dense with
/// few input channels (the stem convolution, where im2col + GEMM would mostly move the column
/// matrix): sixteen output channels at a time, bands of output rows split over the cores.
private func directConv3x3(_ input: Tensor, weight: Tensor, bias: Tensor?, groups: Int, geometry g: PlaneGeometry,
                           outputShape: [Int], activation: Activation?) -> Tensor {
    let channels = input.shape[1]
    let outputChannels = outputShape[1]
    let groupChannels = channels / groups
    let groupOutputs = outputChannels / groups
    let batch = outputShape[0]
    let bounds = clampBounds(activation)
    let (clamp, low, high): (Int32, Float, Float) = bounds.map { ($0.clamp ? 1 : 0, $0.low, $0.high) } ?? (0, 0, 0)
    return makeOutput(shape: outputShape) { out in
        input.withUnsafeBufferPointer { xBuffer in
            weight.withUnsafeBufferPointer { wBuffer in
                withOptionalBuffer(bias) { b in
                    nonisolated(unsafe) let x = xBuffer.baseAddress!
                    nonisolated(unsafe) let w = wBuffer.baseAddress!
                    nonisolated(unsafe) let y = out.baseAddress!
                    nonisolated(unsafe) let b = b
                    if groupChannels == 1 {
                        let planes = batch * outputChannels
                        parallelFor(planes, minimumPerChunk: max(1, 4_096 / max(1, g.outputPlane))) { range in
                            for index in range {
                                let m = index % outputChannels
                                let source = x + ((index / outputChannels) * channels + m / groupOutputs) * g.inputPlane
                                let target = y + index * g.outputPlane
                                lance_depthwise3x3_avx512(source, Int32(g.inputHeight), Int32(g.inputWidth), w + m * 9,
                                                          b?[m] ?? 0, target, Int32(g.outputHeight), Int32(g.outputWidth),
                                                          Int32(g.strideWidth), Int32(g.padTop), Int32(g.padLeft),
                                                          clamp, low, high)
                                if bounds == nil, let activation {
                                    applyActivation(activation, to: target, count: g.outputPlane)
                                }
                            }
                        }
                        return
                    }
                    // Dense (groups == 1 here): items are (image, block of 16 output channels, band of rows).
                    let blocks = (outputChannels + 15) / 16
                    let bands = min(g.outputHeight, 8)
                    parallelFor(batch * blocks * bands) { range in
                        for item in range {
                            let band = item % bands
                            let block = (item / bands) % blocks
                            let n = item / (bands * blocks)
                            let first = block * 16
                            let outputs = min(16, outputChannels - first)
                            let rows = (g.outputHeight * band / bands)..<(g.outputHeight * (band + 1) / bands)
                            let target = y + (n * outputChannels + first) * g.outputPlane
                            lance_conv3x3_dense_avx512(x + n * channels * g.inputPlane, g.inputPlane, Int32(channels),
                                                        Int32(g.inputHeight), Int32(g.inputWidth), w + first * channels * 9,
                                                        b.map { $0 + first }, Int32(outputs), target, g.outputPlane,
                                                        Int32(g.outputWidth), Int32(rows.lowerBound), Int32(rows.upperBound),
                                                        Int32(g.strideWidth), Int32(g.padTop), Int32(g.padLeft),
                                                        clamp, low, high)
                            if bounds == nil, let activation {
                                for q in 0..<outputs {
                                    applyActivation(activation, to: target + q * g.outputPlane + rows.lowerBound * g.outputWidth,
                                                    count: rows.count * g.outputWidth)
                                }
                            }
                        }
                    }
                }
            }
        }
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
    return makeOutput(shape: outputShape) { out in
        input.withUnsafeBufferPointer { xBuffer in
            weight.withUnsafeBufferPointer { wBuffer in
                nonisolated(unsafe) let x = xBuffer.baseAddress!
                nonisolated(unsafe) let w = wBuffer.baseAddress!
                nonisolated(unsafe) let y = out.baseAddress!
                let kernelArea = g.kernelHeight * g.kernelWidth
                let threeByThree = g.kernelHeight == 3 && g.kernelWidth == 3 && g.dilationHeight == 1
                    && g.dilationWidth == 1 && g.strideHeight == g.strideWidth
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
                                case 1 where threeByThree: plane.run3x3(stride: 1, activation: activation)
                                case 2 where threeByThree: plane.run3x3(stride: 2, activation: activation)
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

    /// 3×3 kernels with dilation 1 and equal strides 1 or 2: two output rows at a time (sharing
    /// the input rows they both read), eight columns at a time, the nine weights held in
    /// registers, and ReLU / Clip applied to the registers before the store.
    @inline(__always)
    func run3x3(stride: Int, activation: Activation?) {
        let g = layout.geometry
        let rowWidth = layout.rowWidth
        var low = -Float.infinity, high = Float.infinity
        var clamps = true
        switch activation {
        case nil: clamps = false
        case .relu?: low = 0
        case .clip(let minimum, let maximum)?: (low, high) = (minimum, maximum)
        default: clamps = false
        }
        let lowVector = SIMD8<Float>(repeating: low), highVector = SIMD8<Float>(repeating: high)
        let k0 = SIMD8<Float>(repeating: kernel[0]), k1 = SIMD8<Float>(repeating: kernel[1])
        let k2 = SIMD8<Float>(repeating: kernel[2]), k3 = SIMD8<Float>(repeating: kernel[3])
        let k4 = SIMD8<Float>(repeating: kernel[4]), k5 = SIMD8<Float>(repeating: kernel[5])
        let k6 = SIMD8<Float>(repeating: kernel[6]), k7 = SIMD8<Float>(repeating: kernel[7])
        let k8 = SIMD8<Float>(repeating: kernel[8])
        let start = SIMD8<Float>(repeating: bias)

        @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
            stride == 1
                ? UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
                : UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self).evenHalf
        }
        /// One input row's three taps: `a·x[0] + b·x[s] + c·x[2s]` (x at output stride).
        @inline(__always) func taps(_ p: UnsafePointer<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>,
                                    _ c: SIMD8<Float>) -> SIMD8<Float> {
            a * load(p) + b * load(p + 1) + c * load(p + 2)
        }
        @inline(__always) func store(_ value: SIMD8<Float>, row: Int, column: Int) {
            var value = value
            if clamps {
                value.replace(with: lowVector, where: value .< lowVector)
                value.replace(with: highVector, where: value .> highVector)
            }
            let out = target + row * g.outputWidth + column
            if column + 8 <= g.outputWidth {
                UnsafeMutableRawPointer(out).storeBytes(of: value, as: SIMD8<Float>.self)
            } else {
                for lane in 0..<(g.outputWidth - column) { out[lane] = value[lane] }
            }
        }

        var oh = 0
        while oh < g.outputHeight {
            let top = padded + oh * stride * rowWidth
            let pair = oh + 1 < g.outputHeight
            var ow = 0
            while ow < g.outputWidth {
                let p = top + ow * stride
                if pair {
                    // Rows 0, 1, 2 give output row oh; rows s, s+1, s+2 give row oh + 1.
                    let r0 = taps(p, k0, k1, k2)
                    let r1 = taps(p + rowWidth, k3, k4, k5)
                    let first: SIMD8<Float>, second: SIMD8<Float>
                    if stride == 1 {
                        let q1 = taps(p + rowWidth, k0, k1, k2)
                        let r2 = taps(p + 2 * rowWidth, k6, k7, k8)
                        let q2 = taps(p + 2 * rowWidth, k3, k4, k5)
                        let q3 = taps(p + 3 * rowWidth, k6, k7, k8)
                        first = start + r0 + r1 + r2
                        second = start + q1 + q2 + q3
                    } else {
                        let r2 = taps(p + 2 * rowWidth, k6, k7, k8)
                        let q2 = taps(p + 2 * rowWidth, k0, k1, k2)
                        let q3 = taps(p + 3 * rowWidth, k3, k4, k5)
                        let q4 = taps(p + 4 * rowWidth, k6, k7, k8)
                        first = start + r0 + r1 + r2
                        second = start + q2 + q3 + q4
                    }
                    store(first, row: oh, column: ow)
                    store(second, row: oh + 1, column: ow)
                } else {
                    let sum = start + taps(p, k0, k1, k2) + taps(p + rowWidth, k3, k4, k5)
                        + taps(p + 2 * rowWidth, k6, k7, k8)
                    store(sum, row: oh, column: ow)
                }
                ow += 8
            }
            if !clamps, let activation {
                applyActivation(activation, to: target + oh * g.outputWidth, count: g.outputWidth)
                if pair { applyActivation(activation, to: target + (oh + 1) * g.outputWidth, count: g.outputWidth) }
            }
            oh += pair ? 2 : 1
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


/// A scratch buffer of at least `count` floats owned by the calling thread and kept for its
/// later calls (the kernels' column matrices and block intermediates), so that it is mapped and
/// warm in the cache instead of newly allocated for every layer. Not reentrant: `body` must not
/// ask for the thread's scratch again.
func withThreadScratch<R>(count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
    let header: UnsafeMutablePointer<ScratchHeader>
    if let existing = pthread_getspecific(scratchKey) {
        header = existing.assumingMemoryBound(to: ScratchHeader.self)
    } else {
        header = .allocate(capacity: 1)
        header.initialize(to: ScratchHeader(pointer: nil, capacity: 0))
        pthread_setspecific(scratchKey, header)
    }
    if header.pointee.capacity < max(count, 1) {
        header.pointee.pointer?.deallocate()
        // Rounded up to 256 KiB steps so that slightly different sizes share one buffer.
        let capacity = (count + 65_535) / 65_536 * 65_536
        header.pointee.pointer = UnsafeMutableRawPointer.allocate(byteCount: capacity * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: capacity)
        header.pointee.capacity = capacity
    }
    return body(header.pointee.pointer!)
}

struct ScratchHeader {
    var pointer: UnsafeMutablePointer<Float>?
    var capacity: Int
}

private let scratchKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { raw in
        guard let raw else { return }
        let header = raw.assumingMemoryBound(to: ScratchHeader.self)
        header.pointee.pointer?.deallocate()
        header.deallocate()
    }
    return key
}()

/// One convolution of an `InvertedResidualBlock`: its weight, bias and fused activation.
public struct BlockConvolution: Sendable {
    public var weight: Tensor
    public var bias: Tensor?
    public var convolution: Convolution
    public var activation: Activation?

    public init(weight: Tensor, bias: Tensor?, convolution: Convolution, activation: Activation?) {
        self.weight = weight
        self.bias = bias
        self.convolution = convolution
        self.activation = activation
    }
}

/// A MobileNetV2-style block: an optional 1×1 expansion, a 3×3 depthwise convolution (stride 1
/// or 2) and a 1×1 projection, each with its bias and activation, and an optional residual added
/// to the projection:
///
/// ```
/// Y = R + project(depthwise(expand(X)))
/// ```
///
/// Computed in bands of output rows that the cores share: each band expands the input rows its
/// depthwise rows read (one more above and below), runs the depthwise convolution and projects,
/// all in cache-sized scratch buffers, so that the wide intermediate tensors never reach memory.
/// Bands depend only on the shapes (bit-identical however a batch is split).
///
/// Returns `nil` when the block does not have that form or the AVX-512 kernels are not
/// available; the caller then runs the three convolutions one by one.
public func invertedResidual(_ input: Tensor, expand: BlockConvolution?, depthwise: BlockConvolution,
                             project: BlockConvolution, residual: Tensor?) -> Tensor? {
    guard avx512Kernels, input.rank == 4 else { return nil }
    let (batch, channels, height, width) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
    func isPointwise(_ c: BlockConvolution, inputs: Int) -> Bool {
        let w = c.convolution.window
        return c.convolution.groups == 1 && c.weight.rank == 4 && c.weight.shape[1] == inputs
            && c.weight.shape[2] == 1 && c.weight.shape[3] == 1 && w.kernelSize == [1, 1] && w.strides == [1, 1]
            && w.dilations == [1, 1] && w.resolvedPadding(height: height, width: width) == (0, 0, 0, 0)
    }
    if let expand { guard isPointwise(expand, inputs: channels) else { return nil } }
    let expanded = expand?.weight.shape[0] ?? channels
    let dw = depthwise.convolution.window
    guard depthwise.convolution.groups == expanded, depthwise.weight.shape == [expanded, 1, 3, 3],
          dw.kernelSize == [3, 3], dw.dilations == [1, 1], dw.strides[0] == dw.strides[1],
          dw.strides[0] == 1 || dw.strides[0] == 2,
          let dwBounds = clampBounds(depthwise.activation), expand.map({ clampBounds($0.activation) != nil }) ?? true
    else { return nil }
    let stride = dw.strides[0]
    let pads = dw.resolvedPadding(height: height, width: width)
    let out = dw.outputSize(height: height, width: width)
    let (outputHeight, outputWidth) = (out.height, out.width)
    let outputPlane = outputHeight * outputWidth
    // Planes under 14 rows: bands would be too thin (the expansion's halo rows and the weights'
    // packing per band cost more than the fusion saves).
    guard outputHeight >= 14, outputWidth >= 1 else { return nil }
    let projectWindow = project.convolution.window
    guard project.convolution.groups == 1, project.weight.rank == 4, project.weight.shape[1] == expanded,
          project.weight.shape[2] == 1, project.weight.shape[3] == 1, projectWindow.kernelSize == [1, 1],
          projectWindow.strides == [1, 1], projectWindow.dilations == [1, 1],
          projectWindow.resolvedPadding(height: outputHeight, width: outputWidth) == (0, 0, 0, 0)
    else { return nil }
    let outputs = project.weight.shape[0]
    let outputShape = [batch, outputs, outputHeight, outputWidth]
    guard residual == nil || residual!.shape == outputShape else { return nil }

    // Bands of 14 output rows at stride 1 (the expansion recomputes 2 halo rows per band) and 7
    // at stride 2 (1 halo row), at least two bands per image: about 1 MiB of scratch each
    // for MobileNetV2 (measured: 4 bands of 14 rows beat 8 of 7 at 56×56 stride 1; 8 of 7
    // beat 4 of 14 at 112→56 stride 2).
    let bandRows = min(stride == 1 ? 14 : 7, (outputHeight + 1) / 2)
    let bandCount = (outputHeight + bandRows - 1) / bandRows
    let maxInputRows = min(height, (bandRows - 1) * stride + 3)
    let expandBounds = expand.flatMap { clampBounds($0.activation) }
    let projectBounds = clampBounds(project.activation)
    let dwClamp: Int32 = dwBounds.clamp ? 1 : 0

    return makeOutput(shape: outputShape) { result in
        input.withUnsafeBufferPointer { xBuffer in
        withOptionalBuffer(expand?.weight) { expandWeight in
        withOptionalBuffer(expand?.bias) { expandBias in
        depthwise.weight.withUnsafeBufferPointer { dwWeightBuffer in
        withOptionalBuffer(depthwise.bias) { dwBias in
        project.weight.withUnsafeBufferPointer { projectWeightBuffer in
        withOptionalBuffer(project.bias) { projectBias in
        withOptionalBuffer(residual) { residualBase in
            nonisolated(unsafe) let x = xBuffer.baseAddress!, y = result.baseAddress!
            nonisolated(unsafe) let expandWeight = expandWeight, expandBias = expandBias
            nonisolated(unsafe) let dwWeight = dwWeightBuffer.baseAddress!, dwBias = dwBias
            nonisolated(unsafe) let projectWeight = projectWeightBuffer.baseAddress!, projectBias = projectBias
            nonisolated(unsafe) let residualBase = residualBase
            BLASThreads.withSingleThread {
                let expandCount = expandWeight == nil ? 0 : (expanded * maxInputRows * width + 15) / 16 * 16
                parallelFor(batch * bandCount) { range in
                  withThreadScratch(count: expandCount + expanded * bandRows * outputWidth) { scratch in
                    let expandScratch: UnsafeMutablePointer<Float>? = expandWeight == nil ? nil : scratch
                    let dwScratch = scratch + expandCount
                    for item in range {
                        let n = item / bandCount
                        let band = item % bandCount
                        let firstRow = band * bandRows
                        let rows = min(outputHeight, firstRow + bandRows) - firstRow
                        // Input rows the band's depthwise rows read (inside the image).
                        let top = firstRow * stride - pads.top
                        let firstInput = max(0, top)
                        let endInput = min(height, (firstRow + rows - 1) * stride - pads.top + 3)
                        let inputRows = endInput - firstInput
                        let source = x + n * channels * height * width
                        // 1. Expansion of those rows into [expanded, inputRows·W].
                        let dwInput: UnsafePointer<Float>
                        let dwPlane: Int
                        if let expandWeight, let expandScratch {
                            let columns = inputRows * width
                            var beta: Float = 0
                            if let expandBias {
                                lance_fill_rows_avx512(expandScratch, columns, Int32(expanded), Int32(columns), expandBias,
                                                       nil, 0)
                                beta = 1
                            }
                            gemm(m: expanded, n: columns, k: channels, a: expandWeight, lda: channels,
                                 b: source + firstInput * width, ldb: height * width, beta: beta,
                                 c: expandScratch, ldc: columns)
                            if let expandBounds, expandBounds.clamp {
                                lance_shift_clamp_rows_avx512(expandScratch, columns, Int32(expanded), Int32(columns), nil,
                                                              expandBounds.low, expandBounds.high)
                            }
                            (dwInput, dwPlane) = (UnsafePointer(expandScratch), columns)
                        } else {
                            (dwInput, dwPlane) = (source + firstInput * width, height * width)
                        }
                        // 2. Depthwise rows of the band into [expanded, rows·W'].
                        let dwColumns = rows * outputWidth
                        for c in 0..<expanded {
                            lance_depthwise3x3_avx512(dwInput + c * dwPlane, Int32(inputRows), Int32(width), dwWeight + c * 9,
                                                      dwBias?[c] ?? 0, dwScratch + c * dwColumns, Int32(rows),
                                                      Int32(outputWidth), Int32(stride), Int32(firstInput - top),
                                                      Int32(pads.left), dwClamp, dwBounds.low, dwBounds.high)
                        }
                        // 3. Projection into the output rows, from bias (+ residual).
                        let target = y + n * outputs * outputPlane + firstRow * outputWidth
                        var beta: Float = 0
                        if projectBias != nil || residualBase != nil {
                            lance_fill_rows_avx512(target, outputPlane, Int32(outputs), Int32(dwColumns), projectBias,
                                                   residualBase.map { $0 + n * outputs * outputPlane + firstRow * outputWidth },
                                                   outputPlane)
                            beta = 1
                        }
                        gemm(m: outputs, n: dwColumns, k: expanded, a: projectWeight, lda: expanded,
                             b: dwScratch, ldb: dwColumns, beta: beta, c: target, ldc: outputPlane)
                        if let activation = project.activation {
                            if let projectBounds, projectBounds.clamp {
                                lance_shift_clamp_rows_avx512(target, outputPlane, Int32(outputs), Int32(dwColumns), nil,
                                                              projectBounds.low, projectBounds.high)
                            } else {
                                for row in 0..<outputs {
                                    applyActivation(activation, to: target + row * outputPlane, count: dwColumns)
                                }
                            }
                        }
                    }
                  }
                }
            }
        }}}}}}}}
    }
}

