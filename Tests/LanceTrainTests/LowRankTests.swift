import LanceCore
import LanceLinalg
import LanceModel
import LanceNN
import LanceTestSupport
import LanceTrain
import Testing

/// Reference computations for the LANCE layer math, in double precision.
enum LowRankReference {
    /// `dimension × rank` with orthonormal columns: leading eigenvectors of a random symmetric
    /// matrix (square and orthogonal when `rank == dimension`).
    static func orthonormalFactor(dimension: Int, rank: Int, seed: UInt64) -> Tensor {
        let a = Tensor.random(shape: [dimension, dimension], seed: seed)
        var symmetric = [Double](repeating: 0, count: dimension * dimension)
        for i in 0..<dimension { for j in 0..<dimension { symmetric[i * dimension + j] = Double(a[i, j] + a[j, i]) } }
        let vectors = (try? symmetricEigen(symmetric, dimension: dimension))!.vectors
        var factor = [Float](repeating: 0, count: dimension * rank)
        for i in 0..<dimension { for k in 0..<rank { factor[i * rank + k] = Float(vectors[i * dimension + k]) } }
        return Tensor(shape: [dimension, rank], scalars: factor)
    }

    static func factors(shape: [Int], ranks: [Int], seed: UInt64) -> [Tensor] {
        zip(shape, ranks).enumerated().map { orthonormalFactor(dimension: $1.0, rank: $1.1, seed: seed + UInt64($0)) }
    }

    /// `S[k₀, k₁, k₂, k₃] = Σ X[b, c, h, w] U₀[b, k₀] U₁[c, k₁] U₂[h, k₂] U₃[w, k₃]` by its definition.
    static func core4(_ x: Tensor, _ u: [Tensor]) -> Tensor {
        let r = u.map { $0.shape[1] }
        var s = [Double](repeating: 0, count: r.reduce(1, *))
        for b in 0..<x.shape[0] { for c in 0..<x.shape[1] { for h in 0..<x.shape[2] { for w in 0..<x.shape[3] {
            let value = Double(x[b, c, h, w])
            for k0 in 0..<r[0] { for k1 in 0..<r[1] { for k2 in 0..<r[2] { for k3 in 0..<r[3] {
                s[((k0 * r[1] + k1) * r[2] + k2) * r[3] + k3] += value * Double(u[0][b, k0]) * Double(u[1][c, k1])
                    * Double(u[2][h, k2]) * Double(u[3][w, k3])
            } } } }
        } } } }
        return Tensor(shape: r, scalars: s.map { Float($0) })
    }

    /// The convolution weight gradient by its defining sum.
    static func convWeightGradient(_ x: Tensor, _ dy: Tensor, weightShape: [Int], _ convolution: Convolution) -> Tensor {
        let (height, width) = (x.shape[2], x.shape[3])
        let (m, cg, kh, kw) = (weightShape[0], weightShape[1], weightShape[2], weightShape[3])
        let window = convolution.window
        let pads = window.resolvedPadding(height: height, width: width)
        let mg = m / convolution.groups
        var dw = [Double](repeating: 0, count: weightShape.reduce(1, *))
        for n in 0..<x.shape[0] { for mi in 0..<m { for oh in 0..<dy.shape[2] { for ow in 0..<dy.shape[3] {
            let g = Double(dy[n, mi, oh, ow])
            for ci in 0..<cg { for i in 0..<kh { for j in 0..<kw {
                let ih = oh * window.strides[0] - pads.top + i * window.dilations[0]
                let iw = ow * window.strides[1] - pads.left + j * window.dilations[1]
                guard ih >= 0, ih < height, iw >= 0, iw < width else { continue }
                dw[((mi * cg + ci) * kh + i) * kw + j] += g * Double(x[n, (mi / mg) * cg + ci, ih, iw])
            } } }
        } } } }
        return Tensor(shape: weightShape, scalars: dw.map { Float($0) })
    }

