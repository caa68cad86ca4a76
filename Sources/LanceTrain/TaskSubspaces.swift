import LanceCore
import LanceLinalg
import LanceModel
import LanceNN

// Continual learning with orthogonal task subspaces (method section 5): every shared trained
// layer keeps a protected basis P of its input-feature space (the directions earlier tasks use);
// a new task trains through a feature basis U₁ orthogonal to P, so its weight updates
// `ΔW = M · U₁ᵀ` leave `W · x` unchanged for every x in span(P).

/// The feature space a shared trained layer's protected basis lives in: for a convolution
/// (groups 1) the im2col feature axis `d = C·kH·kW` (`unfoldedInput`), for a linear layer its
/// input features `d = I`.
public enum FeatureView {
    /// A trained layer's input as continual learning compresses it: a convolution's input
    /// `[B, C, H, W]` becomes `X_unf [B, C·kH·kW, H'·W']` (modes batch, feature, position); a
    /// linear layer's `[B, I]` stays as it is (modes batch, feature).
    ///
    /// - Throws: `TrainingError.invalidLayerSelection` for grouped convolutions and linear
    ///   layers on inputs of rank other than 2.
    public static func tensor(_ input: Tensor, layer: TrainedLayer, operation: Operator) throws(TrainingError) -> Tensor {
        switch (layer.kind, operation) {
        case (.convolution, .convolution(let convolution)):
            return unfoldedInput(input, convolution: convolution)
        case (.linear, _) where input.rank == 2:
            return input
        default:
            throw .invalidLayerSelection(reason: "layer '\(layer.node)' cannot be shared between tasks: continual learning supports convolutions with groups = 1 and linear layers on [batch, features] inputs")
        }
    }

    /// The mode names of `tensor(_:layer:operation:)`'s result.
    public static func modeNames(of layer: TrainedLayer) -> [String] {
        layer.kind == .linear ? ["batch", "feature"] : ["batch", "feature", "position"]
    }

    /// Whether a weight's feature axis comes first (`[d, C']`: Gemm without `transposeB`,
    /// MatMul) rather than last (`[C', C, kH, kW]` viewed `[C', d]`, Gemm with `transposeB`).
    public static func featuresFirst(_ operation: Operator) -> Bool {
        switch operation {
        case .gemm(let gemm): !gemm.transposeB
        case .matMul: true
        default: false
        }
    }
}

/// The rank rule of the unconstrained modes of continual learning (batch, position; method
/// section 5.2 c): `r = max(#{k : Σ_{i≤k} λ̄_i ≤ ε}, 1)` — without the `+ 1` of fine-tuning.
public func continualRank(normalisedSpectrum spectrum: [Float], energy: Float) -> Int {
    max(min(leadingCount(spectrum, within: energy), spectrum.count), 1)
}

/// The directions of a feature Gram matrix that a protected basis does not explain (GPM's
/// residual, computed on the Gram matrix as the LANCE code does; method section 5.2 c):
///
/// ```
/// total = trace(F)                    (= Σ svdvals(F) for a positive semi-definite F)
/// R     = (I − P Pᵀ) F
/// U, σ  = svd(R)                      (σ descending; from the eigen-decomposition of R·Rᵀ)
/// explained = (total − Σ σ) / total   (the fraction P already accounts for)
/// ```
struct FeatureResidual {
    /// d.
    var dimension: Int
    /// σ, descending (`d` values).
    var singularValues: [Double]
    /// U as columns of a `d × d` row-major matrix.
    var vectors: [Double]
    /// trace(F).
    var total: Double
    /// The protected basis (`[d, k]`), or `nil`.
    var protected: Tensor?

