import LanceCore
import LanceLinalg
import LanceModel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Activations

extension Activation {
    /// The derivative `f'(x)` at one input value.
    ///
    /// Conventions at the kinks (where `f` has no derivative), chosen so that a "dead" or
    /// saturated unit passes no gradient, as PyTorch does:
    /// - `relu`: `f'(x) = 1` for `x > 0`, else `0` (so `relu'(0) = 0`).
    /// - `clip(min, max)` (ReLU6 = `clip(0, 6)`): `1` for `min < x < max`, else `0`.
    /// - `leakyRelu(α)`: `1` for `x > 0`, else `α`.
    /// - `hardSigmoid(α, β)`: `α` for `0 < α·x + β < 1`, else `0`.
    /// - `hardSwish`: `0` for `x < −3`, `x/3 + 1/2` for `−3 ≤ x ≤ 3`, `1` for `x > 3` (PyTorch's rule).
    /// - `thresholdedReLU(θ, s, max)`: `1` for `θ < x < max`, `s` for `x ≤ θ`, `0` for `x ≥ max`.
    /// - `sigmoid`: `σ(x)·(1 − σ(x))`; `tanh`: `1 − tanh²(x)` (smooth).
    @inlinable
    public func derivative(at x: Float) -> Float {
        switch self {
        case .relu: return x > 0 ? 1 : 0
        case .clip(let minimum, let maximum): return x > minimum && x < maximum ? 1 : 0
        case .leakyRelu(let alpha): return x > 0 ? 1 : alpha
        case .sigmoid:
            let s = 1 / (1 + expf(-x))
            return s * (1 - s)
        case .hardSigmoid(let alpha, let beta):
            let z = alpha * x + beta
            return z > 0 && z < 1 ? alpha : 0
        case .hardSwish:
            if x < -3 { return 0 }
            if x > 3 { return 1 }
            return x / 3 + 0.5
        case .tanh:
            let t = tanhf(x)
            return 1 - t * t
        case .thresholdedReLU(let threshold, let negativeSlope, let maximum):
            if x >= maximum { return 0 }
            return x > threshold ? 1 : negativeSlope
        }
    }

    /// The derivative `f'(x)` expressed through the output `y = f(x)`, or `nil` when the output
    /// does not determine it (`hardSwish`, `thresholdedReLU`, `leakyRelu` with `α ≤ 0`,
    /// `hardSigmoid` with `α ≤ 0`).
    ///
    /// - `relu`: `y > 0`; `clip`: `min < y < max`; `leakyRelu(α > 0)`: `y > 0 ? 1 : α`;
    /// - `sigmoid`: `y·(1 − y)`; `tanh`: `1 − y²`; `hardSigmoid(α > 0)`: `0 < y < 1 ? α : 0`.
    ///
    /// Same kink conventions as `derivative(at:)`.
    @inlinable
    public func derivative(fromOutput y: Float) -> Float? {
        switch self {
        case .relu: return y > 0 ? 1 : 0
        case .clip(let minimum, let maximum): return y > minimum && y < maximum ? 1 : 0
        case .leakyRelu(let alpha): return alpha > 0 ? (y > 0 ? 1 : alpha) : nil
        case .sigmoid: return y * (1 - y)
        case .tanh: return 1 - y * y
        case .hardSigmoid(let alpha, _): return alpha > 0 ? (y > 0 && y < 1 ? alpha : 0) : nil
        case .hardSwish, .thresholdedReLU: return nil
        }
    }

    /// Whether `activationGradient(_:output:outputGradient:)` can be used (the output alone
    /// determines the derivative), so a trainer may keep the output instead of the input.
    public var isDifferentiableFromOutput: Bool { derivative(fromOutput: 0.5) != nil }
}

/// The input gradient of an element-wise activation from its saved input:
/// `dX[k] = dY[k] · f'(X[k])` (kink conventions: `Activation.derivative(at:)`).
///
/// - Parameters: `input` X and `outputGradient` dY of the same (any) shape.
/// - Returns: dX, the shape of X.
public func activationGradient(_ activation: Activation, input: Tensor, outputGradient: Tensor) -> Tensor {
    precondition(input.shape == outputGradient.shape, "activation gradient: input \(input.shape) vs gradient \(outputGradient.shape)")
    return Tensor(shape: input.shape) { out in
        input.withUnsafeBufferPointer { x in
            outputGradient.withUnsafeBufferPointer { dy in
                switch activation {
                case .relu:
                    for k in 0..<out.count { out[k] = x[k] > 0 ? dy[k] : 0 }
                default:
                    for k in 0..<out.count { out[k] = dy[k] * activation.derivative(at: x[k]) }
                }
            }
        }
    }
}

