import LanceCore
import LanceLinalg
import LanceModel

/// A trained layer's input activation compressed onto fixed mode bases (method section 2): the
/// Tucker core `S = X ×₀ U₀ᵀ ×₁ U₁ᵀ … ×_{d−1} U_{d−1}ᵀ` and the factors `U_n`.
///
/// For a convolution input X `[B, C, H, W]` the factors are `U₀ [B, r₀]`, `U₁ [C, r₁]`,
/// `U₂ [H, r₂]`, `U₃ [W, r₃]` and S is `[r₀, r₁, r₂, r₃]`; for a linear input `[B, I]`,
/// `S = U₀ᵀ X U₁` `[r₀, r₁]`; for token inputs `[B, L, I]` (section 3.2), `[r₀, r₁, r₂]`.
/// This is what LANCE keeps for the backward pass instead of X (section 3.1, "Stored per layer").
public struct TuckerCore: Sendable, Equatable {
    /// The core S, `[r₀, r₁, …]`, row-major.
    public var core: Tensor
    /// The factors `U_n`, each `[d_n, r_n]` row-major (`ModeBasis.factor`).
    public var factors: [Tensor]

    /// Wraps a core and its factors.
    ///
    /// - Precondition: one rank-2 factor per core axis, `factors[n].shape[1] == core.shape[n]`.
    public init(core: Tensor, factors: [Tensor]) {
        precondition(core.rank == factors.count && factors.allSatisfy { $0.rank == 2 },
                     "a rank-\(core.rank) core needs \(core.rank) rank-2 factors")
        precondition(zip(core.shape, factors).allSatisfy { $0 == $1.shape[1] },
                     "core \(core.shape) does not match the factor ranks \(factors.map { $0.shape })")
        self.core = core
        self.factors = factors
    }

    /// Projects an activation onto fixed factors: `S = X ×₀ U₀ᵀ ×₁ U₁ᵀ …`, computed in the code's
    /// order (method section 2, "core computation order"): starting from `T = X`, each step
    /// contracts the current first axis with `U_n`, `T ← tensordot(T, U_n, ([0], [0]))`, and
    /// appends the new rank axis at the end, so after all modes S is `[r₀, r₁, …]`. Each step is
    /// one `gemm`: `T' [R, r_n] = T[d_n, R]ᵀ · U_n[d_n, r_n]` where R is the product of the other axes.
    ///
    /// - Precondition: `factors[n].shape[0] == input.shape[n]` for every mode.
    public init(projecting input: Tensor, factors: [Tensor]) {
        precondition(input.rank == factors.count, "a rank-\(input.rank) input needs \(input.rank) factors, got \(factors.count)")
        for (mode, factor) in factors.enumerated() {
            // Mode 0 is the batch: U₀ ties the training batch size to the calibration one (section 10, note 2).
            precondition(factor.rank == 2 && factor.shape[0] == input.shape[mode],
                         mode == 0 && factor.rank == 2
                             ? "the batch of \(input.shape[0]) differs from the \(factor.shape[0]) rows of the batch factor U₀; train with the calibration batch size"
                             : "factor \(mode) has shape \(factor.shape); mode \(mode) of the input \(input.shape) needs [\(input.shape[mode]), r]")
        }
        var current = input.scalars
        var shape = input.shape
        for factor in factors {
            let (dimension, rank) = (factor.shape[0], factor.shape[1])
            let rest = shape.dropFirst().reduce(1, *)
            var next = [Float](repeating: 0, count: rest * rank)
            current.withUnsafeBufferPointer { t in
                factor.withUnsafeBufferPointer { u in
                    next.withUnsafeMutableBufferPointer { out in
                        gemm(transposeA: true, m: rest, n: rank, k: dimension, a: t.baseAddress!, lda: rest,
                             b: u.baseAddress!, ldb: rank, c: out.baseAddress!, ldc: rank)
                    }
                }
            }
            current = next
            shape = Array(shape.dropFirst()) + [rank]
        }
        self.init(core: Tensor(shape: shape, scalars: current), factors: factors)
    }

