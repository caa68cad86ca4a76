import LanceCore
import LanceLinalg
import LanceModel
import LanceNN

/// How a linear layer stores its weight, i.e. which Gemm operand convention the graph uses.
/// The graph's Gemm is `Y = alpha · X · op(B) + beta · C` with the weight as B.
public enum LinearWeightLayout: Sendable, Equatable {
    /// `[O, I]` (Gemm `transposeB = 1`, PyTorch's Linear): `Y = X · Wᵀ`.
    case outputsByInputs
    /// `[I, O]` (Gemm `transposeB = 0`, MatMul, Keras Dense): `Y = X · W`.
    case inputsByOutputs

    /// The layout of a Gemm node's B operand.
    public init(gemm: Gemm) {
        self = gemm.transposeB ? .outputsByInputs : .inputsByOutputs
    }
}

/// The three gradients of a linear layer.
public struct LinearGradients: Sendable, Equatable {
    /// `∂L/∂X`, the input's shape (`[B, I]` or `[B, L, I]`).
    public var input: Tensor
    /// `∂L/∂W`, the weight's shape (`[O, I]` or `[I, O]`).
    public var weight: Tensor
    /// `∂L/∂C`, the bias's shape, or `nil` without a bias.
    public var bias: Tensor?

    /// Creates a set of linear-layer gradients.
    public init(input: Tensor, weight: Tensor, bias: Tensor?) {
        self.input = input
        self.weight = weight
        self.bias = bias
    }
}

/// A LANCE linear layer's training forward (method sections 3.2, 3.3): the exact output
/// `Y = alpha · X · op(W) + beta · C` (ONNX Gemm; a 3-D input `[B, L, I]` runs as `[B·L, I]` and
/// the output is `[B, L, O]`) and the compressed input `S = X ×₀ U₀ᵀ ×₁ U₁ᵀ (×₂ U₂ᵀ)`.
///
/// - Parameters:
///   - input: X `[B, I]` or `[B, L, I]`.
///   - weight: W `[O, I]` (`transposeB`) or `[I, O]`; bias C broadcastable to `[rows, O]`, or `nil`.
///   - parameters: the Gemm hyperparameters (`transposeA` must be false).
///   - factors: one `[d_n, r_n]` factor per input mode.
public func lowRankLinearForward(input: Tensor, weight: Tensor, bias: Tensor?, parameters: Gemm,
                                 factors: [Tensor]) -> (output: Tensor, compressed: TuckerCore) {
    precondition(!parameters.transposeA, "a linear layer's input is not transposed")
    precondition(input.rank == 2 || input.rank == 3, "a linear layer takes [B, I] or [B, L, I], got \(input.shape)")
    let features = input.shape[input.rank - 1]
    let rows = input.count / max(features, 1)
    let product = gemm(input.reshaped(to: [rows, features]), weight, bias, parameters: parameters)
    let output = product.reshaped(to: Array(input.shape.dropLast()) + [product.shape[1]])
    return (output, TuckerCore(projecting: input, factors: factors))
}

/// The LANCE backward pass of a linear layer `Y = alpha · X · op(W) + beta · C` (method sections
/// 3.2 and 3.3): the input gradient is exact, `dX = alpha · dY · op(W)ᵀ` (one `gemm`; a 3-D input
/// is treated as `[B·L, I]`); the bias gradient is exact, `beta · Σ dY` over the axes C was
/// broadcast along; the weight gradient comes from the core (`lowRankLinearWeightGradient`).
///
/// - Parameters:
///   - compressed: core and factors of the input `[B, I]` or `[B, L, I]`.
///   - weight: W, `[O, I]` or `[I, O]` as `parameters.transposeB` says.
///   - biasShape: the shape of C, or `nil` without a bias.
///   - parameters: the node's Gemm hyperparameters (`transposeA` must be false; MatMul is `Gemm()`).
///   - outputGradient: dY `[B, O]` or `[B, L, O]`.
public func lowRankLinearBackward(compressed: TuckerCore, weight: Tensor, biasShape: [Int]?, parameters: Gemm,
                                  outputGradient: Tensor) -> LinearGradients {
    precondition(!parameters.transposeA, "a linear layer's input is not transposed")
    let inputShape = compressed.inputShape
    let features = inputShape[inputShape.count - 1]
    let rows = inputShape.dropLast().reduce(1, *)
    let layout = LinearWeightLayout(gemm: parameters)
    let outputs = layout == .outputsByInputs ? weight.shape[0] : weight.shape[1]
    precondition(outputGradient.count == rows * outputs, "output gradient \(outputGradient.shape) does not fit \(rows) rows of \(outputs) outputs")
    let inputGradient = Tensor(shape: inputShape) { out in
        outputGradient.withUnsafeBufferPointer { dy in
            weight.withUnsafeBufferPointer { w in
                // dX [rows, I] = alpha · dY [rows, O] · op(W)ᵀ [O, I]
                gemm(transposeB: layout == .inputsByOutputs, m: rows, n: features, k: outputs, alpha: parameters.alpha,
                     a: dy.baseAddress!, lda: outputs, b: w.baseAddress!, ldb: weight.shape[1],
                     c: out.baseAddress!, ldc: features)
            }
        }
    }
    var biasGradient: Tensor?
    if let biasShape {
        var reduced = sumToShape(outputGradient, shape: biasShape)
        reduced.withUnsafeMutableBufferPointer { values in
            for index in values.indices { values[index] *= parameters.beta }
        }
        biasGradient = reduced
    }
    let weightGradient = lowRankLinearWeightGradient(compressed: compressed, outputGradient: outputGradient,
                                                     layout: layout, alpha: parameters.alpha)
    return LinearGradients(input: inputGradient, weight: weightGradient, bias: biasGradient)
}

