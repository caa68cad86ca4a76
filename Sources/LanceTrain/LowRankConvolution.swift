import LanceCore
import LanceLinalg
import LanceModel
import LanceNN

/// A LANCE convolution's training forward (method section 3.1): the exact output
/// `Y = conv2d(X, W, B)` and the compressed input `S = X ×₀ U₀ᵀ ×₁ U₁ᵀ ×₂ U₂ᵀ ×₃ U₃ᵀ`, which is all
/// the backward pass needs besides W. X itself can be released afterwards.
///
/// - Parameters:
///   - input: X `[B, C, H, W]`.
///   - weight: W `[C', C / groups, kH, kW]`; bias `[C']` or `nil`.
///   - factors: `U₀ [B, r₀]`, `U₁ [C, r₁]`, `U₂ [H, r₂]`, `U₃ [W, r₃]`.
/// - Returns: Y `[B, C', H', W']` and the compressed input.
public func lowRankConv2dForward(input: Tensor, weight: Tensor, bias: Tensor?, convolution: Convolution,
                                 factors: [Tensor]) -> (output: Tensor, compressed: TuckerCore) {
    let output = conv2d(input, weight: weight, bias: bias, convolution: convolution)
    return (output, TuckerCore(projecting: input, factors: factors))
}

/// The LANCE backward pass of a convolution (method section 3.1): the input gradient is the
/// ordinary exact one (`conv2dInputGradient`, it needs only W and dY), the bias gradient is exact
/// (`Σ_{b,h',w'} dY`), and the weight gradient comes from the core through
/// `lowRankConv2dWeightGradient` without rebuilding X.
///
/// - Parameters:
///   - compressed: the core and factors saved by the forward (`inputShape` is `[B, C, H, W]`).
///   - weight: W `[C', C / groups, kH, kW]`.
///   - hasBias: whether the node has a bias.
///   - outputGradient: dY `[B, C', H', W']`.
public func lowRankConv2dBackward(compressed: TuckerCore, weight: Tensor, hasBias: Bool, convolution: Convolution,
                                  outputGradient: Tensor) -> ConvolutionGradients {
    ConvolutionGradients(
        input: conv2dInputGradient(outputGradient: outputGradient, weight: weight, inputShape: compressed.inputShape,
                                   convolution: convolution),
        weight: lowRankConv2dWeightGradient(compressed: compressed, outputGradient: outputGradient,
                                            weightShape: weight.shape, convolution: convolution),
        bias: hasBias ? conv2dBiasGradient(outputGradient: outputGradient) : nil)
}