    /// `dW[o, i] = Σ_rows dY[row, o] · X[row, i]` (`[O, I]`), rows being all leading axes.
    static func linearWeightGradient(_ x: Tensor, _ dy: Tensor) -> Tensor {
        let features = x.shape.last!, outputs = dy.shape.last!
        let rows = x.count / features
        var dw = [Double](repeating: 0, count: outputs * features)
        for row in 0..<rows { for o in 0..<outputs { for i in 0..<features {
            dw[o * features + i] += Double(dy.scalars[row * outputs + o]) * Double(x.scalars[row * features + i])
        } } }
        return Tensor(shape: [outputs, features], scalars: dw.map { Float($0) })
    }

    static func transposed(_ t: Tensor) -> Tensor { transpose(t, permutation: [1, 0]) }

    /// `max|a − b| / max|b|`: the error relative to the gradient's scale.
    static func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape, "\(a.shape) vs \(b.shape)")
        let scale = b.scalars.reduce(Float(0)) { max($0, abs($1)) }
        return a.maxAbsoluteDifference(to: b) / max(scale, .leastNormalMagnitude)
    }
}

@Suite("LANCE low-rank layer math (method sections 2, 3.1–3.4)")
struct LowRankTests {
    typealias R = LowRankReference

    @Test("the core follows the code's contraction order and equals its definition; 2-D is U₀ᵀ X U₁")
    func coreDefinition() {
        let x = Tensor.random(shape: [3, 4, 5, 4], seed: 1)
        let factors = R.factors(shape: x.shape, ranks: [2, 3, 3, 2], seed: 10)
        let compressed = TuckerCore(projecting: x, factors: factors)
        #expect(compressed.ranks == [2, 3, 3, 2] && compressed.inputShape == x.shape)
        #expect(compressed.core.isClose(to: R.core4(x, factors), absolute: 1e-5, relative: 1e-4))

        let x2 = Tensor.random(shape: [6, 5], seed: 2)
        let f2 = R.factors(shape: x2.shape, ranks: [3, 2], seed: 20)
        let expected = matMul(matMul(R.transposed(f2[0]), x2), f2[1])
        #expect(TuckerCore(projecting: x2, factors: f2).core.isClose(to: expected, absolute: 1e-5, relative: 1e-4))

        // 3-D tokens: S[k₀, k₁, k₂] = Σ X[b, l, i] U₀[b, k₀] U₁[l, k₁] U₂[i, k₂].
        let x3 = Tensor.random(shape: [3, 4, 5], seed: 3)
        let f3 = R.factors(shape: x3.shape, ranks: [2, 3, 2], seed: 30)
        var s3 = Tensor(shape: [2, 3, 2])
        for k0 in 0..<2 { for k1 in 0..<3 { for k2 in 0..<2 {
            var sum: Double = 0
            for b in 0..<3 { for l in 0..<4 { for i in 0..<5 {
                sum += Double(x3[b, l, i]) * Double(f3[0][b, k0]) * Double(f3[1][l, k1]) * Double(f3[2][i, k2])
            } } }
            s3[k0, k1, k2] = Float(sum)
        } } }
        #expect(TuckerCore(projecting: x3, factors: f3).core.isClose(to: s3, absolute: 1e-5, relative: 1e-4))
    }

    @Test("with square orthogonal factors the reconstruction is the input")
    func fullRankReconstruction() {
        let x = Tensor.random(shape: [3, 4, 5, 4], seed: 4)
        let compressed = TuckerCore(projecting: x, factors: R.factors(shape: x.shape, ranks: x.shape, seed: 40))
        #expect(compressed.reconstructed().isClose(to: x, absolute: 1e-5, relative: 1e-4))
        // A truncated basis does not reproduce the input (so the check above can fail).
        let truncated = TuckerCore(projecting: x, factors: R.factors(shape: x.shape, ranks: [2, 2, 2, 2], seed: 40))
        #expect(!truncated.reconstructed().isClose(to: x, absolute: 1e-2, relative: 1e-2))
    }