/// The input gradient of an element-wise activation from its saved output `Y = f(X)`:
/// `dX[k] = dY[k] · f'(Y[k])` as given by `Activation.derivative(fromOutput:)`.
///
/// - Precondition: `activation.isDifferentiableFromOutput`.
/// - Returns: dX, the shape of Y.
public func activationGradient(_ activation: Activation, output: Tensor, outputGradient: Tensor) -> Tensor {
    precondition(activation.isDifferentiableFromOutput, "\(activation.opType)'s derivative needs its input, not its output")
    precondition(output.shape == outputGradient.shape, "activation gradient: output \(output.shape) vs gradient \(outputGradient.shape)")
    return Tensor(shape: output.shape) { out in
        output.withUnsafeBufferPointer { y in
            outputGradient.withUnsafeBufferPointer { dy in
                for k in 0..<out.count { out[k] = dy[k] * (activation.derivative(fromOutput: y[k]) ?? 0) }
            }
        }
    }
}

// MARK: - Batch normalization

/// The gradients of inference-form batch normalization (frozen statistics) over axis 1 of
/// `[N, C, ...]`, `y = scale[c] · (x − mean[c]) / sqrt(variance[c] + ε) + bias[c]`:
///
/// ```
/// dX[n, c, …]  = dY[n, c, …] · scale[c] / sqrt(variance[c] + ε)
/// dScale[c]    = Σ_{n, …} dY[n, c, …] · (x[n, c, …] − mean[c]) / sqrt(variance[c] + ε)
/// dBias[c]     = Σ_{n, …} dY[n, c, …]
/// ```
///
/// Mean and variance are constants (no gradient). Channel sums run in double precision.
public func batchNormalizationGradients(input: Tensor, scale: Tensor, mean: Tensor, variance: Tensor, epsilon: Float,
                                        outputGradient: Tensor) -> (input: Tensor, scale: Tensor, bias: Tensor) {
    precondition(input.shape == outputGradient.shape && input.rank >= 2, "batch-norm gradient needs matching [N, C, ...] shapes")
    let batch = input.shape[0], channels = input.shape[1]
    let planeSize = input.shape.dropFirst(2).reduce(1, *)
    let inverse = (0..<channels).map { 1 / (Double(variance.scalars[$0]) + Double(epsilon)).squareRoot() }
    var scaleSums = [Double](repeating: 0, count: channels)
    var biasSums = [Double](repeating: 0, count: channels)
    let inputGradient = Tensor(shape: input.shape) { out in
        input.withUnsafeBufferPointer { x in
            outputGradient.withUnsafeBufferPointer { dy in
                for n in 0..<batch {
                    for c in 0..<channels {
                        let base = (n * channels + c) * planeSize
                        let multiplier = Float(Double(scale.scalars[c]) * inverse[c])
                        let centre = mean.scalars[c]
                        var scaleSum: Double = 0, biasSum: Double = 0
                        for k in base..<(base + planeSize) {
                            out[k] = dy[k] * multiplier
                            scaleSum += Double(dy[k]) * Double(x[k] - centre)
                            biasSum += Double(dy[k])
                        }
                        scaleSums[c] += scaleSum * inverse[c]
                        biasSums[c] += biasSum
                    }
                }
            }
        }
    }
    return (inputGradient, Tensor(shape: [channels], scalars: scaleSums.map { Float($0) }),
            Tensor(shape: [channels], scalars: biasSums.map { Float($0) }))
}

// MARK: - Broadcasting binaries

/// Sums a gradient over the axes along which a tensor of `shape` was broadcast to
/// `gradient.shape` (numpy rules: `shape` is aligned to the right, extent-1 and missing axes
/// stretch), so the result has `shape`:
///
/// ```
/// out[i] = Σ_{k : k broadcasts onto i} gradient[k]
/// ```
///
/// - Precondition: `shape` broadcasts to `gradient.shape`.
public func sumToShape(_ gradient: Tensor, shape: [Int]) -> Tensor {
    if gradient.shape == shape { return gradient }
    let rank = gradient.rank
    precondition(shape.count <= rank, "cannot reduce \(gradient.shape) to the larger rank of \(shape)")
    let padded = [Int](repeating: 1, count: rank - shape.count) + shape
    let strides = reductionStrides(padded, to: gradient.shape)
    var sums = [Double](repeating: 0, count: shape.reduce(1, *))
    gradient.withUnsafeBufferPointer { g in
        forEachBroadcastOffset(gradient.shape, strides, strides) { position, offset, _ in
            sums[offset] += Double(g[position])
        }
    }
    return Tensor(shape: shape, scalars: sums.map { Float($0) })
}