    /// Projects an activation onto calibrated bases (their `factor`s, in mode order).
    public init(projecting input: Tensor, bases: [ModeBasis]) {
        self.init(projecting: input, factors: bases.map(\.factor))
    }

    /// The ranks `r_n` (the core's shape).
    public var ranks: [Int] { core.shape }

    /// The shape of the activation the core stands for, `[d₀, d₁, …]`.
    public var inputShape: [Int] { factors.map { $0.shape[0] } }

    /// The reconstruction `X̂ = S ×₀ U₀ ×₁ U₁ …` (section 2; for tests — training never forms it):
    /// `T ← tensordot(T, U_nᵀ, ([0], [0]))` for each mode, one `gemm` each.
    public func reconstructed() -> Tensor {
        var current = core.scalars
        var shape = core.shape
        for factor in factors {
            let (dimension, rank) = (factor.shape[0], factor.shape[1])
            let rest = shape.dropFirst().reduce(1, *)
            var next = [Float](repeating: 0, count: rest * dimension)
            current.withUnsafeBufferPointer { t in
                factor.withUnsafeBufferPointer { u in
                    next.withUnsafeMutableBufferPointer { out in
                        gemm(transposeA: true, transposeB: true, m: rest, n: dimension, k: rank, a: t.baseAddress!, lda: rest,
                             b: u.baseAddress!, ldb: rank, c: out.baseAddress!, ldc: dimension)
                    }
                }
            }
            current = next
            shape = Array(shape.dropFirst()) + [dimension]
        }
        return Tensor(shape: shape, scalars: current)
    }
}

/// The activation memory of one trained layer, from the tensors actually kept (method section
/// 3.4, float32): full backpropagation keeps the input X; LANCE keeps the core S and the factors.
///
/// ```
/// fullBytes  = numel(X) · 4
/// lanceBytes = (numel(S) + Σ_n numel(U_n)) · 4 = (Π r_n + Σ d_n·r_n) · 4
/// ```
/// The fixed factors are counted in, as the authors' code does (conservative). The paper's "MB"
/// is MiB: `bytes / 1024²`.
public struct ActivationMemory: Sendable, Equatable {
    /// Bytes full backpropagation keeps for the weight gradient: `numel(X) · 4`.
    public var fullBytes: Int
    /// Bytes of the core: `numel(S) · 4`.
    public var coreBytes: Int
    /// Bytes of the factors: `Σ_n numel(U_n) · 4`.
    public var factorBytes: Int

    /// Creates an accounting from byte counts.
    public init(fullBytes: Int, coreBytes: Int, factorBytes: Int) {
        self.fullBytes = fullBytes
        self.coreBytes = coreBytes
        self.factorBytes = factorBytes
    }

    /// The accounting of `input` compressed to `compressed`, from the tensors' element counts.
    public init(input: Tensor, compressed: TuckerCore) {
        self.init(inputShape: input.shape, compressed: compressed)
    }

    /// The accounting of an input of `inputShape` compressed to `compressed`.
    public init(inputShape: [Int], compressed: TuckerCore) {
        let size = MemoryLayout<Float>.size
        self.init(fullBytes: inputShape.reduce(1, *) * size,
                  coreBytes: compressed.core.count * size,
                  factorBytes: compressed.factors.reduce(0) { $0 + $1.count } * size)
    }

    /// Bytes LANCE keeps: core plus factors.
    public var lanceBytes: Int { coreBytes + factorBytes }

    /// `fullBytes` in MiB (the paper's "MB").
    public var fullMiB: Double { Double(fullBytes) / 1_048_576 }

    /// `lanceBytes` in MiB (the paper's "MB").
    public var lanceMiB: Double { Double(lanceBytes) / 1_048_576 }

    /// `fullBytes / lanceBytes`.
    public var compressionRatio: Double { Double(fullBytes) / Double(max(lanceBytes, 1)) }

    /// The sum over several layers (the code's totals).
    public static func total(_ layers: [ActivationMemory]) -> ActivationMemory {
        ActivationMemory(fullBytes: layers.reduce(0) { $0 + $1.fullBytes },
                         coreBytes: layers.reduce(0) { $0 + $1.coreBytes },
                         factorBytes: layers.reduce(0) { $0 + $1.factorBytes })
    }
}