    struct ConvCase: CustomTestStringConvertible, Sendable {
        var input: [Int], outputChannels: Int, kernel: Int, stride: Int, dilation: Int, padding: AutoPad, groups: Int
        var ranks: [Int]
        var testDescription: String { "x\(input) M=\(outputChannels) k\(kernel) s\(stride) d\(dilation) g\(groups) \(padding) r\(ranks)" }
        var convolution: Convolution {
            Convolution(window: WindowGeometry(kernelSize: [kernel, kernel], strides: [stride, stride],
                                               dilations: [dilation, dilation], padding: padding), groups: groups)
        }
        var weightShape: [Int] { [outputChannels, input[1] / groups, kernel, kernel] }
    }

    static func pad(_ p: Int) -> AutoPad { .explicit(top: p, left: p, bottom: p, right: p) }
    static let convCases: [ConvCase] = [
        ConvCase(input: [4, 5, 7, 6], outputChannels: 3, kernel: 3, stride: 1, dilation: 1, padding: pad(1), groups: 1, ranks: [2, 3, 4, 3]),
        ConvCase(input: [4, 5, 7, 6], outputChannels: 3, kernel: 3, stride: 2, dilation: 1, padding: pad(1), groups: 1, ranks: [3, 2, 3, 4]),
        ConvCase(input: [4, 5, 7, 6], outputChannels: 3, kernel: 3, stride: 1, dilation: 1, padding: pad(0), groups: 1, ranks: [2, 3, 4, 3]),
        ConvCase(input: [4, 5, 7, 6], outputChannels: 3, kernel: 3, stride: 2, dilation: 1, padding: pad(0), groups: 1, ranks: [2, 4, 3, 3]),
        ConvCase(input: [4, 6, 5, 5], outputChannels: 4, kernel: 1, stride: 1, dilation: 1, padding: pad(0), groups: 1, ranks: [2, 3, 3, 2]),
        ConvCase(input: [4, 6, 5, 5], outputChannels: 4, kernel: 1, stride: 2, dilation: 1, padding: pad(0), groups: 1, ranks: [3, 2, 2, 3]),
        // Pointwise with small spatial ranks: the spatial modes are contracted first.
        ConvCase(input: [6, 6, 5, 5], outputChannels: 4, kernel: 1, stride: 1, dilation: 1, padding: pad(0), groups: 1, ranks: [3, 3, 1, 2]),
        ConvCase(input: [6, 4, 5, 5], outputChannels: 6, kernel: 1, stride: 1, dilation: 1, padding: pad(0), groups: 2, ranks: [3, 2, 1, 1]),
        ConvCase(input: [3, 4, 6, 6], outputChannels: 4, kernel: 3, stride: 1, dilation: 1, padding: pad(1), groups: 4, ranks: [2, 3, 3, 3]),
        ConvCase(input: [3, 4, 7, 7], outputChannels: 4, kernel: 3, stride: 2, dilation: 1, padding: pad(1), groups: 4, ranks: [2, 2, 4, 3]),
        ConvCase(input: [3, 3, 6, 6], outputChannels: 6, kernel: 3, stride: 1, dilation: 1, padding: pad(1), groups: 3, ranks: [2, 2, 3, 3]),
        ConvCase(input: [3, 4, 6, 5], outputChannels: 6, kernel: 3, stride: 1, dilation: 1, padding: pad(1), groups: 2, ranks: [2, 3, 3, 3]),
        ConvCase(input: [3, 4, 8, 8], outputChannels: 3, kernel: 3, stride: 1, dilation: 2, padding: pad(2), groups: 1, ranks: [2, 3, 4, 4]),
        ConvCase(input: [3, 4, 9, 9], outputChannels: 3, kernel: 3, stride: 2, dilation: 2, padding: pad(1), groups: 1, ranks: [2, 3, 4, 4]),
        ConvCase(input: [3, 4, 7, 6], outputChannels: 3, kernel: 2, stride: 2, dilation: 1, padding: .sameUpper, groups: 1, ranks: [2, 3, 3, 3]),
        ConvCase(input: [3, 4, 6, 7], outputChannels: 3, kernel: 2, stride: 1, dilation: 1, padding: .sameLower, groups: 1, ranks: [2, 3, 3, 3]),
    ]