/// The LANCE weight gradient of a convolution from the Tucker core, the factors and dY (method
/// section 3.1, steps 1–5), never forming X:
///
/// ```
/// Z₁[k₀, c', h', w'] = Σ_b U₀[b, k₀] · dY[b, c', h', w']                       [r₀, C', H', W']   one gemm
/// Z₂[k₀, k₁, h, k₃]  = Σ_{k₂} S[k₀, k₁, k₂, k₃] · Ũ₂[h, k₂]                     [r₀, r₁, Hp, r₃]   r₀·r₁ gemms
/// Z₃[k₀, k₁, h, w]   = Σ_{k₃} Z₂[k₀, k₁, h, k₃] · Ũ₃[w, k₃]                     [r₀, r₁, Hp, Wp]   one gemm
/// Z₄[c', k₁, i, j]   = Σ_{k₀, h', w'} Z₁[k₀, c', h', w'] · Z₃[k₀, k₁, s·h' + d·i, s·w' + d·j]
///                                                                                [C', r₁, kH, kW]
/// dW[c', c, i, j]    = Σ_{k₁} Z₄[c', k₁, i, j] · U₁[g·Cg + c, k₁],  g = c' / (C'/groups)
/// ```
///
/// `Ũ₂` is `U₂` with `padTop` zero rows above and `padBottom` below (`Hp = H + padTop + padBottom`),
/// `Ũ₃` likewise with the left/right padding, so Z₃ is the zero-padded input with the spatial
/// modes reconstructed and the batch/channel modes still compressed (asymmetric and
/// `sameUpper`/`sameLower` padding are resolved per side, unlike the authors' code). Step 4 is
/// the weight-gradient convolution with `r₀` as the batch (`conv2dWeightGradient` on Z₃ without
/// padding, any stride and dilation). Step 5 is a 1×1 contraction with U₁, one `gemm` per output
/// channel; for depthwise convolutions (`C / groups == 1`) it is the direct
/// `dW[c', 0, i, j] = Σ_{k₁} Z₄[c', k₁, i, j] · U₁[c' / multiplier, k₁]`; other group counts use
/// the group's rows of U₁ (an extension of the authors' code, which leaves them unimplemented).
///
/// The result equals the exact weight gradient evaluated on the reconstruction
/// `X̂ = S ×₀ U₀ ×₁ U₁ ×₂ U₂ ×₃ U₃` (and the exact gradient when every `U_n` is square orthogonal).
///
/// - Parameters:
///   - compressed: core `[r₀, r₁, r₂, r₃]` and factors of the input `[B, C, H, W]`.
///   - outputGradient: dY `[B, C', H', W']`.
///   - weightShape: `[C', C / groups, kH, kW]`.
///   - convolution: the forward hyperparameters.
/// - Returns: dW with `weightShape`.
public func lowRankConv2dWeightGradient(compressed: TuckerCore, outputGradient: Tensor, weightShape: [Int],
                                        convolution: Convolution) -> Tensor {
    let inputShape = compressed.inputShape
    precondition(inputShape.count == 4 && weightShape.count == 4 && outputGradient.rank == 4,
                 "the low-rank convolution gradient needs a 4-mode core, an OIHW weight and a 4-D output gradient")
    let (batch, channels, height, width) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
    let ranks = compressed.ranks
    let (r0, r1, r2, r3) = (ranks[0], ranks[1], ranks[2], ranks[3])
    let (outputChannels, kernelHeight, kernelWidth) = (weightShape[0], weightShape[2], weightShape[3])
    let groups = convolution.groups
    precondition(channels % groups == 0 && outputChannels % groups == 0 && weightShape[1] == channels / groups,
                 "weight \(weightShape) does not fit \(channels) input channels in \(groups) groups")
    let window = convolution.window
    let output = window.outputSize(height: height, width: width)
    precondition(outputGradient.shape == [batch, outputChannels, output.height, output.width],
                 "output gradient \(outputGradient.shape) differs from the convolution output [\(batch), \(outputChannels), \(output.height), \(output.width)]")
    let pads = window.resolvedPadding(height: height, width: width)
    let paddedHeight = height + pads.top + pads.bottom
    let paddedWidth = width + pads.left + pads.right
    let outputPlane = outputChannels * output.height * output.width
    if convolution.isPointwise {
        // Pointwise: contracting the spatial modes first is cheaper when their ranks are small.
        let plane = height * width
        let spatialFirst = batch * outputChannels * plane * r2 * r3 + r0 * batch * outputChannels * r2 * r3
        let batchFirst = r0 * batch * outputChannels * plane + r0 * r1 * plane * outputChannels
        if spatialFirst < batchFirst {
            let z4 = pointwiseChannelGradient(compressed: compressed, outputGradient: outputGradient)
            return contractChannelFactor(z4, channelFactor: compressed.factors[1], weightShape: weightShape, groups: groups)
        }
    }

    // Step 1: Z₁ [r₀, C'·H'·W'] = U₀ᵀ [r₀, B] · dY [B, C'·H'·W'].
    var z1 = Tensor(shape: [r0, outputChannels, output.height, output.width])
    z1.withUnsafeMutableBufferPointer { out in
        compressed.factors[0].withUnsafeBufferPointer { u0 in
            outputGradient.withUnsafeBufferPointer { dy in
                gemm(transposeA: true, m: r0, n: outputPlane, k: batch, a: u0.baseAddress!, lda: r0,
                     b: dy.baseAddress!, ldb: outputPlane, c: out.baseAddress!, ldc: outputPlane)
            }
        }
    }
    // Ũ₂ [Hp, r₂] and Ũ₃ [Wp, r₃]: the spatial factors with zero rows for the padding.
    let paddedHeightFactor = paddedRows(compressed.factors[2], before: pads.top, after: pads.bottom)
    let paddedWidthFactor = paddedRows(compressed.factors[3], before: pads.left, after: pads.right)
    // Step 2: Z₂[k₀, k₁] [Hp, r₃] = Ũ₂ [Hp, r₂] · S[k₀, k₁] [r₂, r₃], for every (k₀, k₁), as one gemm:
    // S rearranged to [r₂, r₀·r₁·r₃], the product [Hp, r₀·r₁·r₃] rearranged to [r₀·r₁, Hp, r₃].
    let slices = r0 * r1
    var arrangedCore = [Float](repeating: 0, count: r2 * slices * r3)
    compressed.core.withUnsafeBufferPointer { s in
        for slice in 0..<slices { for i in 0..<r2 { for j in 0..<r3 {
            arrangedCore[(i * slices + slice) * r3 + j] = s[(slice * r2 + i) * r3 + j]
        } } }
    }
    var product = [Float](repeating: 0, count: paddedHeight * slices * r3)
    product.withUnsafeMutableBufferPointer { out in
        arrangedCore.withUnsafeBufferPointer { s in
            paddedHeightFactor.withUnsafeBufferPointer { u2 in
                gemm(m: paddedHeight, n: slices * r3, k: r2, a: u2.baseAddress!, lda: r2, b: s.baseAddress!, ldb: slices * r3,
                     c: out.baseAddress!, ldc: slices * r3)
            }
        }
    }
    var z2 = [Float](repeating: 0, count: slices * paddedHeight * r3)
    for slice in 0..<slices { for h in 0..<paddedHeight { for j in 0..<r3 {
        z2[(slice * paddedHeight + h) * r3 + j] = product[(h * slices + slice) * r3 + j]
    } } }
    // Step 3: Z₃ [r₀·r₁·Hp, Wp] = Z₂ [r₀·r₁·Hp, r₃] · Ũ₃ᵀ [r₃, Wp].
    var z3 = Tensor(shape: [r0, r1, paddedHeight, paddedWidth])
    z3.withUnsafeMutableBufferPointer { out in
        z2.withUnsafeBufferPointer { z in
            paddedWidthFactor.withUnsafeBufferPointer { u3 in
                gemm(transposeB: true, m: r0 * r1 * paddedHeight, n: paddedWidth, k: r3, a: z.baseAddress!, lda: r3,
                     b: u3.baseAddress!, ldb: r3, c: out.baseAddress!, ldc: paddedWidth)
            }
        }
    }
    // Step 4: the weight-gradient convolution with r₀ as the batch, on the already padded Z₃.
    let unpadded = Convolution(window: WindowGeometry(kernelSize: [kernelHeight, kernelWidth], strides: window.strides,
                                                      dilations: window.dilations, padding: .valid), groups: 1)
    let z4 = conv2dWeightGradient(input: z3, outputGradient: z1, weightShape: [outputChannels, r1, kernelHeight, kernelWidth],
                                  convolution: unpadded)
    // Step 5: dW[c', c, i, j] = Σ_{k₁} Z₄[c', k₁, i, j] · U₁[g·Cg + c, k₁].
    return contractChannelFactor(z4, channelFactor: compressed.factors[1], weightShape: weightShape, groups: groups)
}