    init(gram: [Double], dimension d: Int, protected: Tensor?) throws(TrainingError) {
        precondition(gram.count == d * d, "a feature Gram of \(gram.count) values is not \(d)×\(d)")
        self.dimension = d
        self.protected = protected
        total = (0..<d).reduce(0) { $0 + max(gram[$1 * d + $1], 0) }
        var residual = gram
        if let protected, protected.shape[1] > 0 {
            precondition(protected.shape[0] == d, "protected basis \(protected.shape) for a \(d)-dimensional feature space")
            let k = protected.shape[1]
            let p = protected.scalars.map(Double.init)
            // PᵀF [k, d], then R = F − P·(PᵀF).
            let projected = doublePrecisionGemm(transposeA: true, m: k, n: d, k: d, a: p, lda: k, b: gram, ldb: d)
            let back = doublePrecisionGemm(m: d, n: d, k: k, a: p, lda: k, b: projected, ldb: d)
            for index in residual.indices { residual[index] -= back[index] }
        }
        // U and σ of R from the symmetric R·Rᵀ = U·diag(σ²)·Uᵀ: one d×d eigen-decomposition, with
        // a fraction of the workspace of a general SVD (which also forms Vᵀ).
        let squared = doublePrecisionGemm(transposeB: true, m: d, n: d, k: d, a: residual, lda: d, b: residual, ldb: d)
        do {
            let decomposition = try symmetricEigen(squared, dimension: d)
            singularValues = decomposition.values.map { max($0, 0).squareRoot() }
            vectors = decomposition.vectors
        } catch {
            throw .numeric(reason: "the eigen-decomposition of a feature residual failed: \(error.description)")
        }
    }

    /// The fraction of the energy the protected basis explains: `(total − Σσ) / total`.
    var explained: Double {
        total > 0 ? max((total - singularValues.reduce(0, +)) / total, 0) : 1
    }

    /// GPM's count: starting from `explained`, add `σ_r / total` while the sum stays ≤ threshold.
    func count(threshold: Float) -> Int {
        var accumulated = explained
        var count = 0
        while count < singularValues.count && accumulated <= Double(threshold) && total > 0 {
            accumulated += singularValues[count] / total
            count += 1
        }
        return count
    }

    /// The number of directions outside the protected basis: `d − k`.
    var room: Int { dimension - (protected?.shape[1] ?? 0) }