    @Test("the low-rank weight gradient equals the dense one on the reconstruction X̂ (1e-4 relative)", arguments: convCases)
    func convolutionOnReconstruction(_ testCase: ConvCase) {
        let x = Tensor.random(shape: testCase.input, seed: 50)
        let factors = R.factors(shape: x.shape, ranks: testCase.ranks, seed: 60)
        let weight = Tensor.random(shape: testCase.weightShape, seed: 51)
        let (y, compressed) = lowRankConv2dForward(input: x, weight: weight, bias: nil, convolution: testCase.convolution, factors: factors)
        #expect(y == conv2d(x, weight: weight, bias: nil, convolution: testCase.convolution))
        let dy = Tensor.random(shape: y.shape, seed: 52)
        let lance = lowRankConv2dWeightGradient(compressed: compressed, outputGradient: dy, weightShape: weight.shape,
                                                convolution: testCase.convolution)
        let reconstruction = compressed.reconstructed()
        let expected = R.convWeightGradient(reconstruction, dy, weightShape: weight.shape, testCase.convolution)
        #expect(R.relativeError(lance, expected) < 1e-4, "relative error \(R.relativeError(lance, expected))")
        // ... and differs from the exact gradient on X (the ranks truncate), so the check can fail.
        let exact = R.convWeightGradient(x, dy, weightShape: weight.shape, testCase.convolution)
        #expect(R.relativeError(lance, exact) > 1e-2)
    }

    @Test("with full-rank bases the low-rank weight gradient is the exact one (1e-4 relative)", arguments: convCases)
    func convolutionFullRank(_ testCase: ConvCase) {
        let x = Tensor.random(shape: testCase.input, seed: 53)
        let factors = R.factors(shape: x.shape, ranks: x.shape, seed: 70)
        let weight = Tensor.random(shape: testCase.weightShape, seed: 54)
        let (y, compressed) = lowRankConv2dForward(input: x, weight: weight, bias: nil, convolution: testCase.convolution, factors: factors)
        let dy = Tensor.random(shape: y.shape, seed: 55)
        let lance = lowRankConv2dWeightGradient(compressed: compressed, outputGradient: dy, weightShape: weight.shape,
                                                convolution: testCase.convolution)
        let exact = R.convWeightGradient(x, dy, weightShape: weight.shape, testCase.convolution)
        #expect(R.relativeError(lance, exact) < 1e-4, "relative error \(R.relativeError(lance, exact))")
    }

    @Test("a pointwise convolution's gradients through the next pointwise convolution equal those on the formed dY",
          arguments: [1, 2])
    func pointwiseThroughNext(_ groups: Int) {
        let x = Tensor.random(shape: [6, 4, 5, 5], seed: 90)
        let factors = R.factors(shape: x.shape, ranks: [3, 2, 2, 1], seed: 91)
        let convolution = Convolution(window: WindowGeometry(kernelSize: [1, 1]), groups: groups)
        let weightShape = [6, 4 / groups, 1, 1]
        let next = Tensor.random(shape: [7, 6, 1, 1], seed: 92)
        let nextGradient = Tensor.random(shape: [6, 7, 5, 5], seed: 93)
        let compressed = TuckerCore(projecting: x, factors: factors)
        let dy = conv2dInputGradient(outputGradient: nextGradient, weight: next, inputShape: [6, 6, 5, 5],
                                     convolution: Convolution(window: WindowGeometry(kernelSize: [1, 1])))
        let result = lowRankPointwiseGradients(compressed: compressed, weightShape: weightShape, groups: groups,
                                               nextWeight: next, nextOutputGradient: nextGradient,
                                               nextOutputSums: conv2dBiasGradient(outputGradient: nextGradient))
        let expected = lowRankConv2dWeightGradient(compressed: compressed, outputGradient: dy, weightShape: weightShape,
                                                   convolution: convolution)
        #expect(R.relativeError(result.weight, expected) < 1e-5, "relative error \(R.relativeError(result.weight, expected))")
        #expect(R.relativeError(result.bias, conv2dBiasGradient(outputGradient: dy)) < 1e-5)
    }

