import LanceCore
import LanceLinalg
import LanceModel

// Backward kernels of 2-D convolution (float32, NCHW activations, OIHW kernels).
//
// Forward, for reference (`conv2d` in Convolution.swift):
//
//     Y[n, m, oh, ow] = B[m] + Σ_{c, i, j} W[m, c, i, j] · Xpad[n, g·Cg + c, oh·sH + i·dH, ow·sW + j·dW]
//
// with `g = m / Mg`, `Mg = M / groups`, `Cg = C / groups`, and Xpad the input padded by
// `(padTop, padLeft, padBottom, padRight)` zeros (explicit or resolved from `sameUpper`/`sameLower`).

/// The three gradients of a convolution node `Y = conv2d(X, W, B)`.
public struct ConvolutionGradients: Sendable, Equatable {
    /// `∂L/∂X`, `[N, C, H, W]`.
    public var input: Tensor
    /// `∂L/∂W`, `[M, C / groups, kH, kW]`.
    public var weight: Tensor
    /// `∂L/∂B`, `[M]`, or `nil` when the node has no bias.
    public var bias: Tensor?

    /// Creates a set of convolution gradients.
    public init(input: Tensor, weight: Tensor, bias: Tensor?) {
        self.input = input
        self.weight = weight
        self.bias = bias
    }
}

/// All gradients of `Y = conv2d(X, W, B)` from the saved input and weight (full backpropagation):
/// `conv2dInputGradient`, `conv2dWeightGradient` and, with `hasBias`, `conv2dBiasGradient`.
///
/// - Parameters:
///   - input: X `[N, C, H, W]`.
///   - weight: W `[M, C / groups, kH, kW]`.
///   - hasBias: whether the node has a bias B `[M]`.
///   - convolution: the node's hyperparameters.
///   - outputGradient: `∂L/∂Y`, `[N, M, H', W']`.
public func conv2dBackward(input: Tensor, weight: Tensor, hasBias: Bool, convolution: Convolution,
                           outputGradient: Tensor) -> ConvolutionGradients {
    ConvolutionGradients(
        input: conv2dInputGradient(outputGradient: outputGradient, weight: weight, inputShape: input.shape,
                                   convolution: convolution),
        weight: conv2dWeightGradient(input: input, outputGradient: outputGradient, weightShape: weight.shape,
                                     convolution: convolution),
        bias: hasBias ? conv2dBiasGradient(outputGradient: outputGradient) : nil)
}