/// The LANCE weight gradient of a linear layer from the core, the factors and dY, never forming X.
///
/// 2-D input X `[B, I]`, factors `U₀ [B, r₀]`, `U₁ [I, r₁]`, core `S = U₀ᵀ X U₁` `[r₀, r₁]`
/// (section 3.3):
/// ```
/// dW[O, I] = alpha · (dYᵀ U₀) (S U₁ᵀ)          = alpha · dYᵀ (U₀U₀ᵀ) X (U₁U₁ᵀ)
/// ```
/// three `gemm`s (`P = dYᵀU₀` `[O, r₀]`, `Q = S U₁ᵀ` `[r₀, I]`, `P·Q`).
///
/// 3-D (token) input X `[B, L, I]`, factors `U₀ [B, r₀]`, `U₁ [L, r₁]`, `U₂ [I, r₂]`, core
/// `[r₀, r₁, r₂]` (section 3.2):
/// ```
/// Z₁[o, l, k₀] = Σ_b dY[b, l, o] · U₀[b, k₀]                 L gemms
/// Z₂[l, k₀, k₂] = Σ_{k₁} U₁[l, k₁] · S[k₀, k₁, k₂]            r₀ gemms
/// Z₃[l, k₀, i] = Σ_{k₂} Z₂[l, k₀, k₂] · U₂[i, k₂]             one gemm
/// dW[o, i]     = alpha · Σ_{l, k₀} Z₁[o, l, k₀] · Z₃[l, k₀, i]  one gemm, k = L·r₀
/// ```
/// (the section's Z₁…Z₃ with their axes laid out so that every contraction is one matrix product;
/// the multiply-accumulate counts are the section's `B·L·O·r₀ + r₀r₁r₂·L + r₀r₂·I·L + I·O·L·r₀`).
///
/// The result is the exact weight gradient evaluated on the reconstruction X̂ (exact when every
/// factor is square orthogonal).
///
/// - Parameters:
///   - compressed: core and factors of the input.
///   - outputGradient: dY `[B, O]` or `[B, L, O]`.
///   - layout: `[O, I]` (Gemm `transposeB = 1`) or `[I, O]` (Gemm `transposeB = 0`, MatMul).
///   - alpha: the Gemm's alpha.
/// - Returns: dW, `[O, I]` or `[I, O]` as `layout` says.
public func lowRankLinearWeightGradient(compressed: TuckerCore, outputGradient: Tensor, layout: LinearWeightLayout,
                                        alpha: Float = 1) -> Tensor {
    let inputShape = compressed.inputShape
    let ranks = compressed.ranks
    let batch = inputShape[0]
    let features = inputShape[inputShape.count - 1]
    let outputs = outputGradient.shape[outputGradient.rank - 1]
    precondition(outputGradient.shape == inputShape.dropLast() + [outputs],
                 "output gradient \(outputGradient.shape) does not fit the input \(inputShape)")
    let weightShape = layout == .outputsByInputs ? [outputs, features] : [features, outputs]
    let r0 = ranks[0]
    // P [O, L·r₀] (2-D: L = 1) and Q [L·r₀, I]; then dW = alpha · P·Q (or its transpose).
    let tokens: Int
    var p: [Float]
    var q: [Float]
    switch inputShape.count {
    case 2:
        tokens = 1
        let r1 = ranks[1]
        p = [Float](repeating: 0, count: outputs * r0)
        q = [Float](repeating: 0, count: r0 * features)
        outputGradient.withUnsafeBufferPointer { dy in
            compressed.factors[0].withUnsafeBufferPointer { u0 in
                p.withUnsafeMutableBufferPointer { out in
                    // P [O, r₀] = dYᵀ [O, B] · U₀ [B, r₀]
                    gemm(transposeA: true, m: outputs, n: r0, k: batch, a: dy.baseAddress!, lda: outputs,
                         b: u0.baseAddress!, ldb: r0, c: out.baseAddress!, ldc: r0)
                }
            }
        }
        compressed.core.withUnsafeBufferPointer { s in
            compressed.factors[1].withUnsafeBufferPointer { u1 in
                q.withUnsafeMutableBufferPointer { out in
                    // Q [r₀, I] = S [r₀, r₁] · U₁ᵀ [r₁, I]
                    gemm(transposeB: true, m: r0, n: features, k: r1, a: s.baseAddress!, lda: r1,
                         b: u1.baseAddress!, ldb: r1, c: out.baseAddress!, ldc: features)
                }
            }
        }
    case 3:
        tokens = inputShape[1]
        let (r1, r2) = (ranks[1], ranks[2])
        p = [Float](repeating: 0, count: outputs * tokens * r0)
        outputGradient.withUnsafeBufferPointer { dy in
            compressed.factors[0].withUnsafeBufferPointer { u0 in
                p.withUnsafeMutableBufferPointer { out in
                    // Z₁[:, l, :] [O, r₀] = dY[:, l, :]ᵀ [O, B] · U₀ [B, r₀]
                    for l in 0..<tokens {
                        gemm(transposeA: true, m: outputs, n: r0, k: batch, a: dy.baseAddress! + l * outputs, lda: tokens * outputs,
                             b: u0.baseAddress!, ldb: r0, c: out.baseAddress! + l * r0, ldc: tokens * r0)
                    }
                }
            }
        }
        var z2 = [Float](repeating: 0, count: tokens * r0 * r2)
        compressed.core.withUnsafeBufferPointer { s in
            compressed.factors[1].withUnsafeBufferPointer { u1 in
                z2.withUnsafeMutableBufferPointer { out in
                    // Z₂[:, k₀, :] [L, r₂] = U₁ [L, r₁] · S[k₀] [r₁, r₂]
                    for k0 in 0..<r0 {
                        gemm(m: tokens, n: r2, k: r1, a: u1.baseAddress!, lda: r1,
                             b: s.baseAddress! + k0 * r1 * r2, ldb: r2, c: out.baseAddress! + k0 * r2, ldc: r0 * r2)
                    }
                }
            }
        }
        q = [Float](repeating: 0, count: tokens * r0 * features)
        z2.withUnsafeBufferPointer { z in
            compressed.factors[2].withUnsafeBufferPointer { u2 in
                q.withUnsafeMutableBufferPointer { out in
                    // Z₃ [L·r₀, I] = Z₂ [L·r₀, r₂] · U₂ᵀ [r₂, I]
                    gemm(transposeB: true, m: tokens * r0, n: features, k: r2, a: z.baseAddress!, lda: r2,
                         b: u2.baseAddress!, ldb: r2, c: out.baseAddress!, ldc: features)
                }
            }
        }
    default:
        preconditionFailure("the low-rank linear gradient needs a 2-D or 3-D input, got \(inputShape)")
    }
    let depth = tokens * r0
    return Tensor(shape: weightShape) { out in
        p.withUnsafeBufferPointer { pp in
            q.withUnsafeBufferPointer { qq in
                if layout == .outputsByInputs {
                    // dW [O, I] = alpha · P [O, L·r₀] · Q [L·r₀, I]
                    gemm(m: outputs, n: features, k: depth, alpha: alpha, a: pp.baseAddress!, lda: depth,
                         b: qq.baseAddress!, ldb: features, c: out.baseAddress!, ldc: features)
                } else {
                    // dW [I, O] = alpha · Qᵀ [I, L·r₀] · Pᵀ [L·r₀, O]
                    gemm(transposeA: true, transposeB: true, m: features, n: outputs, k: depth, alpha: alpha,
                         a: qq.baseAddress!, lda: features, b: pp.baseAddress!, ldb: depth, c: out.baseAddress!, ldc: outputs)
                }
            }
        }
    }
}
