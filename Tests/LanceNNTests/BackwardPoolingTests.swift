import LanceCore
import LanceModel
import LanceNN
import LanceTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Backward: pooling, reductions, shape operations, loss")
struct BackwardPoolingTests {
    struct PoolCase: CustomTestStringConvertible, Sendable {
        var input: [Int], kernel: [Int], strides: [Int], dilations: [Int], padding: AutoPad, ceilMode: Bool
        var testDescription: String { "x\(input) k\(kernel) s\(strides) d\(dilations) \(padding) ceil=\(ceilMode)" }
        var pooling: Pooling {
            Pooling(window: WindowGeometry(kernelSize: kernel, strides: strides, dilations: dilations, padding: padding), ceilMode: ceilMode)
        }
    }

    static let poolCases: [PoolCase] = [
        PoolCase(input: [2, 2, 6, 6], kernel: [2, 2], strides: [2, 2], dilations: [1, 1], padding: .valid, ceilMode: false),
        PoolCase(input: [1, 2, 7, 6], kernel: [3, 3], strides: [2, 2], dilations: [1, 1],
                 padding: .explicit(top: 1, left: 1, bottom: 1, right: 1), ceilMode: false),
        PoolCase(input: [1, 2, 7, 7], kernel: [3, 3], strides: [2, 2], dilations: [1, 1], padding: .valid, ceilMode: true),
        PoolCase(input: [1, 1, 8, 7], kernel: [3, 2], strides: [3, 2], dilations: [1, 1],
                 padding: .explicit(top: 1, left: 0, bottom: 0, right: 1), ceilMode: true),
        PoolCase(input: [1, 2, 7, 7], kernel: [2, 2], strides: [1, 1], dilations: [2, 2], padding: .sameUpper, ceilMode: false),
        PoolCase(input: [2, 1, 5, 6], kernel: [3, 3], strides: [1, 1], dilations: [1, 1], padding: .sameLower, ceilMode: false),
    ]

    /// Distinct values 0.1 apart (> 2h), shuffled, so every window has a unique maximum that a
    /// finite-difference step cannot overtake.
    static func distinctValues(shape: [Int], seed: UInt64) -> Tensor {
        var generator = SeededGenerator(seed: seed)
        let count = shape.reduce(1, *)
        return Tensor(shape: shape, scalars: (0..<count).map { Float($0) * 0.1 - Float(count) * 0.05 }.shuffled(using: &generator))
    }

    @Test("max-pool gradient equals finite differences", arguments: poolCases)
    func maxPool(_ testCase: PoolCase) {
        let x = Self.distinctValues(shape: testCase.input, seed: 81)
        let y = maxPool2d(x, pooling: testCase.pooling)
        let dy = Tensor.random(shape: y.shape, seed: 82)
        GradientCheck.expectClose(maxPool2dGradient(input: x, outputGradient: dy, pooling: testCase.pooling),
                                  GradientCheck.numeric(at: x, weights: dy) { maxPool2d($0, pooling: testCase.pooling) }, "dX")
    }

    @Test("average-pool gradient equals finite differences, counting padding both ways",
          arguments: poolCases, [false, true])
    func averagePool(_ testCase: PoolCase, countIncludePad: Bool) {
        let x = Tensor.random(shape: testCase.input, seed: 83)
        let y = averagePool2d(x, pooling: testCase.pooling, countIncludePad: countIncludePad)
        let dy = Tensor.random(shape: y.shape, seed: 84)
        GradientCheck.expectClose(
            averagePool2dGradient(inputShape: x.shape, outputGradient: dy, pooling: testCase.pooling, countIncludePad: countIncludePad),
            GradientCheck.numeric(at: x, weights: dy) { averagePool2d($0, pooling: testCase.pooling, countIncludePad: countIncludePad) },
            "dX")
    }

    @Test("max pooling routes a tie to the first maximum in window order")
    func maxPoolTies() {
        let x = Tensor(shape: [1, 1, 2, 2], scalars: [1, 3, 3, 3])
        let pooling = Pooling(window: WindowGeometry(kernelSize: [2, 2], strides: [2, 2]))
        let dx = maxPool2dGradient(input: x, outputGradient: Tensor(shape: [1, 1, 1, 1], scalars: [5]), pooling: pooling)
        #expect(dx.scalars == [0, 5, 0, 0])
        let global = globalMaxPoolGradient(input: x, outputGradient: Tensor(shape: [1, 1, 1, 1], scalars: [2]))
        #expect(global.scalars == [0, 2, 0, 0])
    }

    @Test("global average and max pooling gradients equal finite differences")
    func globalPools() {
        let x = Self.distinctValues(shape: [2, 3, 3, 4], seed: 85)
        let dy = Tensor.random(shape: [2, 3, 1, 1], seed: 86)
        GradientCheck.expectClose(globalAveragePoolGradient(inputShape: x.shape, outputGradient: dy),
                                  GradientCheck.numeric(at: x, weights: dy) { globalAveragePool($0) }, "average")
        GradientCheck.expectClose(globalMaxPoolGradient(input: x, outputGradient: dy),
                                  GradientCheck.numeric(at: x, weights: dy) { globalMaxPool($0) }, "max")
    }

