import LanceCore
import LanceLinalg
import LanceModel

/// The per-iteration rank rule of the HOSVD baseline (Nguyen et al. 2024):
/// `k = searchsorted(cumsum(σ²)/Σσ², ε) + 1`, the smallest rank whose cumulative normalised energy
/// reaches ε (`≥`; LANCE's `lanceRank` needs it to exceed ε, which differs only on exact ties),
/// capped at the dimension.
public func hosvdRank(normalisedSpectrum spectrum: [Float], energy: Float) -> Int {
    var cumulative: Double = 0
    var count = 0
    for value in spectrum {
        cumulative += Double(value)
        if cumulative < Double(energy) { count += 1 } else { break }
    }
    return max(1, min(count + 1, spectrum.count))
}

/// The mode-n Gram matrix `X_(n) X_(n)ᵀ` `[d_n, d_n]` of a tensor (row-major, double precision),
/// without forming the unfolding: with X viewed as `[outer, d_n, inner]`,
/// `G = Σ_{o} X[o] X[o]ᵀ` over the `[d_n, inner]` slices, one accumulating `gemm` per slice.
/// The column order of the unfolding does not change the Gram matrix (method section 2).
public func unfoldingGram(_ input: Tensor, mode: Int) -> [Double] {
    precondition(mode >= 0 && mode < input.rank, "mode \(mode) out of range for \(input.shape)")
    let dimension = input.shape[mode]
    let outer = input.shape[..<mode].reduce(1, *)
    let inner = input.shape[(mode + 1)...].reduce(1, *)
    var gram = [Float](repeating: 0, count: dimension * dimension)
    input.withUnsafeBufferPointer { x in
        gram.withUnsafeMutableBufferPointer { g in
            for o in 0..<outer {
                gemm(transposeB: true, m: dimension, n: dimension, k: inner,
                     a: x.baseAddress! + o * dimension * inner, lda: inner,
                     b: x.baseAddress! + o * dimension * inner, ldb: inner,
                     beta: o == 0 ? 0 : 1, c: g.baseAddress!, ldc: dimension)
            }
        }
    }
    return gram.map { Double($0) }
}

/// The per-batch HOSVD baseline (Nguyen et al., NeurIPS 2024; method section 9): for the current
/// batch only, every mode's Gram matrix `X_(n) X_(n)ᵀ` is eigen-decomposed (`symmetricEigen`;
/// its eigenvectors are the left singular vectors of the unfolding and its eigenvalues the squared
/// singular values), the rank comes from the energy threshold (`hosvdRank`), and the leading
/// eigenvectors become that batch's factors. The core is then formed as for LANCE, and the same
/// low-rank chain gives the weight gradient (`lowRankConv2dWeightGradient`,
/// `lowRankLinearWeightGradient`).
///
/// Unlike LANCE's fixed bases, the factors (and ranks) change every batch, and their
/// decompositions are recomputed each iteration.
///
/// - Parameters:
///   - input: the layer input of one batch (`[B, C, H, W]`, `[B, I]` or `[B, L, I]`).
///   - energy: ε (the HOSVD paper used 0.8; the LANCE repository runs it with 0.7).
///   - modeNames: what each mode indexes (`TrainedLayer.modeNames`); `mode0`, `mode1`, … when `nil`.
/// - Returns: one basis per mode, in axis order.
public func hosvdBases(of input: Tensor, energy: Float, modeNames: [String]? = nil) throws(LinalgError) -> [ModeBasis] {
    precondition(modeNames == nil || modeNames!.count == input.rank, "\(modeNames!.count) mode names for a rank-\(input.rank) input")
    var bases: [ModeBasis] = []
    for mode in 0..<input.rank {
        let dimension = input.shape[mode]
        let decomposition = try symmetricEigen(unfoldingGram(input, mode: mode), dimension: dimension)
        let clamped = decomposition.values.map { max($0, 0) }
        let total = clamped.reduce(0, +)
        let spectrum = clamped.map { Float(total > 0 ? $0 / total : 1 / Double(max(dimension, 1))) }
        let rank = hosvdRank(normalisedSpectrum: spectrum, energy: energy)
        var factor = [Float](repeating: 0, count: dimension * rank)
        for i in 0..<dimension {
            for k in 0..<rank { factor[i * rank + k] = Float(decomposition.vectors[i * dimension + k]) }
        }
        bases.append(ModeBasis(mode: modeNames?[mode] ?? "mode\(mode)", dimension: dimension, rank: rank,
                               factor: Tensor(shape: [dimension, rank], scalars: factor), spectrum: spectrum))
    }
    return bases
}

/// One batch compressed by the per-batch HOSVD baseline: `hosvdBases(of:energy:)` followed by the
/// projection `TuckerCore(projecting:bases:)`.
public func hosvdCompress(_ input: Tensor, energy: Float) throws(LinalgError) -> TuckerCore {
    TuckerCore(projecting: input, bases: try hosvdBases(of: input, energy: energy))
}
