import LanceCore
import LanceModel
import LanceNN
import LanceTestSupport
import Testing

@Suite("Backward: Gemm and MatMul")
struct BackwardDenseTests {
    struct GemmCase: CustomTestStringConvertible, Sendable {
        var transposeA: Bool, transposeB: Bool, alpha: Float, beta: Float, cShape: [Int]?
        var testDescription: String { "tA=\(transposeA) tB=\(transposeB) α=\(alpha) β=\(beta) C\(cShape.map { "\($0)" } ?? "none")" }
    }

    static let gemmCases: [GemmCase] = [
        GemmCase(transposeA: false, transposeB: false, alpha: 1, beta: 1, cShape: [4]),
        GemmCase(transposeA: false, transposeB: true, alpha: 0.5, beta: 2, cShape: [3, 4]),
        GemmCase(transposeA: true, transposeB: false, alpha: 1.5, beta: -1, cShape: [3, 1]),
        GemmCase(transposeA: true, transposeB: true, alpha: -2, beta: 0.5, cShape: [1]),
        GemmCase(transposeA: false, transposeB: true, alpha: 1, beta: 1, cShape: nil),
    ]

    @Test("Gemm gradients of A, B and C equal finite differences", arguments: gemmCases)
    func gemmGradientsMatch(_ testCase: GemmCase) {
        let (m, k, n) = (3, 5, 4)
        let parameters = Gemm(alpha: testCase.alpha, beta: testCase.beta, transposeA: testCase.transposeA, transposeB: testCase.transposeB)
        let a = Tensor.random(shape: testCase.transposeA ? [k, m] : [m, k], seed: 1)
        let b = Tensor.random(shape: testCase.transposeB ? [n, k] : [k, n], seed: 2)
        let c = testCase.cShape.map { Tensor.random(shape: $0, seed: 3) }
        let dy = Tensor.random(shape: [m, n], seed: 4)
        let gradients = gemmGradients(a: a, b: b, cShape: testCase.cShape, outputGradient: dy, parameters: parameters)
        GradientCheck.expectClose(gradients.a, GradientCheck.numeric(at: a, weights: dy) { gemm($0, b, c, parameters: parameters) }, "dA")
        GradientCheck.expectClose(gradients.b, GradientCheck.numeric(at: b, weights: dy) { gemm(a, $0, c, parameters: parameters) }, "dB")
        if let c {
            GradientCheck.expectClose(gradients.c!, GradientCheck.numeric(at: c, weights: dy) { gemm(a, b, $0, parameters: parameters) }, "dC")
        } else {
            #expect(gradients.c == nil)
        }
    }

    @Test("MatMul gradients equal finite differences, with batch broadcasting and 1-D operands",
          arguments: [([2, 3, 4], [4, 5]), ([3, 4], [2, 4, 5]), ([4], [4, 3]), ([2, 3, 4], [4]),
                      ([2, 1, 3, 4], [3, 4, 2]), ([2, 3, 4], [2, 4, 2])])
    func matMulGradientsMatch(_ shapes: ([Int], [Int])) {
        let a = Tensor.random(shape: shapes.0, seed: 5)
        let b = Tensor.random(shape: shapes.1, seed: 6)
        let y = matMul(a, b)
        let dy = Tensor.random(shape: y.shape, seed: 7)
        let gradients = matMulGradients(a, b, outputGradient: dy)
        GradientCheck.expectClose(gradients.a, GradientCheck.numeric(at: a, weights: dy) { matMul($0, b) }, "dA")
        GradientCheck.expectClose(gradients.b, GradientCheck.numeric(at: b, weights: dy) { matMul(a, $0) }, "dB")
    }
}
