import LanceCore
import LanceModel
import LanceNN
import LanceTestSupport
import Testing

/// Central finite differences for the backward-kernel tests.
///
/// Every check differentiates the scalar objective `L(x) = Σ_k w[k] · f(x)[k]` with a fixed random
/// weighting `w` (the output gradient), so `∂L/∂x` is exactly what a backward kernel returns for
/// `dY = w`. The forward `f` runs in float32 (the product kernels) and `L` is summed in double
/// precision; the difference quotient divides by the step actually taken in float32,
/// `(x + h) − (x − h)`, so the step's own rounding does not bias it.
///
/// Step and tolerances: inputs are O(1) and `h = 1e-2`. For piecewise-linear operations
/// (convolution, Gemm, pooling, add/sub, reshape-like) central differences are exact up to
/// rounding, about `1e-7 · |y| / h ≈ 1e-5`; for smooth ones (sigmoid, tanh, div, softmax, loss) the
/// truncation error `h²/6 · |f'''|` adds about `2e-5`. Inputs are kept at least `0.05 > 2h` away
/// from every kink, so no difference straddles one. The accepted error is
/// `|analytic − numeric| ≤ 2e-3 + 5e-3 · |numeric|` — about 100× the expected error, yet far
/// below any real mistake (a dropped term, a wrong sign or index is an O(0.1–1) error).
enum GradientCheck {
    static let step: Float = 1e-2
    static let absolute: Float = 2e-3
    static let relative: Float = 5e-3

    static func objective(_ output: Tensor, _ weights: Tensor) -> Double {
        precondition(output.count == weights.count, "objective: \(output.shape) vs weights \(weights.shape)")
        var sum: Double = 0
        for (y, w) in zip(output.scalars, weights.scalars) { sum += Double(y) * Double(w) }
        return sum
    }

    /// `∂/∂x Σ w · f(x)` by central differences, one element of x at a time.
    static func numeric(at x: Tensor, weights: Tensor, step: Float = step, _ f: (Tensor) -> Tensor) -> Tensor {
        var gradient = [Float](repeating: 0, count: x.count)
        for k in 0..<x.count {
            var plus = x, minus = x
            plus.withUnsafeMutableBufferPointer { $0[k] += step }
            minus.withUnsafeMutableBufferPointer { $0[k] -= step }
            let taken = Double(plus.scalars[k]) - Double(minus.scalars[k])
            gradient[k] = Float((objective(f(plus), weights) - objective(f(minus), weights)) / taken)
        }
        return Tensor(shape: x.shape, scalars: gradient)
    }

    /// Records a test issue naming the worst element when `analytic` and `numeric` differ by more
    /// than `absolute + relative · |numeric|` anywhere.
    static func expectClose(_ analytic: Tensor, _ numeric: Tensor, absolute: Float = absolute, relative: Float = relative,
                            _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(analytic.shape == numeric.shape, "\(what): shape \(analytic.shape) vs \(numeric.shape)", sourceLocation: sourceLocation)
        guard analytic.shape == numeric.shape else { return }
        var worst = 0
        var worstExcess: Float = -.infinity
        for k in 0..<analytic.count {
            let excess = abs(analytic.scalars[k] - numeric.scalars[k]) - (absolute + relative * abs(numeric.scalars[k]))
            if excess > worstExcess || excess.isNaN { worst = k; worstExcess = excess.isNaN ? .infinity : excess }
        }
        #expect(worstExcess <= 0 || analytic.count == 0,
                "\(what): element \(worst) is \(analytic.scalars.isEmpty ? 0 : analytic.scalars[worst]), finite differences give \(numeric.scalars.isEmpty ? 0 : numeric.scalars[worst])",
                sourceLocation: sourceLocation)
    }

    /// Moves every value closer than `margin` to one of `kinks` out to `kink ± margin`.
    static func avoiding(_ kinks: [Float], in x: Tensor, margin: Float = 0.05) -> Tensor {
        Tensor(shape: x.shape, scalars: x.scalars.map { value in
            var v = value
            for kink in kinks where abs(v - kink) < margin { v = v < kink ? kink - margin : kink + margin }
            return v
        })
    }
}

@Suite("Backward: gradient-check harness")
struct BackwardCheckTests {
    @Test("the finite-difference harness catches a wrong gradient")
    func harnessCanFail() {
        // f(x) = x², analytic 2x; a deliberately wrong 3x must be outside the tolerance.
        let x = Tensor.random(shape: [6], in: 0.5...1, seed: 7)
        let w = Tensor(shape: [6], repeating: 1)
        let numeric = GradientCheck.numeric(at: x, weights: w) { binary($0, $0, .multiply) }
        let right = Tensor(shape: [6], scalars: x.scalars.map { 2 * $0 })
        let wrong = Tensor(shape: [6], scalars: x.scalars.map { 3 * $0 })
        #expect(right.isClose(to: numeric, absolute: GradientCheck.absolute, relative: GradientCheck.relative))
        #expect(!wrong.isClose(to: numeric, absolute: GradientCheck.absolute, relative: GradientCheck.relative))
    }
}