/// Step 4 for a 1×1 convolution with stride 1 and no padding (where `h = h'`, `w = w'`), with the
/// modes contracted in the order that suits small spatial ranks:
///
/// ```
/// A[b, c', k₂, k₃]   = Σ_{h, w} dY[b, c', h, w] · U₂[h, k₂] · U₃[w, k₃]          [B·C', r₂·r₃]   one gemm
/// Z₁[k₀, c', k₂, k₃] = Σ_b U₀[b, k₀] · A[b, c', k₂, k₃]                          [r₀, C'·r₂·r₃]  one gemm
/// Z₄[c', k₁]         = Σ_{k₀, k₂, k₃} Z₁[k₀, c', k₂, k₃] · S[k₀, k₁, k₂, k₃]      [C', r₁]        one gemm
/// ```
///
/// Returns Z₄ as `[C', r₁, 1, 1]`, the same tensor as the general chain's step 4.
private func pointwiseChannelGradient(compressed: TuckerCore, outputGradient: Tensor) -> Tensor {
    let outputChannels = outputGradient.shape[1]
    let ranks = compressed.ranks
    let (r0, spatialRank) = (ranks[0], ranks[2] * ranks[3])
    let reduced = spatiallyReduced(outputGradient, compressed: compressed)
    var z1 = [Float](repeating: 0, count: r0 * outputChannels * spatialRank)
    reduced.withUnsafeBufferPointer { a in
        compressed.factors[0].withUnsafeBufferPointer { u0 in
            z1.withUnsafeMutableBufferPointer { z in
                gemm(transposeA: true, m: r0, n: outputChannels * spatialRank, k: outputGradient.shape[0], a: u0.baseAddress!,
                     lda: r0, b: a.baseAddress!, ldb: outputChannels * spatialRank, c: z.baseAddress!, ldc: outputChannels * spatialRank)
            }
        }
    }
    return contractedWithCore(z1, outputChannels: outputChannels, compressed: compressed)
}

