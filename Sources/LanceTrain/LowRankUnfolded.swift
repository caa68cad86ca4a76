import LanceCore
import LanceLinalg
import LanceModel
import LanceNN

/// The weight gradient of a convolution whose input was kept as the 3-mode core of its im2col
/// tensor (continual learning, method section 5.1): with `X_unf [B, d, L]` (`d = C·kH·kW`,
/// `L = H'·W'`, `unfoldedInput`) compressed to `S [r₀, r₁, r₂]` on `U₀ [B, r₀]`, `U₁ [d, r₁]`,
/// `U₂ [L, r₂]`, the gradient on the reconstruction `X̂_unf = S ×₀ U₀ ×₁ U₁ ×₂ U₂` is
///
/// ```
/// Z₁[k₀, c', l] = Σ_b U₀[b, k₀] · dY[b, c', l]          [r₀, C', L]    one gemm
/// Z₂[k₀, c', k₂] = Σ_l Z₁[k₀, c', l] · U₂[l, k₂]          [r₀, C', r₂]   one gemm
/// M[c', k₁]      = Σ_{k₀, k₂} Z₂[k₀, c', k₂] · S[k₀, k₁, k₂]   [C', r₁]   r₀ gemms
/// dW             = M · U₁ᵀ                                [C', d] → [C', C, kH, kW]
/// ```
///
/// so every row of dW lies in the span of U₁: when U₁ is orthogonal to a protected basis P,
/// `dW · P = 0` and the layer's response to inputs in span(P) cannot change (section 5.2).
///
/// - Parameters:
///   - compressed: the core `[r₀, r₁, r₂]` and factors of `X_unf [B, d, L]`.
///   - outputGradient: dY `[B, C', H', W']` with `H'·W' = L`.
///   - weightShape: `[C', C, kH, kW]` with `C·kH·kW = d` (groups 1).
/// - Returns: dW with `weightShape`.
public func unfoldedLowRankWeightGradient(compressed: TuckerCore, outputGradient: Tensor, weightShape: [Int]) -> Tensor {
    precondition(compressed.factors.count == 3, "the unfolded gradient needs a 3-mode core [r₀, r₁, r₂]")
    let (batch, features, positions) = (compressed.inputShape[0], compressed.inputShape[1], compressed.inputShape[2])
    let (r0, r1, r2) = (compressed.ranks[0], compressed.ranks[1], compressed.ranks[2])
    let outputChannels = weightShape[0]
    precondition(weightShape.dropFirst().reduce(1, *) == features,
                 "weight \(weightShape) does not match \(features) unfolded features")
    precondition(outputGradient.count == batch * outputChannels * positions,
                 "output gradient \(outputGradient.shape) does not match [\(batch), \(outputChannels), \(positions)]")
    // Z₁ [r₀, C'·L] = U₀ᵀ · dY [B, C'·L].
    var z1 = [Float](repeating: 0, count: r0 * outputChannels * positions)
    // Z₂ [r₀·C', r₂] = Z₁ [r₀·C', L] · U₂ [L, r₂].
    var z2 = [Float](repeating: 0, count: r0 * outputChannels * r2)
    var m = [Float](repeating: 0, count: outputChannels * r1)
    compressed.factors[0].withUnsafeBufferPointer { u0 in
        outputGradient.withUnsafeBufferPointer { dy in
            z1.withUnsafeMutableBufferPointer { out in
                gemm(transposeA: true, m: r0, n: outputChannels * positions, k: batch, a: u0.baseAddress!, lda: r0,
                     b: dy.baseAddress!, ldb: outputChannels * positions, c: out.baseAddress!, ldc: outputChannels * positions)
            }
        }
    }
    compressed.factors[2].withUnsafeBufferPointer { u2 in
        z1.withUnsafeBufferPointer { z in
            z2.withUnsafeMutableBufferPointer { out in
                gemm(m: r0 * outputChannels, n: r2, k: positions, a: z.baseAddress!, lda: positions,
                     b: u2.baseAddress!, ldb: r2, c: out.baseAddress!, ldc: r2)
            }
        }
    }
    // M [C', r₁] = Σ_{k₀} Z₂[k₀] [C', r₂] · S[k₀]ᵀ [r₂, r₁].
    compressed.core.withUnsafeBufferPointer { s in
        z2.withUnsafeBufferPointer { z in
            m.withUnsafeMutableBufferPointer { out in
                for k0 in 0..<r0 {
                    gemm(transposeB: true, m: outputChannels, n: r1, k: r2, a: z.baseAddress! + k0 * outputChannels * r2, lda: r2,
                         b: s.baseAddress! + k0 * r1 * r2, ldb: r2, beta: k0 == 0 ? 0 : 1, c: out.baseAddress!, ldc: r1)
                }
            }
        }
    }
    // dW [C', d] = M · U₁ᵀ.
    return Tensor(shape: weightShape) { out in
        m.withUnsafeBufferPointer { mm in
            compressed.factors[1].withUnsafeBufferPointer { u1 in
                gemm(transposeB: true, m: outputChannels, n: features, k: r1, a: mm.baseAddress!, lda: r1,
                     b: u1.baseAddress!, ldb: r1, c: out.baseAddress!, ldc: features)
            }
        }
    }
}