    @Test("LANCE's input and bias gradients are full backprop's", arguments: [convCases[1], convCases[9], convCases[14]])
    func convolutionInputGradient(_ testCase: ConvCase) {
        let x = Tensor.random(shape: testCase.input, seed: 56)
        let weight = Tensor.random(shape: testCase.weightShape, seed: 57)
        let bias = Tensor.random(shape: [testCase.outputChannels], seed: 58)
        let (y, compressed) = lowRankConv2dForward(input: x, weight: weight, bias: bias, convolution: testCase.convolution,
                                                   factors: R.factors(shape: x.shape, ranks: testCase.ranks, seed: 80))
        let dy = Tensor.random(shape: y.shape, seed: 59)
        let lance = lowRankConv2dBackward(compressed: compressed, weight: weight, hasBias: true, convolution: testCase.convolution,
                                          outputGradient: dy)
        let full = conv2dBackward(input: x, weight: weight, hasBias: true, convolution: testCase.convolution, outputGradient: dy)
        #expect(lance.input == full.input)
        #expect(lance.bias == full.bias)
        #expect(lance.weight.shape == full.weight.shape)
    }

    @Test("2-D linear: (dYᵀU₀)(S U₁ᵀ) equals the dense gradient on X̂, for both weight layouts",
          arguments: [LinearWeightLayout.outputsByInputs, .inputsByOutputs])
    func linear2D(_ layout: LinearWeightLayout) {
        let (batch, features, outputs) = (8, 6, 5)
        let x = Tensor.random(shape: [batch, features], seed: 90)
        let dy = Tensor.random(shape: [batch, outputs], seed: 91)
        let alpha: Float = 0.75
        func inLayout(_ outputsByInputs: Tensor) -> Tensor { layout == .outputsByInputs ? outputsByInputs : R.transposed(outputsByInputs) }
        func scaled(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars.map { $0 * alpha }) }

        let compressed = TuckerCore(projecting: x, factors: R.factors(shape: x.shape, ranks: [3, 4], seed: 92))
        let lance = lowRankLinearWeightGradient(compressed: compressed, outputGradient: dy, layout: layout, alpha: alpha)
        let expected = inLayout(scaled(R.linearWeightGradient(compressed.reconstructed(), dy)))
        #expect(R.relativeError(lance, expected) < 1e-4, "relative error \(R.relativeError(lance, expected))")
        let exact = inLayout(scaled(R.linearWeightGradient(x, dy)))
        #expect(R.relativeError(lance, exact) > 1e-2)

        let full = TuckerCore(projecting: x, factors: R.factors(shape: x.shape, ranks: x.shape, seed: 93))
        let fullRank = lowRankLinearWeightGradient(compressed: full, outputGradient: dy, layout: layout, alpha: alpha)
        #expect(R.relativeError(fullRank, exact) < 1e-4, "full rank: relative error \(R.relativeError(fullRank, exact))")