/// `A[b, m, k₂, k₃] = Σ_{h, w} G[b, m, h, w] · U₂[h, k₂] · U₃[w, k₃]` for a gradient `G` `[B, M, H, W]`
/// and the spatial factors of `compressed` (one gemm with `U₂ ⊗ U₃`); `[B·M·r₂·r₃]`.
private func spatiallyReduced(_ gradient: Tensor, compressed: TuckerCore) -> [Float] {
    let rows = gradient.shape[0] * gradient.shape[1]
    let width = gradient.shape[3]
    let plane = gradient.shape[2] * width
    let (r2, r3) = (compressed.ranks[2], compressed.ranks[3])
    let spatialRank = r2 * r3
    // P[h·W + w, k₂·r₃ + k₃] = U₂[h, k₂] · U₃[w, k₃].
    var spatial = [Float](repeating: 0, count: plane * spatialRank)
    compressed.factors[2].withUnsafeBufferPointer { u2 in
        compressed.factors[3].withUnsafeBufferPointer { u3 in
            for p in 0..<plane {
                let (h, w) = (p / width, p % width)
                for k2 in 0..<r2 { for k3 in 0..<r3 { spatial[p * spatialRank + k2 * r3 + k3] = u2[h * r2 + k2] * u3[w * r3 + k3] } }
            }
        }
    }
    var reduced = [Float](repeating: 0, count: rows * spatialRank)
    gradient.withUnsafeBufferPointer { g in
        reduced.withUnsafeMutableBufferPointer { a in
            spatial.withUnsafeBufferPointer { p in
                gemm(m: rows, n: spatialRank, k: plane, a: g.baseAddress!, lda: plane, b: p.baseAddress!, ldb: spatialRank,
                     c: a.baseAddress!, ldc: spatialRank)
            }
        }
    }
    return reduced
}

/// `Z₄[c', k₁] = Σ_{k₀, k₂, k₃} Z₁[k₀, c', k₂, k₃] · S[k₀, k₁, k₂, k₃]` as `[C', r₁, 1, 1]`.
private func contractedWithCore(_ z1: [Float], outputChannels: Int, compressed: TuckerCore) -> Tensor {
    let ranks = compressed.ranks
    let (r0, r1, spatialRank) = (ranks[0], ranks[1], ranks[2] * ranks[3])
    // Z₁ as [C', r₀·r₂·r₃] and S as [r₀·r₂·r₃, r₁].
    let inner = r0 * spatialRank
    var arrangedZ1 = [Float](repeating: 0, count: outputChannels * inner)
    for k0 in 0..<r0 { for m in 0..<outputChannels { for k in 0..<spatialRank {
        arrangedZ1[m * inner + k0 * spatialRank + k] = z1[(k0 * outputChannels + m) * spatialRank + k]
    } } }
    var arrangedCore = [Float](repeating: 0, count: inner * r1)
    compressed.core.withUnsafeBufferPointer { s in
        for k0 in 0..<r0 { for k1 in 0..<r1 { for k in 0..<spatialRank {
            arrangedCore[(k0 * spatialRank + k) * r1 + k1] = s[(k0 * r1 + k1) * spatialRank + k]
        } } }
    }
    return Tensor(shape: [outputChannels, r1, 1, 1]) { out in
        arrangedZ1.withUnsafeBufferPointer { z in
            arrangedCore.withUnsafeBufferPointer { s in
                gemm(m: outputChannels, n: r1, k: inner, a: z.baseAddress!, lda: inner, b: s.baseAddress!, ldb: r1,
                     c: out.baseAddress!, ldc: r1)
            }
        }
    }
}

