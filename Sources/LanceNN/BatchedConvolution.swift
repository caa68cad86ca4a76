import CLanceKernels
import LanceCore
import LanceLinalg
import LanceModel

/// A convolution's output computed for throughput over a whole batch — what a training step runs:
///
/// ```
/// Y[n, m, oh, ow] = B[m] + Σ_{c, i, j} W[m, c, i, j] · Xpad[n, c, oh·sH + i·dH, ow·sW + j·dW]
/// ```
///
/// For `groups == 1` and output planes of at most `batchedPlaneLimit` pixels (the late layers of
/// a CNN), chunks of images are laid side by side as one im2col matrix `cols[C·kH·kW, n·H'·W']`
/// and multiplied by W in one single-threaded `gemm` per chunk, the chunks shared by the cores.
/// A per-image product of a 7×7 plane has 49 columns, and OpenBLAS then spends much of its time
/// packing W, once per image. Other convolutions are `conv2d`'s.
///
/// Unlike `conv2d`, an image's result can differ in the last bits with the batch it comes in
/// (inference keeps `conv2d`, whose results do not depend on how a batch is sliced).
///
/// - Parameters:
///   - input: X `[N, C, H, W]`.
///   - weight: W `[M, C / groups, kH, kW]`.
///   - bias: B `[M]`, or `nil`.
///   - convolution: stride, dilation, padding and groups.
///   - activation: applied to Y in the same pass, or `nil`.
/// - Returns: Y `[N, M, H', W']` (activated).
public func batchedConv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, convolution: Convolution,
                          activation: Activation? = nil) -> Tensor {
    guard convolution.groups == 1, input.rank == 4, weight.rank == 4, input.shape[0] > 1 else {
        return conv2d(input, weight: weight, bias: bias, convolution: convolution, activation: activation)
    }
    let output = convolution.window.outputSize(height: input.shape[2], width: input.shape[3])
    let plane = output.height * output.width
    guard plane > 0, plane <= batchedPlaneLimit else {
        return conv2d(input, weight: weight, bias: bias, convolution: convolution, activation: activation)
    }
    let outputShape = [input.shape[0], weight.shape[0], output.height, output.width]
    let layout = ConvolutionBackwardLayout(inputShape: input.shape, weightShape: weight.shape, convolution: convolution,
                                           outputGradientShape: outputShape)
    let g = layout.geometry
    let depth = layout.channels * g.kernelHeight * g.kernelWidth
    let outputs = layout.outputChannels
    // As many chunks as the scratch limit needs, rounded up to a multiple of the cores.
    let workers = min(availableKernelThreads, layout.batch)
    let largest = imageChunkSize(layout: layout, depth: depth, plane: plane)
    let needed = (layout.batch + largest - 1) / largest
    let chunkCount = (needed + workers - 1) / workers * workers
    let chunk = (layout.batch + chunkCount - 1) / chunkCount
    let chunks = (layout.batch + chunk - 1) / chunk
    return Tensor(shape: outputShape) { out in
        input.withUnsafeBufferPointer { xBuffer in
            weight.withUnsafeBufferPointer { wBuffer in
                withOptionalBuffer(bias) { biasPointer in
                    nonisolated(unsafe) let (x, w, y, b) = (xBuffer.baseAddress!, wBuffer.baseAddress!, out.baseAddress!, biasPointer)
                    BLASThreads.withSingleThread {
                        parallelFor(chunks) { range in
                            let columns = UnsafeMutablePointer<Float>.allocate(capacity: depth * chunk * plane)
                            let products = UnsafeMutablePointer<Float>.allocate(capacity: outputs * chunk * plane)
                            defer {
                                columns.deallocate()
                                products.deallocate()
                            }
                            for index in range {
                                let images = (index * chunk)..<min((index + 1) * chunk, layout.batch)
                                let width = images.count * plane
                                gatherColumns(images, x: x, layout: layout, depth: depth, plane: plane, into: columns)
                                // The bias and activation are applied to the chunk's products, whose rows
                                // are contiguous (the AVX-512 kernels start each row from its bias and
                                // clamp ReLU and Clip), and the rows are then copied to their images.
                                let prefilled = avx512Kernels && b != nil
                                if prefilled {
                                    lance_fill_rows_avx512(products, width, Int32(outputs), Int32(width), b, nil, 0)
                                }
                                gemm(m: outputs, n: width, k: depth, a: w, lda: depth, b: columns, ldb: width,
                                     beta: prefilled ? 1 : 0, c: products, ldc: width)
                                if avx512Kernels, let (clamp, low, high) = clampBounds(activation), clamp {
                                    lance_shift_clamp_rows_avx512(products, width, Int32(outputs), Int32(width),
                                                                  prefilled ? nil : b, low, high)
                                } else if activation != nil || (!prefilled && b != nil) {
                                    for m in 0..<outputs {
                                        let row = products + m * width
                                        let shift = prefilled ? 0 : b?[m] ?? 0
                                        if let activation {
                                            applyActivation(activation, to: row, count: width, adding: shift)
                                        } else {
                                            for k in 0..<width { row[k] += shift }
                                        }
                                    }
                                }
                                for (offset, n) in images.enumerated() {
                                    for m in 0..<outputs {
                                        (y + (n * outputs + m) * plane).update(from: products + m * width + offset * plane, count: plane)
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