        // The whole backward: input and bias gradients are exact (ONNX Gemm gradients on X).
        let parameters = Gemm(alpha: alpha, beta: 0.5, transposeB: layout == .outputsByInputs)
        let weight = Tensor.random(shape: layout == .outputsByInputs ? [outputs, features] : [features, outputs], seed: 94)
        let gradients = lowRankLinearBackward(compressed: compressed, weight: weight, biasShape: [outputs], parameters: parameters,
                                              outputGradient: dy)
        let dense = gemmGradients(a: x, b: weight, cShape: [outputs], outputGradient: dy, parameters: parameters)
        #expect(gradients.input.isClose(to: dense.a))
        #expect(gradients.bias!.isClose(to: dense.c!))
        #expect(gradients.weight == lance)
    }

    @Test("3-D linear (tokens, section 3.2) equals the dense gradient on X̂, for both weight layouts",
          arguments: [LinearWeightLayout.outputsByInputs, .inputsByOutputs])
    func linear3D(_ layout: LinearWeightLayout) {
        let (batch, tokens, features, outputs) = (4, 5, 6, 3)
        let x = Tensor.random(shape: [batch, tokens, features], seed: 100)
        let dy = Tensor.random(shape: [batch, tokens, outputs], seed: 101)
        func inLayout(_ outputsByInputs: Tensor) -> Tensor { layout == .outputsByInputs ? outputsByInputs : R.transposed(outputsByInputs) }

        let compressed = TuckerCore(projecting: x, factors: R.factors(shape: x.shape, ranks: [2, 3, 4], seed: 102))
        let lance = lowRankLinearWeightGradient(compressed: compressed, outputGradient: dy, layout: layout)
        let expected = inLayout(R.linearWeightGradient(compressed.reconstructed(), dy))
        #expect(R.relativeError(lance, expected) < 1e-4, "relative error \(R.relativeError(lance, expected))")
        let exact = inLayout(R.linearWeightGradient(x, dy))
        #expect(R.relativeError(lance, exact) > 1e-2)

        let full = TuckerCore(projecting: x, factors: R.factors(shape: x.shape, ranks: x.shape, seed: 103))
        let fullRank = lowRankLinearWeightGradient(compressed: full, outputGradient: dy, layout: layout)
        #expect(R.relativeError(fullRank, exact) < 1e-4, "full rank: relative error \(R.relativeError(fullRank, exact))")

        // Input gradient: dX = dY · op(W)ᵀ per token (MatMul gradient on X).
        let weight = Tensor.random(shape: layout == .outputsByInputs ? [outputs, features] : [features, outputs], seed: 104)
        let bias = Tensor.random(shape: [outputs], seed: 105)
        let matMulWeight = layout == .outputsByInputs ? R.transposed(weight) : weight
        let (y, forwardCompressed) = lowRankLinearForward(input: x, weight: weight, bias: bias,
                                                          parameters: Gemm(transposeB: layout == .outputsByInputs),
                                                          factors: compressed.factors)
        #expect(y.isClose(to: binary(matMul(x, matMulWeight), bias, .add)))
        #expect(forwardCompressed == compressed)
        let gradients = lowRankLinearBackward(compressed: compressed, weight: weight, biasShape: [outputs],
                                              parameters: Gemm(transposeB: layout == .outputsByInputs), outputGradient: dy)
        #expect(gradients.input.isClose(to: matMulGradients(x, matMulWeight, outputGradient: dy).a))
        #expect(gradients.bias!.isClose(to: sumToShape(dy, shape: [outputs])))
    }

    @Test("memory: (numel(S) + Σ numel(U_n))·4 bytes for LANCE, numel(X)·4 for backprop, in MiB (section 3.4)")
    func memory() {
        let x = Tensor.random(shape: [8, 6, 5, 4], seed: 110)
        let ranks = [3, 2, 4, 2]
        let compressed = TuckerCore(projecting: x, factors: R.factors(shape: x.shape, ranks: ranks, seed: 111))
        let memory = ActivationMemory(input: x, compressed: compressed)
        #expect(memory.fullBytes == 8 * 6 * 5 * 4 * 4)
        #expect(memory.coreBytes == 3 * 2 * 4 * 2 * 4)
        #expect(memory.factorBytes == (8 * 3 + 6 * 2 + 5 * 4 + 4 * 2) * 4)
        #expect(memory.lanceBytes == (48 + 64) * 4)
        #expect(memory.lanceMiB == Double(memory.lanceBytes) / 1_048_576)
        #expect(abs(memory.compressionRatio - 960.0 / 112.0) < 1e-12)

        // The README check of section 3.4: two DeiT layers, 128·197·(192 + 768) floats = 92.34 MiB.
        func layer(_ features: Int) -> ActivationMemory {
            let tiny = TuckerCore(core: Tensor(shape: [1, 1, 1]), factors: [128, 197, features].map { Tensor(shape: [$0, 1]) })
            return ActivationMemory(inputShape: tiny.inputShape, compressed: tiny)
        }
        let total = ActivationMemory.total([layer(192), layer(768)])
        #expect(abs(total.fullMiB - 92.34) < 0.005, "\(total.fullMiB)")
        #expect(total.lanceBytes == 2 * (1 + 128 + 197) * 4 + (192 + 768) * 4)
    }
}