/// The gradients of `Y = A op B` with numpy broadcasting, each reduced over its broadcast axes
/// (`sumToShape`):
///
/// ```
/// add:      dA = dY,       dB = dY
/// subtract: dA = dY,       dB = −dY
/// multiply: dA = dY · B,   dB = dY · A
/// divide:   dA = dY / B,   dB = −dY · A / B²
/// ```
///
/// - Parameters: `a`, `b` the forward inputs; `outputGradient` dY with the broadcast shape.
/// - Returns: dA with `a.shape`, dB with `b.shape` (sums in double precision).
public func binaryGradients(_ a: Tensor, _ b: Tensor, _ op: BinaryOperator,
                            outputGradient: Tensor) -> (a: Tensor, b: Tensor) {
    let shape = outputGradient.shape
    let rank = shape.count
    precondition(a.rank <= rank && b.rank <= rank, "binary gradient: inputs \(a.shape), \(b.shape) vs output \(shape)")
    let aStrides = reductionStrides([Int](repeating: 1, count: rank - a.rank) + a.shape, to: shape)
    let bStrides = reductionStrides([Int](repeating: 1, count: rank - b.rank) + b.shape, to: shape)
    var aSums = [Double](repeating: 0, count: a.count)
    var bSums = [Double](repeating: 0, count: b.count)
    a.withUnsafeBufferPointer { x in
        b.withUnsafeBufferPointer { y in
            outputGradient.withUnsafeBufferPointer { dy in
                forEachBroadcastOffset(shape, aStrides, bStrides) { position, aOffset, bOffset in
                    let g = Double(dy[position])
                    switch op {
                    case .add:
                        aSums[aOffset] += g
                        bSums[bOffset] += g
                    case .subtract:
                        aSums[aOffset] += g
                        bSums[bOffset] -= g
                    case .multiply:
                        aSums[aOffset] += g * Double(y[bOffset])
                        bSums[bOffset] += g * Double(x[aOffset])
                    case .divide:
                        let denominator = Double(y[bOffset])
                        aSums[aOffset] += g / denominator
                        bSums[bOffset] -= g * Double(x[aOffset]) / (denominator * denominator)
                    }
                }
            }
        }
    }
    return (Tensor(shape: a.shape, scalars: aSums.map { Float($0) }),
            Tensor(shape: b.shape, scalars: bSums.map { Float($0) }))
}

/// Row-major strides of `shape` (same rank as `target`), 0 on axes broadcast to `target`.
func reductionStrides(_ shape: [Int], to target: [Int]) -> [Int] {
    precondition(shape.count == target.count)
    var strides = [Int](repeating: 0, count: target.count)
    var step = 1
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        precondition(shape[axis] == target[axis] || shape[axis] == 1,
                     "shape \(shape) does not broadcast to \(target)")
        strides[axis] = shape[axis] == target[axis] ? step : 0
        step *= shape[axis]
    }
    return strides
}

/// Calls `body(position, firstOffset, secondOffset)` for every row-major position of `shape`,
/// with the offsets of that position in two tensors given by their (broadcast) strides.
@inline(__always)
func forEachBroadcastOffset(_ shape: [Int], _ first: [Int], _ second: [Int], _ body: (Int, Int, Int) -> Void) {
    let count = shape.reduce(1, *)
    guard count > 0 else { return }
    let rank = shape.count
    guard rank > 0 else { body(0, 0, 0); return }
    var index = [Int](repeating: 0, count: rank)
    var firstOffset = 0, secondOffset = 0
    for position in 0..<count {
        body(position, firstOffset, secondOffset)
        var axis = rank - 1
        while axis >= 0 {
            index[axis] += 1
            firstOffset += first[axis]
            secondOffset += second[axis]
            if index[axis] < shape[axis] { break }
            firstOffset -= first[axis] * shape[axis]
            secondOffset -= second[axis] * shape[axis]
            index[axis] = 0
            axis -= 1
        }
    }
}

// MARK: - Softmax

/// The input gradient of softmax along `axis` from its saved output Y:
///
/// ```
/// dX_i = Y_i · (dY_i − Σ_j dY_j · Y_j)     (j over the softmax row)
/// ```
///
/// With `coercedTo2D`, the row is all axes from `axis` on (ONNX opset < 13), as in `softmax`.
public func softmaxGradient(output: Tensor, outputGradient: Tensor, axis: Int, coercedTo2D: Bool) -> Tensor {
    precondition(output.shape == outputGradient.shape, "softmax gradient: output \(output.shape) vs gradient \(outputGradient.shape)")
    let resolved = axis < 0 ? axis + output.rank : axis
    let outer = output.shape[..<resolved].reduce(1, *)
    let extent = coercedTo2D ? output.shape[resolved...].reduce(1, *) : output.shape[resolved]
    let inner = coercedTo2D ? 1 : output.shape[(resolved + 1)...].reduce(1, *)
    return Tensor(shape: output.shape) { out in
        output.withUnsafeBufferPointer { y in
            outputGradient.withUnsafeBufferPointer { dy in
                for o in 0..<outer {
                    for i in 0..<inner {
                        let base = o * extent * inner + i
                        var dot: Double = 0
                        for k in 0..<extent { dot += Double(dy[base + k * inner]) * Double(y[base + k * inner]) }
                        for k in 0..<extent {
                            let p = base + k * inner
                            out[p] = Float(Double(y[p]) * (Double(dy[p]) - dot))
                        }
                    }
                }
            }
        }
    }
}
