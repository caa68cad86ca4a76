import LanceCore
import LanceModel
import LanceNN
import LanceTestSupport
import Testing

/// Convolution gradients by their defining sums, in double precision (pure Swift loops).
enum BackwardReference {
    /// Calls `body(n, m, c, oh, ow, i, j, ih, iw)` for every in-bounds term
    /// `W[m, c, i, j] · X[n, g·Cg + c, ih, iw]` of every output `Y[n, m, oh, ow]`.
    static func forEachTerm(inputShape: [Int], weightShape: [Int], convolution: Convolution,
                            _ body: (Int, Int, Int, Int, Int, Int, Int, Int, Int) -> Void) {
        let (n, h, width) = (inputShape[0], inputShape[2], inputShape[3])
        let (m, cg, kh, kw) = (weightShape[0], weightShape[1], weightShape[2], weightShape[3])
        let window = convolution.window
        let out = window.outputSize(height: h, width: width)
        let pads = window.resolvedPadding(height: h, width: width)
        let mg = m / convolution.groups
        for ni in 0..<n { for mi in 0..<m { for oh in 0..<out.height { for ow in 0..<out.width {
            for ci in 0..<cg { for i in 0..<kh { for j in 0..<kw {
                let ih = oh * window.strides[0] - pads.top + i * window.dilations[0]
                let iw = ow * window.strides[1] - pads.left + j * window.dilations[1]
                guard ih >= 0, ih < h, iw >= 0, iw < width else { continue }
                body(ni, mi, (mi / mg) * cg + ci, oh, ow, i, j, ih, iw)
                _ = ci
            } } }
        } } } }
    }

    /// `dX[n, c, ih, iw] = Σ W[m, c_local, i, j] · dY[n, m, oh, ow]` over the terms that read it.
    static func inputGradient(_ dy: Tensor, _ w: Tensor, inputShape: [Int], _ convolution: Convolution) -> Tensor {
        var dx = [Double](repeating: 0, count: inputShape.reduce(1, *))
        let cg = w.shape[1]
        forEachTerm(inputShape: inputShape, weightShape: w.shape, convolution: convolution) { n, m, c, oh, ow, i, j, ih, iw in
            dx[((n * inputShape[1] + c) * inputShape[2] + ih) * inputShape[3] + iw] += Double(w[m, c % cg, i, j]) * Double(dy[n, m, oh, ow])
        }
        return Tensor(shape: inputShape, scalars: dx.map { Float($0) })
    }

    /// `dW[m, c_local, i, j] = Σ dY[n, m, oh, ow] · X[n, c, ih, iw]`.
    static func weightGradient(_ x: Tensor, _ dy: Tensor, weightShape: [Int], _ convolution: Convolution) -> Tensor {
        var dw = [Double](repeating: 0, count: weightShape.reduce(1, *))
        let cg = weightShape[1]
        forEachTerm(inputShape: x.shape, weightShape: weightShape, convolution: convolution) { n, m, c, oh, ow, i, j, ih, iw in
            dw[((m * cg + c % cg) * weightShape[2] + i) * weightShape[3] + j] += Double(dy[n, m, oh, ow]) * Double(x[n, c, ih, iw])
        }
        return Tensor(shape: weightShape, scalars: dw.map { Float($0) })
    }
}