/// The input gradient of a 2-D convolution (a transposed convolution of `dY` with `W`):
///
/// ```
/// dX[n, g·Cg + c, ih, iw] = Σ_{m ∈ group g} Σ_{i, j : ih = oh·sH − padTop + i·dH, iw = ow·sW − padLeft + j·dW}
///                              W[m, c, i, j] · dY[n, m, oh, ow]
/// ```
///
/// Any `groups` (including depthwise with a channel multiplier), stride, dilation and padding
/// (explicit, asymmetric, `sameUpper`, `sameLower`). Depthwise convolutions (`groups == C`,
/// weight `[M, 1, kH, kW]`) run as a direct scatter loop over input planes; all others as one
/// `gemm` per image and group, `cols[Cg·kH·kW, H'·W'] = W_gᵀ · dY_g`, followed by col2im
/// (scatter-add of the columns into the padded input frame, dropping the padding).
///
/// - Parameters:
///   - outputGradient: `dY`, `[N, M, H', W']`.
///   - weight: W `[M, C / groups, kH, kW]`.
///   - inputShape: `[N, C, H, W]`.
///   - convolution: the forward hyperparameters.
/// - Returns: `dX`, `[N, C, H, W]`.
public func conv2dInputGradient(outputGradient: Tensor, weight: Tensor, inputShape: [Int],
                                convolution: Convolution) -> Tensor {
    let layout = ConvolutionBackwardLayout(inputShape: inputShape, weightShape: weight.shape,
                                           convolution: convolution, outputGradientShape: outputGradient.shape)
    if layout.isDepthwise {
        return depthwiseInputGradient(outputGradient: outputGradient, weight: weight, layout: layout)
    }
    let g = layout.geometry
    let depth = layout.groupChannels * g.kernelHeight * g.kernelWidth
    let plane = g.outputHeight * g.outputWidth
    // A 1×1 kernel with stride 1 and no padding: the columns are the input gradient's planes.
    let pointwise = g.isPointwise
    return Tensor(shape: inputShape) { out in
        let batched = layout.groups == 1 && plane <= batchedPlaneLimit && depth > 0
        if !(batched && pointwise) { out.initialize(repeating: 0) }
        guard layout.batch > 0, plane > 0, depth > 0 else { return }
        if batched {
            // Small output planes: cols[C·kH·kW, n·H'·W'] = Wᵀ · dY[M, n·H'·W'] for several images at
            // once, then col2im per image.
            // The chunks write disjoint images: they run on all cores, each with single-threaded
            // BLAS and its own scratch (no OpenBLAS threads waking and spinning for each gemm).
            outputGradient.withUnsafeBufferPointer { dyBuffer in
                weight.withUnsafeBufferPointer { wBuffer in
                    nonisolated(unsafe) let dy = dyBuffer.baseAddress!
                    nonisolated(unsafe) let w = wBuffer.baseAddress!
                    nonisolated(unsafe) let dx = out.baseAddress!
                    let chunk = imageChunkSize(layout: layout, depth: depth, plane: plane)
                    BLASThreads.withSingleThread {
                        parallelFor((layout.batch + chunk - 1) / chunk) { chunks in
                            let columns = UnsafeMutablePointer<Float>.allocate(capacity: depth * chunk * plane)
                            let gradients = UnsafeMutablePointer<Float>.allocate(capacity: layout.outputChannels * chunk * plane)
                            let image = pointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: depth * plane)
                            defer {
                                columns.deallocate()
                                gradients.deallocate()
                                image?.deallocate()
                            }
                            for index in chunks {
                                let images = (index * chunk)..<min((index + 1) * chunk, layout.batch)
                                gatherImages(images, x: nil, dy: dy, layout: layout, depth: depth, plane: plane,
                                             columns: columns, gradients: gradients)
                                let width = images.count * plane
                                gemm(transposeA: true, m: depth, n: width, k: layout.outputChannels, a: w, lda: depth,
                                     b: gradients, ldb: width, beta: 0, c: columns, ldc: width)
                                for (offset, n) in images.enumerated() {
                                    let target = image ?? dx + n * layout.channels * g.inputPlane
                                    for row in 0..<depth {
                                        (target + row * plane).update(from: columns + row * width + offset * plane, count: plane)
                                    }
                                    if let image {
                                        scatterPatchColumns(image, channelCount: layout.channels, geometry: g,
                                                            into: dx + n * layout.channels * g.inputPlane)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return
        }
        outputGradient.withUnsafeBufferPointer { dyBuffer in
            weight.withUnsafeBufferPointer { wBuffer in
                nonisolated(unsafe) let dy = dyBuffer.baseAddress!
                nonisolated(unsafe) let w = wBuffer.baseAddress!
                nonisolated(unsafe) let dx = out.baseAddress!
                let work = { (images: Range<Int>) in
                    let columns = UnsafeMutablePointer<Float>.allocate(capacity: depth * plane)
                    defer { columns.deallocate() }
                    for n in images {
                        for group in 0..<layout.groups {
                            // cols[Cg·kH·kW, H'·W'] = W_gᵀ[Cg·kH·kW, Mg] · dY_g[Mg, H'·W']
                            gemm(transposeA: true, m: depth, n: plane, k: layout.groupOutputs,
                                 a: w + group * layout.groupOutputs * depth, lda: depth,
                                 b: dy + (n * layout.outputChannels + group * layout.groupOutputs) * plane, ldb: plane,
                                 beta: 0, c: columns, ldc: plane)
                            scatterPatchColumns(columns, channelCount: layout.groupChannels, geometry: g,
                                                into: dx + (n * layout.channels + group * layout.groupChannels) * g.inputPlane)
                        }
                    }
                }
                runOverImages(layout.batch, work)
            }
        }
    }
}

/// The weight gradient of a 2-D convolution:
///
/// ```
/// dW[m, c, i, j] = Σ_{n, oh, ow} dY[n, m, oh, ow] · Xpad[n, g·Cg + c, oh·sH + i·dH, ow·sW + j·dW]
/// ```
///
/// For `groups == 1` and grouped convolutions: im2col of each image and group
/// (`cols[Cg·kH·kW, H'·W']`) and `dW_g[Mg, Cg·kH·kW] += dY_g[Mg, H'·W'] · colsᵀ` through `gemm`
/// (OpenBLAS), accumulated over the images; the images are split across the cores, each with its
/// own partial dW and single-threaded BLAS, and the partials summed. Depthwise (`groups == C`, weight `[M, 1, kH, kW]`):
/// a direct loop per output channel.
///
/// This is also the "weight-gradient convolution" of LANCE (method section 3.1, step 4), where the
/// reduced batch index plays the role of `n`.
///
/// - Parameters:
///   - input: X `[N, C, H, W]` (unpadded; the padding comes from `convolution`).
///   - outputGradient: `dY`, `[N, M, H', W']`.
///   - weightShape: `[M, C / groups, kH, kW]`.
///   - convolution: the forward hyperparameters.
/// - Returns: `dW`, `weightShape`.
public func conv2dWeightGradient(input: Tensor, outputGradient: Tensor, weightShape: [Int],
                                 convolution: Convolution) -> Tensor {
    let layout = ConvolutionBackwardLayout(inputShape: input.shape, weightShape: weightShape,
                                           convolution: convolution, outputGradientShape: outputGradient.shape)
    if layout.isDepthwise {
        return depthwiseWeightGradient(input: input, outputGradient: outputGradient, layout: layout)
    }
    let g = layout.geometry
    let depth = layout.groupChannels * g.kernelHeight * g.kernelWidth
    let plane = g.outputHeight * g.outputWidth
    let weightCount = weightShape.reduce(1, *)
    return Tensor(shape: weightShape) { out in
        out.initialize(repeating: 0)
        guard layout.batch > 0, plane > 0, depth > 0 else { return }
        if layout.groups == 1 && plane <= batchedPlaneLimit {
            // Small output planes (the late layers of a CNN): the images side by side, so that each
            // gemm has a long inner dimension: dW[M, C·kH·kW] += dY[M, n·H'·W'] · cols[C·kH·kW, n·H'·W']ᵀ.
            input.withUnsafeBufferPointer { x in
                outputGradient.withUnsafeBufferPointer { dy in
                    forImageChunks(layout: layout, depth: depth, plane: plane) { images, columns, gradients in
                        gatherImages(images, x: x.baseAddress!, dy: dy.baseAddress!, layout: layout, depth: depth, plane: plane,
                                     columns: columns, gradients: gradients)
                        let width = images.count * plane
                        gemm(transposeB: true, m: layout.outputChannels, n: depth, k: width, a: gradients, lda: width,
                             b: columns, ldb: width, beta: 1, c: out.baseAddress!, ldc: depth)
                    }
                }
            }
            return
        }
        input.withUnsafeBufferPointer { xBuffer in
            outputGradient.withUnsafeBufferPointer { dyBuffer in
                nonisolated(unsafe) let x = xBuffer.baseAddress!
                nonisolated(unsafe) let dy = dyBuffer.baseAddress!
                // Each worker accumulates its images into its own partial dW; the partials are summed.
                let workers = layout.batch >= 2 ? min(availableKernelThreads, layout.batch) : 1
                let partials = UnsafeMutablePointer<Float>.allocate(capacity: workers * weightCount)
                defer { partials.deallocate() }
                partials.initialize(repeating: 0, count: workers * weightCount)
                nonisolated(unsafe) let partialBase = partials
                let work = { (worker: Int) in
                    let images = (layout.batch * worker / workers)..<(layout.batch * (worker + 1) / workers)
                    let dw = partialBase + worker * weightCount
                    let columns = UnsafeMutablePointer<Float>.allocate(capacity: depth * plane)
                    defer { columns.deallocate() }
                    for n in images {
                        for group in 0..<layout.groups {
                            gatherPatchColumns(x + (n * layout.channels + group * layout.groupChannels) * g.inputPlane,
                                               channelCount: layout.groupChannels, geometry: g, into: columns)
                            // dW_g[Mg, Cg·kH·kW] += dY_g[Mg, H'·W'] · cols[Cg·kH·kW, H'·W']ᵀ
                            gemm(transposeB: true, m: layout.groupOutputs, n: depth, k: plane,
                                 a: dy + (n * layout.outputChannels + group * layout.groupOutputs) * plane, lda: plane,
                                 b: columns, ldb: plane,
                                 beta: 1, c: dw + group * layout.groupOutputs * depth, ldc: depth)
                        }
                    }
                }
                if workers > 1 {
                    BLASThreads.withSingleThread {
                        parallelFor(workers) { range in for worker in range { work(worker) } }
                    }
                } else {
                    work(0)
                }
                for worker in 0..<workers {
                    let partial = partials + worker * weightCount
                    for k in 0..<weightCount { out[k] += partial[k] }
                }
            }
        }
    }
}

/// Output planes up to this many pixels take the batched path of the `groups == 1` gradients
/// (several images per `gemm`): per-image products there have an inner or outer dimension of a
/// few dozen, which leaves most of the BLAS kernel's time to packing.
let batchedPlaneLimit = 1024

/// Runs `body` over chunks of images with two scratch matrices of `depth × n·plane` (columns) and
/// `M × n·plane` (output gradients), n at most what keeps each near 256 Ki floats (1 MiB: a few images
/// side by side already give the gemms a long inner dimension, and the scratch stays small next to
/// the activations a training step holds).
private func forImageChunks(layout: ConvolutionBackwardLayout, depth: Int, plane: Int,
                            _ body: (Range<Int>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void) {
    let chunk = imageChunkSize(layout: layout, depth: depth, plane: plane)
    let columns = UnsafeMutablePointer<Float>.allocate(capacity: depth * chunk * plane)
    let gradients = UnsafeMutablePointer<Float>.allocate(capacity: layout.outputChannels * chunk * plane)
    defer {
        columns.deallocate()
        gradients.deallocate()
    }
    var start = 0
    while start < layout.batch {
        let images = start..<min(start + chunk, layout.batch)
        body(images, columns, gradients)
        start = images.upperBound
    }
}

/// Images per chunk of `forImageChunks`: what keeps each scratch matrix near 256 Ki floats.
func imageChunkSize(layout: ConvolutionBackwardLayout, depth: Int, plane: Int) -> Int {
    max(1, min(layout.batch, (1 << 18) / max(max(depth, layout.outputChannels) * plane, 1)))
}

/// Lays the images of a chunk side by side: `gradients[m, i·plane + p] = dY[n_i, m, p]` and, with
/// an input, `columns[f, i·plane + p]` = image n_i's im2col matrix (`gatherColumns`).
private func gatherImages(_ images: Range<Int>, x: UnsafePointer<Float>?, dy: UnsafePointer<Float>, layout: ConvolutionBackwardLayout,
                          depth: Int, plane: Int, columns: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
    let width = images.count * plane
    for (offset, n) in images.enumerated() {
        for m in 0..<layout.outputChannels {
            (gradients + m * width + offset * plane).update(from: dy + (n * layout.outputChannels + m) * plane, count: plane)
        }
    }
    if let x { gatherColumns(images, x: x, layout: layout, depth: depth, plane: plane, into: columns) }
}

/// Lays the im2col matrices of a chunk's images side by side: `columns[f, i·plane + p]` =
/// `cols[f, p]` of image n_i (`depth = C·kH·kW` rows; for a pointwise geometry its planes, copied).
func gatherColumns(_ images: Range<Int>, x: UnsafePointer<Float>, layout: ConvolutionBackwardLayout, depth: Int, plane: Int,
                   into columns: UnsafeMutablePointer<Float>) {
    let width = images.count * plane
    let g = layout.geometry
    let image = g.isPointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: depth * plane)
    defer { image?.deallocate() }
    for (offset, n) in images.enumerated() {
        var source = x + n * layout.channels * g.inputPlane
        if let image {
            gatherPatchColumns(source, channelCount: layout.channels, geometry: g, into: image)
            source = UnsafePointer(image)
        }
        for row in 0..<depth { (columns + row * width + offset * plane).update(from: source + row * plane, count: plane) }
    }
}

/// The bias gradient of a 2-D convolution: `dB[m] = Σ_{n, oh, ow} dY[n, m, oh, ow]`.
///
/// Each plane is summed in single precision (16 lanes), the planes of a channel in double
/// precision; the channels are shared by the cores.
///
/// - Parameter outputGradient: `dY`, `[N, M, H', W']` (any rank ≥ 2: axis 1 is the channel).
/// - Returns: `dB`, `[M]`.
public func conv2dBiasGradient(outputGradient: Tensor) -> Tensor {
    let batch = outputGradient.shape[0], channels = outputGradient.shape[1]
    let plane = outputGradient.shape.dropFirst(2).reduce(1, *)
    return Tensor(shape: [channels]) { out in
        outputGradient.withUnsafeBufferPointer { dyBuffer in
            nonisolated(unsafe) let dy = dyBuffer.baseAddress!
            nonisolated(unsafe) let sums = out.baseAddress!
            parallelFor(channels, minimumPerChunk: max(1, 65_536 / max(1, batch * plane))) { range in
                for m in range {
                    var sum: Double = 0
                    for n in 0..<batch { sum += Double(laneSum(dy + (n * channels + m) * plane, count: plane)) }
                    sums[m] = Float(sum)
                }
            }
        }
    }
}

// MARK: - Layout and patch helpers

/// Shapes of one convolution's backward pass, checked against each other.
struct ConvolutionBackwardLayout {
    let batch: Int, channels: Int, outputChannels: Int, groups: Int
    let groupChannels: Int, groupOutputs: Int
    let geometry: BackwardPlaneGeometry
    /// `groups == C` with one input channel per group (`[M, 1, kH, kW]` weights).
    let isDepthwise: Bool

    init(inputShape: [Int], weightShape: [Int], convolution: Convolution, outputGradientShape: [Int]) {
        precondition(inputShape.count == 4 && weightShape.count == 4 && outputGradientShape.count == 4,
                     "convolution backward needs rank-4 input, weight and output gradient")
        batch = inputShape[0]
        channels = inputShape[1]
        outputChannels = weightShape[0]
        groups = convolution.groups
        precondition(groups >= 1 && channels % groups == 0 && outputChannels % groups == 0,
                     "groups \(groups) must divide the input channels \(channels) and output channels \(outputChannels)")
        groupChannels = channels / groups
        groupOutputs = outputChannels / groups
        precondition(weightShape[1] == groupChannels,
                     "weight \(weightShape) needs \(groupChannels) input channels per group")
        let window = convolution.window
        let (height, width) = (inputShape[2], inputShape[3])
        let output = window.outputSize(height: height, width: width)
        precondition(outputGradientShape == [batch, outputChannels, output.height, output.width],
                     "output gradient \(outputGradientShape) differs from the convolution output [\(batch), \(outputChannels), \(output.height), \(output.width)]")
        let pads = window.resolvedPadding(height: height, width: width)
        geometry = BackwardPlaneGeometry(
            inputHeight: height, inputWidth: width, outputHeight: output.height, outputWidth: output.width,
            kernelHeight: weightShape[2], kernelWidth: weightShape[3],
            strideHeight: window.strides[0], strideWidth: window.strides[1],
            dilationHeight: window.dilations[0], dilationWidth: window.dilations[1],
            padTop: pads.top, padLeft: pads.left)
        isDepthwise = groups == channels && groupChannels == 1
    }
}

/// One input plane, one output plane and the window between them (backward-pass copy of the
/// forward geometry, so the two files can change independently).
struct BackwardPlaneGeometry {
    var inputHeight: Int, inputWidth: Int, outputHeight: Int, outputWidth: Int
    var kernelHeight: Int, kernelWidth: Int, strideHeight: Int, strideWidth: Int
    var dilationHeight: Int, dilationWidth: Int, padTop: Int, padLeft: Int

    var inputPlane: Int { inputHeight * inputWidth }
    var outputPlane: Int { outputHeight * outputWidth }

    /// Whether the 1×1 convolution reads the input plane unchanged.
    var isPointwise: Bool {
        kernelHeight == 1 && kernelWidth == 1 && strideHeight == 1 && strideWidth == 1 && padTop == 0
            && padLeft == 0 && outputHeight == inputHeight && outputWidth == inputWidth
    }

    /// The output indices `o < outputCount` with `0 ≤ o·stride + offset < inputCount`.
    @inline(__always)
    static func validOutputs(offset: Int, stride: Int, inputCount: Int, outputCount: Int) -> Range<Int> {
        let first = offset >= 0 ? 0 : (-offset + stride - 1) / stride
        let limit = inputCount - 1 - offset
        let end = limit < 0 ? 0 : min(outputCount, limit / stride + 1)
        return first < end ? first..<end : 0..<0
    }

    /// Output rows reading input row `oh·sH − padTop + i·dH` inside the input, for kernel row `i`.
    @inline(__always)
    func validRows(kernelRow i: Int) -> Range<Int> {
        Self.validOutputs(offset: i * dilationHeight - padTop, stride: strideHeight,
                          inputCount: inputHeight, outputCount: outputHeight)
    }

    /// Output columns reading input column `ow·sW − padLeft + j·dW` inside the input, for kernel column `j`.
    @inline(__always)
    func validColumns(kernelColumn j: Int) -> Range<Int> {
        Self.validOutputs(offset: j * dilationWidth - padLeft, stride: strideWidth,
                          inputCount: inputWidth, outputCount: outputWidth)
    }
}

/// im2col: writes `cols[(c·kH + i)·kW + j, oh·W' + ow] = Xpad[c, oh·sH + i·dH, ow·sW + j·dW]` for
/// `channelCount` planes starting at `x` (zeros where the window reads padding).
func gatherPatchColumns(_ x: UnsafePointer<Float>, channelCount: Int, geometry g: BackwardPlaneGeometry,
                        into columns: UnsafeMutablePointer<Float>) {
    let plane = g.outputPlane
    for c in 0..<channelCount {
        let source = x + c * g.inputPlane
        for i in 0..<g.kernelHeight {
            let rows = g.validRows(kernelRow: i)
            for j in 0..<g.kernelWidth {
                let row = columns + ((c * g.kernelHeight + i) * g.kernelWidth + j) * plane
                row.update(repeating: 0, count: plane)
                let valid = g.validColumns(kernelColumn: j)
                guard !valid.isEmpty else { continue }
                for oh in rows {
                    let ih = oh * g.strideHeight - g.padTop + i * g.dilationHeight
                    let sourceRow = source + ih * g.inputWidth + j * g.dilationWidth - g.padLeft
                    let target = row + oh * g.outputWidth
                    for ow in valid { target[ow] = sourceRow[ow * g.strideWidth] }
                }
            }
        }
    }
}

/// col2im: adds `cols[(c·kH + i)·kW + j, oh·W' + ow]` into `x[c, oh·sH − padTop + i·dH, ow·sW − padLeft + j·dW]`
/// wherever that position lies inside the input (the adjoint of `gatherPatchColumns`).
func scatterPatchColumns(_ columns: UnsafePointer<Float>, channelCount: Int, geometry g: BackwardPlaneGeometry,
                         into x: UnsafeMutablePointer<Float>) {
    let plane = g.outputPlane
    for c in 0..<channelCount {
        let target = x + c * g.inputPlane
        for i in 0..<g.kernelHeight {
            let rows = g.validRows(kernelRow: i)
            for j in 0..<g.kernelWidth {
                let row = columns + ((c * g.kernelHeight + i) * g.kernelWidth + j) * plane
                let valid = g.validColumns(kernelColumn: j)
                guard !valid.isEmpty else { continue }
                for oh in rows {
                    let ih = oh * g.strideHeight - g.padTop + i * g.dilationHeight
                    let targetRow = target + ih * g.inputWidth + j * g.dilationWidth - g.padLeft
                    let source = row + oh * g.outputWidth
                    for ow in valid { targetRow[ow * g.strideWidth] += source[ow] }
                }
            }
        }
    }
}

/// Runs `work` over image ranges: split across cores with single-threaded BLAS when there are
/// enough images, otherwise in one call with OpenBLAS's own threads.
private func runOverImages(_ batch: Int, _ work: (Range<Int>) -> Void) {
    if batch >= 2 && availableKernelThreads > 1 {
        BLASThreads.withSingleThread {
            parallelFor(batch) { images in work(images) }
        }
    } else {
        work(0..<batch)
    }
}

// MARK: - Depthwise

/// `dX[n, c] = Σ_{m of channel c} transposed-conv(dY[n, m], W[m, 0])`, one input plane per task.
private func depthwiseInputGradient(outputGradient: Tensor, weight: Tensor, layout: ConvolutionBackwardLayout) -> Tensor {
    let g = layout.geometry
    let multiplier = layout.outputChannels / layout.channels
    let kernelArea = g.kernelHeight * g.kernelWidth
    return Tensor(shape: [layout.batch, layout.channels, g.inputHeight, g.inputWidth]) { out in
        out.initialize(repeating: 0)
        outputGradient.withUnsafeBufferPointer { dyBuffer in
            weight.withUnsafeBufferPointer { wBuffer in
                nonisolated(unsafe) let dy = dyBuffer.baseAddress!
                nonisolated(unsafe) let w = wBuffer.baseAddress!
                nonisolated(unsafe) let dx = out.baseAddress!
                parallelFor(layout.batch * layout.channels, minimumPerChunk: max(1, 2_048 / max(1, g.outputPlane))) { planes in
                    for index in planes {
                        let n = index / layout.channels, c = index % layout.channels
                        let target = dx + index * g.inputPlane
                        for m in (c * multiplier)..<((c + 1) * multiplier) {
                            let source = dy + (n * layout.outputChannels + m) * g.outputPlane
                            for i in 0..<g.kernelHeight {
                                let rows = g.validRows(kernelRow: i)
                                for j in 0..<g.kernelWidth {
                                    let tap = w[m * kernelArea + i * g.kernelWidth + j]
                                    let valid = g.validColumns(kernelColumn: j)
                                    guard !valid.isEmpty else { continue }
                                    for oh in rows {
                                        let ih = oh * g.strideHeight - g.padTop + i * g.dilationHeight
                                        let targetRow = target + ih * g.inputWidth + j * g.dilationWidth - g.padLeft
                                        let sourceRow = source + oh * g.outputWidth
                                        for ow in valid { targetRow[ow * g.strideWidth] += tap * sourceRow[ow] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dW[m, 0, i, j] = Σ_{n, oh, ow} dY[n, m, oh, ow] · Xpad[n, m / multiplier, oh·sH + i·dH, ow·sW + j·dW]`,
/// one output channel per task.
private func depthwiseWeightGradient(input: Tensor, outputGradient: Tensor, layout: ConvolutionBackwardLayout) -> Tensor {
    let g = layout.geometry
    let multiplier = layout.outputChannels / layout.channels
    let kernelArea = g.kernelHeight * g.kernelWidth
    return Tensor(shape: [layout.outputChannels, 1, g.kernelHeight, g.kernelWidth]) { out in
        out.initialize(repeating: 0)
        input.withUnsafeBufferPointer { xBuffer in
            outputGradient.withUnsafeBufferPointer { dyBuffer in
                nonisolated(unsafe) let x = xBuffer.baseAddress!
                nonisolated(unsafe) let dy = dyBuffer.baseAddress!
                nonisolated(unsafe) let dw = out.baseAddress!
                parallelFor(layout.outputChannels) { channels in
                    for m in channels {
                        let c = m / multiplier
                        for i in 0..<g.kernelHeight {
                            let rows = g.validRows(kernelRow: i)
                            for j in 0..<g.kernelWidth {
                                let valid = g.validColumns(kernelColumn: j)
                                guard !valid.isEmpty else { continue }
                                var sum: Double = 0
                                for n in 0..<layout.batch {
                                    let source = x + (n * layout.channels + c) * g.inputPlane
                                    let gradient = dy + (n * layout.outputChannels + m) * g.outputPlane
                                    var partial: Float = 0
                                    for oh in rows {
                                        let ih = oh * g.strideHeight - g.padTop + i * g.dilationHeight
                                        let sourceRow = source + ih * g.inputWidth + j * g.dilationWidth - g.padLeft
                                        let gradientRow = gradient + oh * g.outputWidth
                                        for ow in valid { partial += gradientRow[ow] * sourceRow[ow * g.strideWidth] }
                                    }
                                    sum += Double(partial)
                                }
                                dw[m * kernelArea + i * g.kernelWidth + j] = Float(sum)
                            }
                        }
                    }
                }
            }
        }
    }
}