/// The LANCE weight and bias gradients of a pointwise convolution (`Convolution.isPointwise`) whose output
/// feeds only a second pointwise convolution of one group, from that convolution's weight `V`
/// `[M, C', 1, 1]` and output gradient `dZ` `[B, M, H, W]`, without forming the output gradient
/// `dY[b, c', h, w] = Σ_m V[m, c'] · dZ[b, m, h, w]` (an `M·C'·B·H·W` product). Every contraction of
/// the pointwise chain (`pointwiseChannelGradient`) is linear in dY, so V is applied last, to
/// rank-sized tensors:
///
/// ```
/// A[b, m, k₂, k₃]    = Σ_{h, w} dZ[b, m, h, w] · U₂[h, k₂] · U₃[w, k₃]            [B·M, r₂·r₃]
/// C[k₀, m, k₂, k₃]   = Σ_b U₀[b, k₀] · A[b, m, k₂, k₃]                            [r₀, M·r₂·r₃]
/// Z₁[k₀, c', k₂, k₃] = Σ_m V[m, c'] · C[k₀, m, k₂, k₃]                            r₀ gemms
/// dW                 = the chain's Z₄ and step 5 from Z₁;   dB[c'] = Σ_m V[m, c'] · Σ_{b, h, w} dZ[b, m, h, w]
/// ```
///
/// The result equals `lowRankConv2dWeightGradient` and `conv2dBiasGradient` on the materialized dY.
///
/// - Parameters:
///   - compressed: the core and factors of the convolution's input `[B, C, H, W]`.
///   - weightShape: `[C', C / groups, 1, 1]`; `groups`: the convolution's groups.
///   - nextWeight: V `[M, C', 1, 1]`.
///   - nextOutputGradient: dZ `[B, M, H, W]`.
///   - nextOutputSums: `Σ_{b, h, w} dZ[b, m, h, w]`, `[M]` (`conv2dBiasGradient(outputGradient: dZ)`,
///     which the caller also has as the next convolution's bias gradient).
/// - Returns: dW with `weightShape`, and dB `[C']`.
public func lowRankPointwiseGradients(compressed: TuckerCore, weightShape: [Int], groups: Int, nextWeight: Tensor,
                                      nextOutputGradient: Tensor, nextOutputSums: Tensor) -> (weight: Tensor, bias: Tensor) {
    let (batch, nextChannels) = (nextOutputGradient.shape[0], nextOutputGradient.shape[1])
    let outputChannels = weightShape[0]
    precondition(compressed.inputShape.count == 4 && nextWeight.shape == [nextChannels, outputChannels, 1, 1]
                 && nextOutputGradient.rank == 4 && batch == compressed.inputShape[0]
                 && Array(nextOutputGradient.shape[2...]) == Array(compressed.inputShape[2...])
                 && nextOutputSums.shape == [nextChannels],
                 "the following convolution \(nextWeight.shape) and its output gradient \(nextOutputGradient.shape) do not fit a pointwise convolution of \(outputChannels) outputs on \(compressed.inputShape)")
    let ranks = compressed.ranks
    let (r0, spatialRank) = (ranks[0], ranks[2] * ranks[3])
    let reduced = spatiallyReduced(nextOutputGradient, compressed: compressed)
    var batchReduced = [Float](repeating: 0, count: r0 * nextChannels * spatialRank)
    var z1 = [Float](repeating: 0, count: r0 * outputChannels * spatialRank)
    reduced.withUnsafeBufferPointer { a in
        compressed.factors[0].withUnsafeBufferPointer { u0 in
            batchReduced.withUnsafeMutableBufferPointer { c in
                gemm(transposeA: true, m: r0, n: nextChannels * spatialRank, k: batch, a: u0.baseAddress!, lda: r0,
                     b: a.baseAddress!, ldb: nextChannels * spatialRank, c: c.baseAddress!, ldc: nextChannels * spatialRank)
            }
        }
    }
    nextWeight.withUnsafeBufferPointer { v in
        batchReduced.withUnsafeBufferPointer { c in
            z1.withUnsafeMutableBufferPointer { z in
                for k0 in 0..<r0 {
                    gemm(transposeA: true, m: outputChannels, n: spatialRank, k: nextChannels, a: v.baseAddress!, lda: outputChannels,
                         b: c.baseAddress! + k0 * nextChannels * spatialRank, ldb: spatialRank,
                         c: z.baseAddress! + k0 * outputChannels * spatialRank, ldc: spatialRank)
                }
            }
        }
    }
    let z4 = contractedWithCore(z1, outputChannels: outputChannels, compressed: compressed)
    let weight = contractChannelFactor(z4, channelFactor: compressed.factors[1], weightShape: weightShape, groups: groups)
    let bias = Tensor(shape: [outputChannels]) { out in
        nextWeight.withUnsafeBufferPointer { v in
            nextOutputSums.withUnsafeBufferPointer { s in
                gemm(transposeA: true, m: outputChannels, n: 1, k: nextChannels, a: v.baseAddress!, lda: outputChannels,
                     b: s.baseAddress!, ldb: 1, c: out.baseAddress!, ldc: 1)
            }
        }
    }
    return (weight, bias)
}

