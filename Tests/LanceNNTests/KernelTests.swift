import LanceCore
import LanceModel
import LanceNN
import LanceTestSupport
import Testing

/// Direct definitions the fast kernels are checked against.
enum Reference {
    /// Convolution by its defining sum (pure Swift loops).
    static func conv2d(_ x: Tensor, _ w: Tensor, _ b: Tensor?, _ convolution: Convolution) -> Tensor {
        let (n, c, h, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let window = convolution.window
        let out = window.outputSize(height: h, width: width)
        let pads = window.resolvedPadding(height: h, width: width)
        let mg = m / convolution.groups
        var y = Tensor(shape: [n, m, out.height, out.width])
        for ni in 0..<n { for mi in 0..<m { for oh in 0..<out.height { for ow in 0..<out.width {
            var sum: Double = Double(b?.scalars[mi] ?? 0)
            let group = mi / mg
            for ci in 0..<cg { for i in 0..<kh { for j in 0..<kw {
                let ih = oh * window.strides[0] - pads.top + i * window.dilations[0]
                let iw = ow * window.strides[1] - pads.left + j * window.dilations[1]
                guard ih >= 0, ih < h, iw >= 0, iw < width else { continue }
                sum += Double(w[mi, ci, i, j]) * Double(x[ni, group * cg + ci, ih, iw])
            } } }
            _ = c
            y[ni, mi, oh, ow] = Float(sum)
        } } } }
        return y
    }
}

@Suite("Convolution kernels")
struct ConvolutionKernelTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var input: [Int], outputChannels: Int, kernel: [Int], strides: [Int], dilations: [Int]
        var padding: AutoPad, groups: Int
        var testDescription: String { "x\(input) M=\(outputChannels) k\(kernel) s\(strides) d\(dilations) g\(groups) \(padding)" }
    }

    static let cases: [Case] = [
        Case(input: [2, 3, 9, 8], outputChannels: 4, kernel: [3, 3], strides: [1, 1], dilations: [1, 1], padding: .explicit(top: 1, left: 1, bottom: 1, right: 1), groups: 1),
        Case(input: [1, 4, 10, 7], outputChannels: 6, kernel: [3, 2], strides: [2, 3], dilations: [1, 1], padding: .explicit(top: 0, left: 1, bottom: 2, right: 0), groups: 2),
        Case(input: [2, 5, 8, 8], outputChannels: 5, kernel: [3, 3], strides: [1, 1], dilations: [1, 1], padding: .explicit(top: 1, left: 1, bottom: 1, right: 1), groups: 5),
        Case(input: [1, 6, 11, 9], outputChannels: 6, kernel: [3, 3], strides: [2, 2], dilations: [1, 1], padding: .explicit(top: 1, left: 1, bottom: 1, right: 1), groups: 6),
        Case(input: [1, 3, 7, 7], outputChannels: 6, kernel: [3, 3], strides: [1, 1], dilations: [2, 2], padding: .sameUpper, groups: 3),
        Case(input: [3, 8, 5, 5], outputChannels: 4, kernel: [1, 1], strides: [1, 1], dilations: [1, 1], padding: .valid, groups: 1),
        Case(input: [1, 2, 6, 5], outputChannels: 3, kernel: [2, 2], strides: [2, 1], dilations: [1, 2], padding: .sameLower, groups: 1),
    ]

    @Test("im2col+GEMM and depthwise kernels equal the defining sum", arguments: cases)
    func matchesDefinition(_ testCase: Case) {
        let convolution = Convolution(window: WindowGeometry(kernelSize: testCase.kernel, strides: testCase.strides,
                                                             dilations: testCase.dilations, padding: testCase.padding),
                                      groups: testCase.groups)
        let x = Tensor.random(shape: testCase.input, seed: 1)
        let w = Tensor.random(shape: [testCase.outputChannels, testCase.input[1] / testCase.groups] + testCase.kernel, seed: 2)
        let b = Tensor.random(shape: [testCase.outputChannels], seed: 3)
        let expected = Reference.conv2d(x, w, b, convolution)
        let actual = conv2d(x, weight: w, bias: b, convolution: convolution)
        #expect(actual.isClose(to: expected, absolute: 1e-5, relative: 1e-5))
        let clipped = conv2d(x, weight: w, bias: b, convolution: convolution, activation: .clip(minimum: 0, maximum: 0.5))
        let expectedClipped = Tensor(shape: expected.shape, scalars: expected.scalars.map { min(max($0, 0), 0.5) })
        #expect(clipped.isClose(to: expectedClipped, absolute: 1e-5, relative: 1e-5))
    }
}