@Suite("Backward: convolution")
struct BackwardConvolutionTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var input: [Int], outputChannels: Int, kernel: [Int], strides: [Int], dilations: [Int]
        var padding: AutoPad, groups: Int
        var testDescription: String { "x\(input) M=\(outputChannels) k\(kernel) s\(strides) d\(dilations) g\(groups) \(padding)" }

        var convolution: Convolution {
            Convolution(window: WindowGeometry(kernelSize: kernel, strides: strides, dilations: dilations, padding: padding),
                        groups: groups)
        }
        var weightShape: [Int] { [outputChannels, input[1] / groups] + kernel }
    }

    static let pad1 = AutoPad.explicit(top: 1, left: 1, bottom: 1, right: 1)
    static let cases: [Case] = [
        Case(input: [2, 3, 6, 5], outputChannels: 4, kernel: [3, 3], strides: [1, 1], dilations: [1, 1], padding: pad1, groups: 1),
        Case(input: [2, 3, 7, 6], outputChannels: 2, kernel: [3, 3], strides: [2, 2], dilations: [1, 1], padding: pad1, groups: 1),
        Case(input: [3, 4, 4, 4], outputChannels: 3, kernel: [1, 1], strides: [1, 1], dilations: [1, 1], padding: .valid, groups: 1),
        Case(input: [1, 4, 7, 6], outputChannels: 6, kernel: [3, 2], strides: [2, 3], dilations: [1, 1],
             padding: .explicit(top: 0, left: 1, bottom: 2, right: 0), groups: 2),
        Case(input: [2, 4, 6, 6], outputChannels: 4, kernel: [3, 3], strides: [1, 1], dilations: [1, 1], padding: pad1, groups: 4),
        Case(input: [1, 3, 7, 7], outputChannels: 3, kernel: [3, 3], strides: [2, 2], dilations: [1, 1], padding: pad1, groups: 3),
        Case(input: [2, 2, 5, 5], outputChannels: 4, kernel: [3, 3], strides: [1, 1], dilations: [1, 1], padding: .sameUpper, groups: 2),
        Case(input: [1, 3, 7, 7], outputChannels: 6, kernel: [3, 3], strides: [1, 1], dilations: [2, 2], padding: .sameUpper, groups: 3),
        Case(input: [1, 2, 6, 5], outputChannels: 3, kernel: [2, 2], strides: [2, 1], dilations: [1, 2], padding: .sameLower, groups: 1),
        Case(input: [2, 2, 6, 6], outputChannels: 2, kernel: [2, 2], strides: [2, 2], dilations: [1, 1], padding: .sameUpper, groups: 1),
        Case(input: [1, 2, 8, 7], outputChannels: 3, kernel: [3, 3], strides: [1, 2], dilations: [2, 1], padding: pad1, groups: 1),
    ]

    @Test("input, weight and bias gradients equal central finite differences", arguments: cases)
    func finiteDifferences(_ testCase: Case) {
        let convolution = testCase.convolution
        let x = Tensor.random(shape: testCase.input, seed: 11)
        let w = Tensor.random(shape: testCase.weightShape, seed: 12)
        let b = Tensor.random(shape: [testCase.outputChannels], seed: 13)
        let y = conv2d(x, weight: w, bias: b, convolution: convolution)
        let dy = Tensor.random(shape: y.shape, seed: 14)
        let gradients = conv2dBackward(input: x, weight: w, hasBias: true, convolution: convolution, outputGradient: dy)
        GradientCheck.expectClose(gradients.input, GradientCheck.numeric(at: x, weights: dy) {
            conv2d($0, weight: w, bias: b, convolution: convolution)
        }, "dX")
        GradientCheck.expectClose(gradients.weight, GradientCheck.numeric(at: w, weights: dy) {
            conv2d(x, weight: $0, bias: b, convolution: convolution)
        }, "dW")
        GradientCheck.expectClose(gradients.bias!, GradientCheck.numeric(at: b, weights: dy) {
            conv2d(x, weight: w, bias: $0, convolution: convolution)
        }, "dB")
    }

    @Test("input and weight gradients equal their defining sums (1e-5 abs + 1e-4 rel)", arguments: cases)
    func definitions(_ testCase: Case) {
        let convolution = testCase.convolution
        let x = Tensor.random(shape: testCase.input, seed: 21)
        let w = Tensor.random(shape: testCase.weightShape, seed: 22)
        let y = conv2d(x, weight: w, bias: nil, convolution: convolution)
        let dy = Tensor.random(shape: y.shape, seed: 23)
        let dx = conv2dInputGradient(outputGradient: dy, weight: w, inputShape: x.shape, convolution: convolution)
        let dw = conv2dWeightGradient(input: x, outputGradient: dy, weightShape: w.shape, convolution: convolution)
        #expect(dx.isClose(to: BackwardReference.inputGradient(dy, w, inputShape: x.shape, convolution)))
        #expect(dw.isClose(to: BackwardReference.weightGradient(x, dy, weightShape: w.shape, convolution)))
        // The bias gradient is the per-channel sum of dY.
        var sums = [Float](repeating: 0, count: testCase.outputChannels)
        for n in 0..<y.shape[0] { for m in 0..<y.shape[1] { for h in 0..<y.shape[2] { for v in 0..<y.shape[3] { sums[m] += dy[n, m, h, v] } } } }
        #expect(conv2dBiasGradient(outputGradient: dy).isClose(to: Tensor(shape: [testCase.outputChannels], scalars: sums)))
    }

    @Test("a larger batch agrees with the definition, for small planes (images side by side) and large ones (one image per gemm)",
          arguments: [[9, 8], [34, 32]])
    func parallelImages(size: [Int]) {
        let convolution = Convolution(window: WindowGeometry(kernelSize: [3, 3], padding: Self.pad1))
        let x = Tensor.random(shape: [5, 3] + size, seed: 31)
        let w = Tensor.random(shape: [4, 3, 3, 3], seed: 32)
        let dy = Tensor.random(shape: [5, 4] + size, seed: 33)
        let dx = conv2dInputGradient(outputGradient: dy, weight: w, inputShape: x.shape, convolution: convolution)
        #expect(dx.isClose(to: BackwardReference.inputGradient(dy, w, inputShape: x.shape, convolution)))
        let dw = conv2dWeightGradient(input: x, outputGradient: dy, weightShape: w.shape, convolution: convolution)
        #expect(dw.isClose(to: BackwardReference.weightGradient(x, dy, weightShape: w.shape, convolution), absolute: 1e-4))
    }

    /// [kernel, stride, padding, batch, size]
    @Test("the batched forward (images side by side) is conv2d's, and the 1×1 input gradient the definition",
          arguments: [[1, 1, 0, 5, 7], [1, 1, 0, 32, 4], [3, 2, 1, 5, 9], [3, 1, 1, 3, 6], [1, 1, 0, 3, 40]])
    func batchedForward(_ parameters: [Int]) {
        let (kernel, stride, padding, batch, size) = (parameters[0], parameters[1], parameters[2], parameters[3], parameters[4])
        let convolution = Convolution(window: WindowGeometry(kernelSize: [kernel, kernel], strides: [stride, stride],
                                                             padding: .explicit(top: padding, left: padding, bottom: padding, right: padding)))
        let x = Tensor.random(shape: [batch, 6, size, size], seed: 41)
        let w = Tensor.random(shape: [5, 6, kernel, kernel], seed: 42)
        let bias = Tensor.random(shape: [5], seed: 43)
        let y = batchedConv2d(x, weight: w, bias: bias, convolution: convolution)
        #expect(y.isClose(to: conv2d(x, weight: w, bias: bias, convolution: convolution), absolute: 1e-5, relative: 1e-5))
        #expect(batchedConv2d(x, weight: w, bias: nil, convolution: convolution)
            .isClose(to: conv2d(x, weight: w, bias: nil, convolution: convolution), absolute: 1e-5, relative: 1e-5))
        let dy = Tensor.random(shape: y.shape, seed: 44)
        let dx = conv2dInputGradient(outputGradient: dy, weight: w, inputShape: x.shape, convolution: convolution)
        #expect(dx.isClose(to: BackwardReference.inputGradient(dy, w, inputShape: x.shape, convolution), absolute: 1e-5))
    }
}