    @Test("reduce-mean gradient equals finite differences",
          arguments: [([2, 3], true), ([1], false), ([0, 2], true), ([-1], false)] as [([Int]?, Bool)] + [(nil, false), (nil, true)])
    func reduceMeanBackward(_ testCase: ([Int]?, Bool)) {
        let x = Tensor.random(shape: [2, 3, 4, 2], seed: 87)
        let y = reduceMean(x, axes: testCase.0, keepDimensions: testCase.1)
        let dy = Tensor.random(shape: y.shape, seed: 88)
        GradientCheck.expectClose(reduceMeanGradient(inputShape: x.shape, axes: testCase.0, keepDimensions: testCase.1, outputGradient: dy),
                                  GradientCheck.numeric(at: x, weights: dy) { reduceMean($0, axes: testCase.0, keepDimensions: testCase.1) },
                                  "dX")
    }

    @Test("reshape-like, transpose, concat and constant-pad gradients equal finite differences")
    func shapeOperations() {
        let x = Tensor.random(shape: [2, 3, 4], seed: 91)
        // Flatten / Reshape / Squeeze / Unsqueeze keep the element order.
        let flatDy = Tensor.random(shape: [2, 12], seed: 92)
        GradientCheck.expectClose(reshapeGradient(outputGradient: flatDy, inputShape: x.shape),
                                  GradientCheck.numeric(at: x, weights: flatDy) { $0.reshaped(to: [2, 12]) }, "flatten")
        for permutation in [[2, 0, 1], [1, 0, 2]] as [[Int]?] + [nil] {
            let dy = Tensor.random(shape: transpose(x, permutation: permutation).shape, seed: 93)
            GradientCheck.expectClose(transposeGradient(outputGradient: dy, permutation: permutation),
                                      GradientCheck.numeric(at: x, weights: dy) { transpose($0, permutation: permutation) },
                                      "transpose \(String(describing: permutation))")
        }
        let other = Tensor.random(shape: [2, 2, 4], seed: 94)
        let concatDy = Tensor.random(shape: [2, 5, 4], seed: 95)
        let parts = concatGradients(outputGradient: concatDy, inputShapes: [x.shape, other.shape], axis: -2)
        GradientCheck.expectClose(parts[0], GradientCheck.numeric(at: x, weights: concatDy) { concatenate([$0, other], axis: -2) }, "concat 0")
        GradientCheck.expectClose(parts[1], GradientCheck.numeric(at: other, weights: concatDy) { concatenate([x, $0], axis: -2) }, "concat 1")
        // Padding with a negative (cropping) entry.
        let pads = [0, 1, -1, 1, 2, 1]
        let padDy = Tensor.random(shape: pad(x, pads: pads, mode: .constant, value: 0.5).shape, seed: 96)
        GradientCheck.expectClose(padGradient(outputGradient: padDy, pads: pads),
                                  GradientCheck.numeric(at: x, weights: padDy) { pad($0, pads: pads, mode: .constant, value: 0.5) }, "pad")
    }

    @Test("softmax cross-entropy: loss by definition, gradient by finite differences, stable for huge logits")
    func crossEntropy() {
        let logits = Tensor.random(shape: [4, 5], in: -3...3, seed: 97)
        let labels = [0, 3, 4, 1]
        let (loss, gradient) = softmaxCrossEntropy(logits: logits, labels: labels)
        var expected: Double = 0
        for n in 0..<4 {
            let row = (0..<5).map { Double(logits[n, $0]) }
            expected += log(row.map { exp($0) }.reduce(0, +)) - row[labels[n]]
        }
        #expect(abs(Double(loss) - expected / 4) < 1e-5)
        let numeric = GradientCheck.numeric(at: logits, weights: Tensor(shape: [1], scalars: [1])) { z in
            Tensor(shape: [1], scalars: [softmaxCrossEntropy(logits: z, labels: labels).loss])
        }
        GradientCheck.expectClose(gradient, numeric, "dLogits")
        // Shifting every logit by 1e4 changes nothing mathematically; exp would overflow without
        // the max subtraction.
        let shifted = Tensor(shape: logits.shape, scalars: logits.scalars.map { $0 + 10_000 })
        let (shiftedLoss, shiftedGradient) = softmaxCrossEntropy(logits: shifted, labels: labels)
        #expect(shiftedLoss.isFinite && abs(shiftedLoss - loss) < 5e-3)
        #expect(shiftedGradient.isClose(to: gradient, absolute: 1e-3, relative: 0))
        // Rows of the gradient sum to zero.
        for n in 0..<4 { #expect(abs((0..<5).reduce(Float(0)) { $0 + gradient[n, $1] }) < 1e-6) }
    }
}