@Suite("Per-batch HOSVD baseline")
struct LowRankHOSVDTests {
    typealias R = LowRankReference

    @Test("rank rule: cumulative energy reaching ε (≥), unlike LANCE's exceeding it (>) on exact ties")
    func rankRule() {
        let spectrum: [Float] = [0.5, 0.25, 0.125, 0.125]
        #expect(hosvdRank(normalisedSpectrum: spectrum, energy: 0.75) == 2)
        #expect(lanceRank(normalisedSpectrum: spectrum, energy: 0.75) == 3)
        #expect(hosvdRank(normalisedSpectrum: spectrum, energy: 0.7) == 2)
        #expect(hosvdRank(normalisedSpectrum: spectrum, energy: 0.3) == 1)
        #expect(hosvdRank(normalisedSpectrum: spectrum, energy: 1) == 4)
    }

    @Test("per-batch factors are orthonormal, keep ε of each mode's energy, and feed the same low-rank chain")
    func perBatchBases() throws {
        // A batch with decaying structure so the threshold truncates.
        let x = Tensor.random(shape: [6, 5, 6, 5], seed: 120)
        let structured = binary(x, Tensor(shape: [1, 5, 1, 1], scalars: [3, 1.5, 0.6, 0.3, 0.1]), .multiply)
        let bases = try hosvdBases(of: structured, energy: 0.8)
        for (mode, basis) in bases.enumerated() {
            #expect(basis.dimension == structured.shape[mode])
            let gram = matMul(R.transposed(basis.factor), basis.factor)
            var identity = Tensor(shape: [basis.rank, basis.rank])
            for k in 0..<basis.rank { identity[k, k] = 1 }
            #expect(gram.isClose(to: identity, absolute: 1e-5), "mode \(mode) factor is not orthonormal")
            #expect(basis.energyKept >= 0.8 - 1e-6)
            #expect(basis.rank == 1 || basis.spectrum.prefix(basis.rank - 1).reduce(0, +) < 0.8)
            // The Gram spectrum is the squared singular values of the unfolding: its trace is ‖X‖².
            let modeGram = unfoldingGram(structured, mode: mode)
            let gramTrace = (0..<basis.dimension).reduce(0.0) { $0 + modeGram[$1 * basis.dimension + $1] }
            let squaredNorm = structured.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }
            #expect(abs(gramTrace - squaredNorm) < 1e-3 * squaredNorm)
        }
        #expect(bases[1].rank < 5, "the channel mode should be truncated at ε = 0.8")

