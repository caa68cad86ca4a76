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

/// The mode-n Gram matrix `X_(n) X_(n)ᵀ` `[d_n, d_n]` of a tensor (row-major, accumulated in
/// single precision, returned in double): one `gemm` of the unfolding `[d_n, N]` with itself.
/// The column order of the unfolding does not change the Gram matrix (method section 2).
public func unfoldingGram(_ input: Tensor, mode: Int) -> [Double] {
    ModeGramAccumulator.modeGram(input, mode: mode).map { Double($0) }
}

/// The per-batch HOSVD baseline (Nguyen et al., NeurIPS 2024; method section 9): for the current
/// batch only, the left singular vectors and singular values of every mode unfolding `X_(n)`
/// (`[d_n, N]`, `N` the product of the other extents) are computed, the rank comes from the energy
/// threshold (`hosvdRank`), and the leading singular vectors become that batch's factors. The core
/// is then formed as for LANCE, and the same low-rank chain gives the weight gradient
/// (`lowRankConv2dWeightGradient`, `lowRankLinearWeightGradient`).
///
/// The decomposition works on the smaller side of the unfolding, as a thin SVD does: when
/// `d_n ≤ N`, the `[d_n, d_n]` Gram matrix `X_(n) X_(n)ᵀ` is eigen-decomposed (`symmetricEigen`;
/// eigenvectors `U`, eigenvalues `σ²`); otherwise the `[N, N]` matrix `X_(n)ᵀ X_(n)` is
/// (eigenvectors `V`), and `U_k = X_(n) V_k / σ_k`. Both give the same factors up to the signs of
/// the columns and the same nonzero `σ²`; the spectrum is padded with zeros to `d_n` values.
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
        let others = input.count / max(dimension, 1)
        let name = modeNames?[mode] ?? "mode\(mode)"
        if dimension <= others {
            let eigen = try symmetricEigen(unfoldingGram(input, mode: mode), dimension: dimension)
            let decomposition = GramDecomposition(dimension: dimension, values: eigen.values.map { max($0, 0) }, vectors: eigen.vectors)
            bases.append(decomposition.basis(name: name, rank: hosvdRank(normalisedSpectrum: decomposition.spectrum, energy: energy)))
        } else {
            bases.append(try wideUnfoldingBasis(input, mode: mode, name: name, energy: energy))
        }
    }
    return bases
}

/// `hosvdBases` for a mode whose unfolding `X_(n)` (`[d, N]`) has fewer columns than rows: the
/// eigenvectors `V` of `X_(n)ᵀ X_(n)` (`[N, N]`) give `U_k = X_(n) V_k / σ_k`. The rank is capped
/// at the number of nonzero singular values (columns beyond it would carry no energy); an all-zero
/// input gets the first unit vectors.
private func wideUnfoldingBasis(_ input: Tensor, mode: Int, name: String, energy: Float) throws(LinalgError) -> ModeBasis {
    let dimension = input.shape[mode]
    let unfolding = modeUnfolding(input, mode: mode)
    let columns = unfolding.shape[1]
    let decomposition = try symmetricEigen(gramMatrix(unfolding, ofColumns: true).map { Double($0) }, dimension: columns)
    let spectrum = GramDecomposition.normalisedSpectrum(decomposition.values, dimension: dimension)
    let largest = max(decomposition.values.first ?? 0, 0)
    let nonzero = decomposition.values.prefix { $0 > largest * 1e-12 && $0 > 0 }.count
    let rank = nonzero == 0 ? 1 : min(hosvdRank(normalisedSpectrum: spectrum, energy: energy), nonzero)
    var factor = [Float](repeating: 0, count: dimension * rank)
    if nonzero == 0 {
        factor[0] = 1
    } else {
        // V_k / σ_k, [N, rank], then U = X_(n) · (V / σ).
        var scaled = [Float](repeating: 0, count: columns * rank)
        for k in 0..<rank {
            let inverse = 1 / decomposition.values[k].squareRoot()
            for j in 0..<columns { scaled[j * rank + k] = Float(decomposition.vectors[j * columns + k] * inverse) }
        }
        unfolding.withUnsafeBufferPointer { m in
            scaled.withUnsafeBufferPointer { v in
                factor.withUnsafeMutableBufferPointer { u in
                    gemm(m: dimension, n: rank, k: columns, a: m.baseAddress!, lda: columns,
                         b: v.baseAddress!, ldb: rank, c: u.baseAddress!, ldc: rank)
                }
            }
        }
    }
    return ModeBasis(mode: name, dimension: dimension, rank: rank,
                     factor: Tensor(shape: [dimension, rank], scalars: factor), spectrum: spectrum)
}

/// One batch compressed by the per-batch HOSVD baseline: `hosvdBases(of:energy:)` followed by the
/// projection `TuckerCore(projecting:bases:)`.
public func hosvdCompress(_ input: Tensor, energy: Float) throws(LinalgError) -> TuckerCore {
    TuckerCore(projecting: input, bases: try hosvdBases(of: input, energy: energy))
}