    /// The leading `count` residual directions as `[d, count']` float32 columns, made exactly
    /// orthogonal to the protected basis and to each other (projection and Gram–Schmidt in double
    /// precision, twice); directions that vanish under the projection are dropped, so `count' ≤ count`.
    func directions(_ count: Int) -> Tensor {
        let d = dimension
        let k = protected?.shape[1] ?? 0
        let p = protected?.scalars.map(Double.init) ?? []
        var accepted: [[Double]] = []
        for column in 0..<min(count, d) {
            var v = (0..<d).map { vectors[$0 * d + column] }
            for _ in 0..<2 {
                for j in 0..<k {
                    var dot = 0.0
                    for i in 0..<d { dot += p[i * k + j] * v[i] }
                    for i in 0..<d { v[i] -= dot * p[i * k + j] }
                }
                for u in accepted {
                    var dot = 0.0
                    for i in 0..<d { dot += u[i] * v[i] }
                    for i in 0..<d { v[i] -= dot * u[i] }
                }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            guard norm > 1e-3 else { continue }
            accepted.append(v.map { $0 / norm })
        }
        var scalars = [Float](repeating: 0, count: d * accepted.count)
        for (j, u) in accepted.enumerated() { for i in 0..<d { scalars[i * accepted.count + j] = Float(u[i]) } }
        return Tensor(shape: [d, accepted.count], scalars: scalars)
    }
}

/// The directions a task adds to a layer's protected basis, from the feature Gram matrix of its
/// data on the trained model (GPM's update, method section 5.2 step 4):
///
/// - no protected basis yet (the imported model, task 0): the leading r eigenvectors of F with
///   `r = #{k : Σ_{i≤k} λ̄_i ≤ ε} + 1`;
/// - otherwise the leading residual directions (`FeatureResidual`) while the explained fraction
///   stays ≤ ε — none when P already explains more than ε.
///
/// - Parameters:
///   - featureGram: F = Σ x xᵀ over the feature vectors x (`d × d`, row-major).
///   - protected: the current protected basis P `[d, k]` (orthonormal columns), or `nil`.
///   - threshold: ε (`ProtectionSettings.threshold(forTask:)`).
/// - Returns: `[d, r]`, orthonormal and orthogonal to P.
public func protectedDirections(featureGram: [Double], dimension d: Int, protected: Tensor?,
                                threshold: Float) throws(TrainingError) -> Tensor {
    if protected == nil || protected!.shape[1] == 0 {
        let values: [Double], vectors: [Double]
        do {
            (values, vectors) = try symmetricEigen(featureGram, dimension: d)
        } catch {
            throw .numeric(reason: "the eigen-decomposition of a feature Gram matrix failed: \(error.description)")
        }
        let decomposition = GramDecomposition(dimension: d, values: values.map { max($0, 0) }, vectors: vectors)
        return decomposition.factor(rank: lanceRank(normalisedSpectrum: decomposition.spectrum, energy: threshold))
    }
    let residual = try FeatureResidual(gram: featureGram, dimension: d, protected: protected)
    return residual.directions(min(residual.count(threshold: threshold), residual.room))
}

/// The bases a new task trains a shared layer through (method section 5.2 c): the batch and
/// position modes by `continualRank` with `energy`; the feature mode U₁ from the residual of the
/// feature Gram outside the protected basis P, with GPM's count at `featureThreshold`, at least
/// one direction, and every free direction (`d − k`) when `d ≤ 80` — so U₁ ⟂ P.
///
/// The feature mode's `spectrum` holds the residual's singular values divided by trace(F) (their
/// sum is the fraction of the task's feature energy outside P).
///
/// - Parameters:
///   - layer: the shared layer.
///   - grams: its Gram matrices over the task's data, on `FeatureView.tensor` (`[B, d, L]` or `[B, I]`).
///   - protected: P `[d, k]`, or `nil` when nothing is protected yet.
/// - Throws: `TrainingError.data` when P leaves no free direction.
public func taskBases(layer: TrainedLayer, grams: ModeGramAccumulator, protected: Tensor?, energy: Float,
                      featureThreshold: Float) throws(TrainingError) -> LayerBases {
    let names = FeatureView.modeNames(of: layer)
    var modes: [ModeBasis] = []
    for mode in grams.shape.indices {
        if mode == 1 {
            let d = grams.shape[1]
            let residual = try FeatureResidual(gram: grams.grams[1], dimension: d, protected: protected)
            guard residual.room > 0 else {
                throw .data(reason: "the protected basis of layer '\(layer.node)' spans all \(d) feature directions; no room is left for a new task (lance-inspect --tasks shows the room per layer)")
            }
            var rank = d <= 80 ? residual.room : residual.count(threshold: featureThreshold)
            rank = min(max(rank, 1), residual.room)
            let factor = residual.directions(rank)
            guard factor.shape[1] > 0 else {
                throw .numeric(reason: "no direction of layer '\(layer.node)' lies outside its protected basis numerically")
            }
            let spectrum = residual.singularValues.map { Float(residual.total > 0 ? $0 / residual.total : 0) }
            modes.append(ModeBasis(mode: names[1], dimension: d, rank: factor.shape[1], factor: factor, spectrum: spectrum))
        } else {
            let decomposition = try grams.eigenDecomposition(mode: mode, name: names[mode])
            modes.append(decomposition.basis(name: names[mode],
                                             rank: continualRank(normalisedSpectrum: decomposition.spectrum, energy: energy)))
        }
    }
    return LayerBases(layer: layer.node, inputShape: grams.shape, modes: modes)
}

/// One forward pass over batches accumulating, for every shared layer, the Gram matrices of its
/// input in the feature view (`FeatureView.tensor`): `B×B`, `d×d` and `L×L` for convolutions,
/// `B×B` and `I×I` for linear layers. Forward only, slice by slice as in `calibrateBases`; memory
/// bounded by one batch of the layers' inputs.
///
/// - Returns: one accumulator per layer, in order, and the number of batches.
public func accumulateFeatureGrams(graph: Graph, layers: [TrainedLayer], batches: some Sequence<SlicedBatch>,
                                   progress: (Int) -> Void = { _ in }) throws(TrainingError) -> [ModeGramAccumulator] {
    let operations = Dictionary(graph.nodes.map { ($0.name, $0.operation) }, uniquingKeysWith: { a, _ in a })
    var accumulators: [ModeGramAccumulator] = []
    var done = 0
    let count = try forEachCapturedBatch(graph: graph, layers: layers, batches: batches) { (_, captured) throws(TrainingError) in
        var views: [Tensor] = []
        for layer in layers {
            guard let input = captured[layer.input], let operation = operations[layer.node] else {
                throw .invalidLayerSelection(reason: "no input captured for layer '\(layer.node)'")
            }
            views.append(try FeatureView.tensor(input, layer: layer, operation: operation))
        }
        if accumulators.isEmpty { accumulators = views.map { ModeGramAccumulator(shape: $0.shape) } }
        for (index, view) in views.enumerated() { accumulators[index].add(view) }
        done += 1
        progress(done)
    }
    guard count > 0 else { throw .data(reason: "the data yielded no batch") }
    return accumulators
}

/// `accumulateFeatureGrams` over batches held whole (`[B, ...]` each, already preprocessed).
public func accumulateFeatureGrams(graph: Graph, layers: [TrainedLayer], batches: some Sequence<Tensor>,
                                   progress: (Int) -> Void = { _ in }) throws(TrainingError) -> [ModeGramAccumulator] {
    try accumulateFeatureGrams(graph: graph, layers: layers, batches: batches.lazy.map(SlicedBatch.init), progress: progress)
}

/// Removes from a weight gradient its component in the protected feature directions (GPM's
/// gradient projection, Saha et al. 2021), so the update leaves `W · x` unchanged for x in span(P):
///
/// ```
/// features last  (G viewed [C', d]):  G ← G − (G · P) · Pᵀ
/// features first (G stored [d, C']):  G ← G − P · (Pᵀ · G)
/// ```
///
/// - Parameters:
///   - gradient: dW (`[C', C, kH, kW]`, `[O, I]` or `[I, O]`).
///   - protected: P `[d, k]` with orthonormal columns.
///   - featuresFirst: `FeatureView.featuresFirst` of the layer's operator.
public func projectingOutProtected(_ gradient: Tensor, protected: Tensor, featuresFirst: Bool) -> Tensor {
    let (d, k) = (protected.shape[0], protected.shape[1])
    guard k > 0 else { return gradient }
    let other = gradient.count / d
    precondition(other * d == gradient.count, "gradient \(gradient.shape) has no feature axis of \(d)")
    var result = gradient
    var coefficients = [Float](repeating: 0, count: other * k)
    protected.withUnsafeBufferPointer { p in
        gradient.withUnsafeBufferPointer { g in
            coefficients.withUnsafeMutableBufferPointer { c in
                if featuresFirst {
                    // C [k, C'] = Pᵀ [k, d] · G [d, C'].
                    gemm(transposeA: true, m: k, n: other, k: d, a: p.baseAddress!, lda: k, b: g.baseAddress!, ldb: other,
                         c: c.baseAddress!, ldc: other)
                } else {
                    // C [C', k] = G [C', d] · P [d, k].
                    gemm(m: other, n: k, k: d, a: g.baseAddress!, lda: d, b: p.baseAddress!, ldb: k, c: c.baseAddress!, ldc: k)
                }
            }
        }
        coefficients.withUnsafeBufferPointer { c in
            result.withUnsafeMutableBufferPointer { out in
                if featuresFirst {
                    // G −= P [d, k] · C [k, C'].
                    gemm(m: d, n: other, k: k, alpha: -1, a: p.baseAddress!, lda: k, b: c.baseAddress!, ldb: other,
                         beta: 1, c: out.baseAddress!, ldc: other)
                } else {
                    // G −= C [C', k] · Pᵀ [k, d].
                    gemm(transposeB: true, m: other, n: d, k: k, alpha: -1, a: c.baseAddress!, lda: k, b: p.baseAddress!, ldb: k,
                         beta: 1, c: out.baseAddress!, ldc: d)
                }
            }
        }
    }
    return result
}

/// Column-wise concatenation of protected bases `[d, k₁]`, `[d, k₂]`, … into `[d, Σk]` (the
/// layer's whole protected basis from its tasks' parts, in task order); `nil` when there are none.
public func concatenatedColumns(_ parts: [Tensor]) -> Tensor? {
    let parts = parts.filter { $0.shape[1] > 0 }
    guard let d = parts.first?.shape[0] else { return nil }
    let total = parts.reduce(0) { $0 + $1.shape[1] }
    var scalars = [Float](repeating: 0, count: d * total)
    var offset = 0
    for part in parts {
        precondition(part.shape[0] == d, "protected bases of \(d) and \(part.shape[0]) features cannot be joined")
        let k = part.shape[1]
        for i in 0..<d { for j in 0..<k { scalars[i * total + offset + j] = part.scalars[i * k + j] } }
        offset += k
    }
    return Tensor(shape: [d, total], scalars: scalars)
}