/// `factor` `[d, r]` with `before` zero rows on top and `after` below: `[before + d + after, r]`.
func paddedRows(_ factor: Tensor, before: Int, after: Int) -> Tensor {
    let (rows, rank) = (factor.shape[0], factor.shape[1])
    var scalars = [Float](repeating: 0, count: (before + rows + after) * rank)
    scalars.replaceSubrange((before * rank)..<((before + rows) * rank), with: factor.scalars)
    return Tensor(shape: [before + rows + after, rank], scalars: scalars)
}

/// Step 5 of section 3.1: `dW[c', c, ij] = Σ_{k₁} Z₄[c', k₁, ij] · U₁[g·Cg + c, k₁]` with
/// `g = c' / (C'/groups)`: for `groups == 1` one `gemm` over all output channels and taps
/// (`[C'·kH·kW, r₁] · U₁ᵀ`); otherwise per output channel one `gemm` `U₁_g [Cg, r₁] · Z₄[c'] [r₁, kH·kW]`,
/// or for depthwise (`Cg == 1`) the direct sum.
private func contractChannelFactor(_ z4: Tensor, channelFactor: Tensor, weightShape: [Int], groups: Int) -> Tensor {
    let outputChannels = weightShape[0], groupChannels = weightShape[1]
    let taps = weightShape[2] * weightShape[3]
    let rank = channelFactor.shape[1]
    let groupOutputs = outputChannels / groups
    return Tensor(shape: weightShape) { out in
        z4.withUnsafeBufferPointer { z in
            channelFactor.withUnsafeBufferPointer { u1 in
                if groupChannels == 1 {
                    // Depthwise: dW[c', 0, ij] = Σ_{k₁} Z₄[c', k₁, ij] · U₁[channel(c'), k₁].
                    for m in 0..<outputChannels {
                        let channel = m / groupOutputs
                        for tap in 0..<taps {
                            var sum: Float = 0
                            for k in 0..<rank { sum += z[(m * rank + k) * taps + tap] * u1[channel * rank + k] }
                            out[m * taps + tap] = sum
                        }
                    }
                    return
                }
                if groups == 1 {
                    // One gemm for all output channels: [C'·kH·kW, C] = Z₄ᵀ-arranged [C'·kH·kW, r₁] · U₁ᵀ,
                    // then back to [C', C, kH·kW] (a 1×1 kernel needs no rearranging).
                    if taps == 1 {
                        gemm(transposeB: true, m: outputChannels, n: groupChannels, k: rank, a: z.baseAddress!, lda: rank,
                             b: u1.baseAddress!, ldb: rank, c: out.baseAddress!, ldc: groupChannels)
                        return
                    }
                    var arranged = [Float](repeating: 0, count: outputChannels * taps * rank)
                    for m in 0..<outputChannels {
                        for k in 0..<rank { for tap in 0..<taps { arranged[(m * taps + tap) * rank + k] = z[(m * rank + k) * taps + tap] } }
                    }
                    var product = [Float](repeating: 0, count: outputChannels * taps * groupChannels)
                    arranged.withUnsafeBufferPointer { a in
                        product.withUnsafeMutableBufferPointer { p in
                            gemm(transposeB: true, m: outputChannels * taps, n: groupChannels, k: rank, a: a.baseAddress!, lda: rank,
                                 b: u1.baseAddress!, ldb: rank, c: p.baseAddress!, ldc: groupChannels)
                        }
                    }
                    for m in 0..<outputChannels {
                        for tap in 0..<taps { for c in 0..<groupChannels { out[(m * groupChannels + c) * taps + tap] = product[(m * taps + tap) * groupChannels + c] } }
                    }
                    return
                }
                for m in 0..<outputChannels {
                    let group = m / groupOutputs
                    gemm(m: groupChannels, n: taps, k: rank, a: u1.baseAddress! + group * groupChannels * rank, lda: rank,
                         b: z.baseAddress! + m * rank * taps, ldb: taps,
                         c: out.baseAddress! + m * groupChannels * taps, ldc: taps)
                }
            }
        }
    }
}