        let compressed = try hosvdCompress(structured, energy: 0.8)
        #expect(compressed.ranks == bases.map(\.rank))
        let convolution = Convolution(window: WindowGeometry(kernelSize: [3, 3], padding: .explicit(top: 1, left: 1, bottom: 1, right: 1)))
        let weightShape = [4, 5, 3, 3]
        let dy = Tensor.random(shape: [6, 4, 6, 5], seed: 121)
        let gradient = lowRankConv2dWeightGradient(compressed: compressed, outputGradient: dy, weightShape: weightShape,
                                                   convolution: convolution)
        let expected = R.convWeightGradient(compressed.reconstructed(), dy, weightShape: weightShape, convolution)
        #expect(R.relativeError(gradient, expected) < 1e-4)
        // Memory of the per-batch compression follows the same formula.
        let memory = ActivationMemory(input: structured, compressed: compressed)
        let ranks = compressed.ranks
        #expect(memory.lanceBytes == (ranks.reduce(1, *) + zip(structured.shape, ranks).reduce(0) { $0 + $1.0 * $1.1 }) * 4)
    }

    @Test("a mode longer than the rest of the tensor is decomposed from the other side of its unfolding, with the same factors")
    func wideUnfolding() throws {
        // Channel mode 24 against 2·2·2 = 8 other entries: X_(1) is 24 × 8, so hosvdBases works on
        // the 8 × 8 matrix X_(1)ᵀX_(1); the batch and spatial modes take the direct route.
        let x = Tensor.random(shape: [2, 24, 2, 2], seed: 122)
        let weights = Tensor(shape: [1, 24, 1, 1], scalars: (0..<24).map { Float(4 / (1 + Double($0))) })
        let structured = binary(x, weights, .multiply)
        for energy: Float in [0.5, 0.8, 0.95, 1] {
            let bases = try hosvdBases(of: structured, energy: energy)
            let channel = bases[1]
            // The direct route: eigenvectors of the 24 × 24 mode Gram matrix.
            let direct = try symmetricEigen(unfoldingGram(structured, mode: 1), dimension: 24)
            let total = direct.values.map { max($0, 0) }.reduce(0, +)
            let directSpectrum = direct.values.map { Float(max($0, 0) / total) }
            #expect(channel.spectrum.count == 24)
            for (wide, reference) in zip(channel.spectrum, directSpectrum) { #expect(abs(wide - reference) < 1e-5) }
            #expect(channel.rank == min(hosvdRank(normalisedSpectrum: directSpectrum, energy: energy), 8))
            // Same subspace: U·Uᵀ equals the direct factors' projector (signs of columns may differ).
            var directFactor = Tensor(shape: [24, channel.rank])
            for i in 0..<24 { for k in 0..<channel.rank { directFactor[i, k] = Float(direct.vectors[i * 24 + k]) } }
            let projector = matMul(channel.factor, R.transposed(channel.factor))
            let directProjector = matMul(directFactor, R.transposed(directFactor))
            #expect(projector.isClose(to: directProjector, absolute: 1e-4), "energy \(energy): the channel factors span another subspace")
            var identity = Tensor(shape: [channel.rank, channel.rank])
            for k in 0..<channel.rank { identity[k, k] = 1 }
            #expect(matMul(R.transposed(channel.factor), channel.factor).isClose(to: identity, absolute: 1e-4))
        }
        // At ε = 1 every nonzero direction is kept: the core reconstructs the batch.
        let exact = try hosvdCompress(structured, energy: 1)
        #expect(exact.ranks[1] == 8)
        #expect(exact.reconstructed().isClose(to: structured, absolute: 1e-4))
        // An all-zero batch still gets an orthonormal rank-1 factor.
        let zero = try hosvdBases(of: Tensor(shape: [2, 24, 2, 2]), energy: 0.7)
        #expect(zero[1].rank == 1)
        #expect(zero[1].factor.scalars.map { $0 * $0 }.reduce(0, +) == 1)
    }
}
