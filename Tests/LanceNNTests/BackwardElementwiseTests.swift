import LanceCore
import LanceModel
import LanceNN
import LanceTestSupport
import Testing

@Suite("Backward: activations, batch norm, binaries, softmax")
struct BackwardElementwiseTests {
    struct ActivationCase: CustomTestStringConvertible, Sendable {
        var activation: Activation
        var kinks: [Float]
        var testDescription: String { "\(activation)" }
    }

    static let activationCases: [ActivationCase] = [
        ActivationCase(activation: .relu, kinks: [0]),
        ActivationCase(activation: .clip(minimum: 0, maximum: 6), kinks: [0, 6]),
        ActivationCase(activation: .clip(minimum: -1, maximum: 1.5), kinks: [-1, 1.5]),
        ActivationCase(activation: .leakyRelu(alpha: 0.1), kinks: [0]),
        ActivationCase(activation: .sigmoid, kinks: []),
        ActivationCase(activation: .hardSigmoid(alpha: 0.2, beta: 0.5), kinks: [-2.5, 2.5]),
        ActivationCase(activation: .hardSwish, kinks: [-3, 3]),
        ActivationCase(activation: .tanh, kinks: []),
        ActivationCase(activation: .thresholdedReLU(threshold: 0.5, negativeSlope: 0.2, maximum: 6), kinks: [0.5, 6]),
    ]

    @Test("activation gradients (from the input, and from the output where it suffices) equal finite differences",
          arguments: activationCases)
    func activationGradients(_ testCase: ActivationCase) {
        let x = GradientCheck.avoiding(testCase.kinks, in: Tensor.random(shape: [3, 40], in: -7...8, seed: 41))
        let dy = Tensor.random(shape: x.shape, seed: 42)
        let numeric = GradientCheck.numeric(at: x, weights: dy) { activate($0, testCase.activation) }
        GradientCheck.expectClose(activationGradient(testCase.activation, input: x, outputGradient: dy), numeric, "dX from input")
        if testCase.activation.isDifferentiableFromOutput {
            let y = activate(x, testCase.activation)
            GradientCheck.expectClose(activationGradient(testCase.activation, output: y, outputGradient: dy), numeric, "dX from output")
        }
    }

    @Test("kink conventions: a dead or saturated unit passes no gradient")
    func kinkConventions() {
        #expect(Activation.relu.derivative(at: 0) == 0)
        #expect(Activation.relu.derivative(fromOutput: 0) == 0)
        #expect(Activation.clip(minimum: 0, maximum: 6).derivative(at: 0) == 0)
        #expect(Activation.clip(minimum: 0, maximum: 6).derivative(at: 6) == 0)
        #expect(Activation.clip(minimum: 0, maximum: 6).derivative(at: 3) == 1)
        #expect(Activation.leakyRelu(alpha: 0.1).derivative(at: 0) == Float(0.1))
        #expect(Activation.hardSwish.derivative(at: -3) == Float(-0.5))
        #expect(Activation.hardSwish.derivative(at: 3) == Float(1.5))
        #expect(Activation.thresholdedReLU(threshold: 0, negativeSlope: 0, maximum: .infinity).derivative(at: 0) == 0)
        #expect(!Activation.hardSwish.isDifferentiableFromOutput)
        #expect(Activation.relu.isDifferentiableFromOutput)
    }

    @Test("inference batch-norm gradients of X, scale and bias equal finite differences")
    func batchNorm() {
        let x = Tensor.random(shape: [2, 3, 4, 3], in: -2...2, seed: 51)
        let scale = Tensor.random(shape: [3], in: 0.5...2, seed: 52)
        let bias = Tensor.random(shape: [3], seed: 53)
        let mean = Tensor.random(shape: [3], seed: 54)
        let variance = Tensor.random(shape: [3], in: 0.3...2, seed: 55)
        let dy = Tensor.random(shape: x.shape, seed: 56)
        let epsilon: Float = 1e-3
        let gradients = batchNormalizationGradients(input: x, scale: scale, mean: mean, variance: variance, epsilon: epsilon,
                                                    outputGradient: dy)
        GradientCheck.expectClose(gradients.input, GradientCheck.numeric(at: x, weights: dy) {
            batchNormalization($0, scale: scale, bias: bias, mean: mean, variance: variance, epsilon: epsilon)
        }, "dX")
        GradientCheck.expectClose(gradients.scale, GradientCheck.numeric(at: scale, weights: dy) {
            batchNormalization(x, scale: $0, bias: bias, mean: mean, variance: variance, epsilon: epsilon)
        }, "dScale")
        GradientCheck.expectClose(gradients.bias, GradientCheck.numeric(at: bias, weights: dy) {
            batchNormalization(x, scale: scale, bias: $0, mean: mean, variance: variance, epsilon: epsilon)
        }, "dBias")
    }

    static let binaryCases: [(BinaryOperator, [Int], [Int])] = [
        (.add, [2, 3, 4], [3, 1]), (.subtract, [1, 3, 1], [2, 1, 4]), (.multiply, [2, 3, 4], [4]),
        (.divide, [2, 3, 4], [2, 1, 1]), (.multiply, [3, 4], [3, 4]), (.divide, [3], [2, 3]), (.subtract, [2, 3], [1]),
    ]

    @Test("broadcasting binary gradients equal finite differences", arguments: binaryCases)
    func binaries(_ testCase: (BinaryOperator, [Int], [Int])) {
        let (op, aShape, bShape) = testCase
        let a = Tensor.random(shape: aShape, in: -2...2, seed: 61)
        // Divisors stay away from zero so the quotient is smooth over the step.
        let b = op == .divide ? Tensor.random(shape: bShape, in: 0.8...2, seed: 62) : Tensor.random(shape: bShape, seed: 62)
        let y = binary(a, b, op)
        let dy = Tensor.random(shape: y.shape, seed: 63)
        let gradients = binaryGradients(a, b, op, outputGradient: dy)
        GradientCheck.expectClose(gradients.a, GradientCheck.numeric(at: a, weights: dy) { binary($0, b, op) }, "dA")
        GradientCheck.expectClose(gradients.b, GradientCheck.numeric(at: b, weights: dy) { binary(a, $0, op) }, "dB")
    }

    @Test("sumToShape reduces over broadcast axes")
    func sumToShapeReduces() {
        let g = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        #expect(sumToShape(g, shape: [3]) == Tensor(shape: [3], scalars: [5, 7, 9]))
        #expect(sumToShape(g, shape: [2, 1]) == Tensor(shape: [2, 1], scalars: [6, 15]))
        #expect(sumToShape(g, shape: [1]) == Tensor(shape: [1], scalars: [21]))
        #expect(sumToShape(g, shape: [2, 3]) == g)
    }

    @Test("softmax gradient equals finite differences", arguments: [(1, false), (-1, false), (1, true), (0, false)])
    func softmaxBackward(_ testCase: (Int, Bool)) {
        let x = Tensor.random(shape: [2, 3, 4], in: -2...2, seed: 71)
        let y = softmax(x, axis: testCase.0, coercedTo2D: testCase.1)
        let dy = Tensor.random(shape: x.shape, seed: 72)
        GradientCheck.expectClose(softmaxGradient(output: y, outputGradient: dy, axis: testCase.0, coercedTo2D: testCase.1),
                                  GradientCheck.numeric(at: x, weights: dy) { softmax($0, axis: testCase.0, coercedTo2D: testCase.1) },
                                  "dX")
    }
}
