import LanceCore
import LanceLinalg
import LanceModel
import LanceNN
import LanceRuntime

/// How the mode Gram matrices of successive batches are combined.
public enum GramAccumulation: String, Sendable, CaseIterable {
    /// `F = Σ_k X_(n),k X_(n),kᵀ` over all batches (the default).
    case plainSum = "plain-sum"
    /// The authors' running average `F ← (cnt·F + G)/(cnt + n_dim)`, `cnt += n_dim`, which weighs
    /// the first batch `n_dim` times more than each later one (method section 4); for replicating
    /// their numbers.
    case referenceWeighting = "reference-weighting"
}

/// Settings of one calibration pass.
public struct CalibrationOptions: Sendable {
    /// The energy threshold ε: each mode keeps the smallest rank whose cumulative normalised
    /// eigenvalue exceeds it.
    public var energy: Float
    /// How batches are combined.
    public var accumulation: GramAccumulation

    /// Creates calibration settings (ε = 0.7 and plain sums by default, the paper's recipe).
    public init(energy: Float = 0.7, accumulation: GramAccumulation = .plainSum) {
        self.energy = energy
        self.accumulation = accumulation
    }
}

/// The rank rule of LANCE fine-tuning: `r = #{k : Σ_{i≤k} λ̄_i ≤ ε} + 1`, capped at the dimension —
/// the smallest rank whose cumulative normalised energy exceeds ε.
public func lanceRank(normalisedSpectrum spectrum: [Float], energy: Float) -> Int {
    min(leadingCount(spectrum, within: energy) + 1, spectrum.count)
}

/// `#{k : Σ_{i≤k} λ̄_i ≤ ε}`: how many leading values fit within the energy.
func leadingCount(_ spectrum: [Float], within energy: Float) -> Int {
    var cumulative: Double = 0
    var count = 0
    for value in spectrum {
        cumulative += Double(value)
        if cumulative <= Double(energy) { count += 1 } else { break }
    }
    return count
}

/// Accumulates the mode Gram matrices `X_(n) X_(n)ᵀ` of one layer's input as batches stream by
/// (never keeping the activations), then decomposes them.
///
/// The mode-n unfolding moves axis n to the front: for a convolution input `[B, C, H, W]` the
/// Gram matrices are `B×B`, `C×C`, `H×H` and `W×W`; for a linear input `[B, I]`, `B×B` and `I×I`.
/// Products run through `cblas_sgemm`; sums are kept in double precision.
public struct ModeGramAccumulator: Sendable {
    /// The input shape every batch must have.
    public let shape: [Int]
    /// The Gram matrices, one `d×d` row-major matrix per mode.
    public private(set) var grams: [[Double]]
    /// Batches added so far.
    public private(set) var batches = 0
    private let accumulation: GramAccumulation
    private var counts: [Int]

    /// Creates an empty accumulator for inputs of `shape`.
    public init(shape: [Int], accumulation: GramAccumulation = .plainSum) {
        self.shape = shape
        self.accumulation = accumulation
        grams = shape.map { [Double](repeating: 0, count: $0 * $0) }
        counts = [Int](repeating: 0, count: shape.count)
    }

    /// Adds one batch's contribution to every mode.
    ///
    /// - Precondition: `input.shape == shape`.
    public mutating func add(_ input: Tensor) {
        precondition(input.shape == shape, "batch shape \(input.shape) differs from the calibration shape \(shape)")
        for mode in 0..<shape.count {
            let gram = Self.modeGram(input, mode: mode)
            let n = shape[mode]
            switch accumulation {
            case .plainSum:
                for k in 0..<gram.count { grams[mode][k] += Double(gram[k]) }
            case .referenceWeighting:
                if counts[mode] == 0 {
                    for k in 0..<gram.count { grams[mode][k] = Double(gram[k]) }
                } else {
                    let count = Double(counts[mode])
                    for k in 0..<gram.count { grams[mode][k] = (count * grams[mode][k] + Double(gram[k])) / (count + Double(n)) }
                }
                counts[mode] += n
            }
        }
        batches += 1
    }

    /// `X_(n) X_(n)ᵀ` of one tensor: the Gram matrix of its `[d, rest]` unfolding (`modeUnfolding`).
    static func modeGram(_ input: Tensor, mode: Int) -> [Float] {
        gramMatrix(modeUnfolding(input, mode: mode))
    }

    /// Eigen-decomposes every mode's Gram matrix and keeps the rank the energy rule gives.
    public func bases(energy: Float, modeNames: [String]) throws(TrainingError) -> [ModeBasis] {
        var result: [ModeBasis] = []
        for mode in shape.indices {
            let decomposition = try eigenDecomposition(mode: mode, name: modeNames[mode])
            let rank = lanceRank(normalisedSpectrum: decomposition.spectrum, energy: energy)
            result.append(decomposition.basis(name: modeNames[mode], rank: rank))
        }
        return result
    }

    /// The eigen-decomposition of mode `mode`'s Gram matrix (eigenvalues clamped at 0, descending).
    func eigenDecomposition(mode: Int, name: String) throws(TrainingError) -> GramDecomposition {
        let n = shape[mode]
        let decomposition: (values: [Double], vectors: [Double])
        do {
            decomposition = try symmetricEigen(grams[mode], dimension: n)
        } catch {
            throw .numeric(reason: "eigen-decomposition of the \(name) mode failed: \(error.description)")
        }
        return GramDecomposition(dimension: n, values: decomposition.values.map { max($0, 0) }, vectors: decomposition.vectors)
    }
}

/// A Gram matrix's eigenvalues (clamped at 0, descending) and eigenvectors (columns of a
/// `d × d` row-major matrix).
struct GramDecomposition {
    var dimension: Int
    var values: [Double]
    var vectors: [Double]

    /// The eigenvalues divided by their sum (uniform when all are 0).
    var spectrum: [Float] { Self.normalisedSpectrum(values, dimension: dimension) }

    /// Eigenvalues (descending, possibly fewer than `dimension`) as a normalised spectrum of
    /// `dimension` values: negatives from rounding clamped to 0, zeros appended; uniform when all
    /// vanish.
    static func normalisedSpectrum(_ values: [Double], dimension: Int) -> [Float] {
        let clamped = values.map { max($0, 0) }
        let total = clamped.reduce(0, +)
        let uniform = 1 / Float(max(dimension, 1))
        return clamped.map { total > 0 ? Float($0 / total) : uniform }
            + [Float](repeating: total > 0 ? 0 : uniform, count: max(dimension - clamped.count, 0))
    }

    /// The leading `rank` eigenvectors as a `[d, rank]` float32 factor.
    func factor(rank: Int) -> Tensor {
        let n = dimension
        var factor = [Float](repeating: 0, count: n * rank)
        for i in 0..<n { for k in 0..<rank { factor[i * rank + k] = Float(vectors[i * n + k]) } }
        return Tensor(shape: [n, rank], scalars: factor)
    }

    /// The mode basis keeping `rank` leading eigenvectors.
    func basis(name: String, rank: Int) -> ModeBasis {
        ModeBasis(mode: name, dimension: dimension, rank: rank, factor: factor(rank: rank), spectrum: spectrum)
    }
}

/// A batch of model inputs read on demand, a range of its samples at a time, so that calibration
/// and the feature passes never hold the whole batch of inputs (`[count, C, H, W]`).
public struct SlicedBatch {
    /// The number of samples in the batch.
    public let count: Int
    /// The inputs `[range.count, ...]` of the samples `range`, a sub-range of `0..<count`. The
    /// ranges are asked for in order, each once; an error thrown here ends the pass with it.
    public let read: (Range<Int>) throws -> Tensor

    /// A batch of `count` samples whose inputs `read` produces.
    public init(count: Int, read: @escaping (Range<Int>) throws -> Tensor) {
        self.count = count
        self.read = read
    }

    /// A batch held whole, `[B, ...]`: its slices are copied out of it.
    public init(_ images: Tensor) {
        self.init(count: images.shape.first ?? 0) { images.slice(batch: $0) }
    }
}

/// Computes the fixed projection bases of the trained layers from calibration batches (LANCE
/// phase I): forward passes only, the input of every trained layer captured and folded into its
/// mode Gram matrices batch by batch, then one symmetric eigen-decomposition per mode.
///
/// Memory stays bounded by one batch of the trained layers' inputs: the model runs on slices of
/// `TrainingGraph.frozenSliceSize` samples, each read from its `SlicedBatch` just before it runs,
/// with the trained layers' inputs as extra outputs, and each batch's captured inputs are reduced
/// to Gram matrices before the next batch.
///
/// - Parameters:
///   - graph: the model.
///   - layers: the trained layers (`Graph.trainedLayers`).
///   - batches: input batches of equal batch size, already preprocessed.
///   - options: ε and the accumulation rule.
///   - progress: called after each batch with the number of batches done.
/// - Returns: the bases of every layer (settings other than the bases are left for the caller).
public func calibrateBases(graph: Graph, layers: [TrainedLayer], batches: some Sequence<SlicedBatch>,
                           options: CalibrationOptions = CalibrationOptions(),
                           progress: (Int) -> Void = { _ in }) throws(TrainingError) -> (layers: [LayerBases], batchSize: Int, batches: Int) {
    var accumulators: [ModeGramAccumulator] = []
    var batchSize = 0
    let count = try forEachCapturedBatch(graph: graph, layers: layers, batches: batches) { (samples, captured) throws(TrainingError) in
        if accumulators.isEmpty {
            batchSize = samples
            accumulators = layers.map { ModeGramAccumulator(shape: captured[$0.input]?.shape ?? [], accumulation: options.accumulation) }
        }
        for (index, layer) in layers.enumerated() {
            guard let input = captured[layer.input] else { continue }
            accumulators[index].add(input)
        }
        progress(accumulators[0].batches)
    }
    guard count > 0 else { throw .data(reason: "the calibration data yielded no batch") }
    var result: [LayerBases] = []
    for (layer, accumulator) in zip(layers, accumulators) {
        result.append(LayerBases(layer: layer.node, inputShape: accumulator.shape,
                                 modes: try accumulator.bases(energy: options.energy, modeNames: layer.modeNames)))
    }
    return (result, batchSize, count)
}

/// `calibrateBases` over batches held whole (`[B, ...]` each, already preprocessed).
public func calibrateBases(graph: Graph, layers: [TrainedLayer], batches: some Sequence<Tensor>,
                           options: CalibrationOptions = CalibrationOptions(),
                           progress: (Int) -> Void = { _ in }) throws(TrainingError) -> (layers: [LayerBases], batchSize: Int, batches: Int) {
    try calibrateBases(graph: graph, layers: layers, batches: batches.lazy.map(SlicedBatch.init), options: options, progress: progress)
}

/// Runs the model forward on each batch with the trained layers' inputs as outputs (only the nodes
/// up to the last of them) and hands every batch's sample count and captured inputs (by value
/// name) to `body`, which should reduce them before the next batch arrives. The forward pass runs
/// on slices of `TrainingGraph.frozenSliceSize` samples (`joinedSlices`), each read from the batch
/// just before it runs, so the model inputs and early layers' activations of only one slice are
/// alive at a time; the captured inputs are those of the whole batch.
///
/// - Returns: the number of batches.
/// - Throws: `TrainingError.data` when batches differ in size, a slice cannot be read or the model
///   has not one input, `.graph` when a batch does not fit the model, and what `body` throws.
func forEachCapturedBatch(graph: Graph, layers: [TrainedLayer], batches: some Sequence<SlicedBatch>,
                          _ body: (Int, [String: Tensor]) throws(TrainingError) -> Void) throws(TrainingError) -> Int {
    guard let inputName = graph.inputs.first?.name, graph.inputs.count == 1 else {
        throw .data(reason: "calibration needs a model with one input")
    }
    var capture = graph
    capture.outputs = layers.map { ValueInfo(name: $0.input, dimensions: nil) }
    capture.nodes = Array(graph.nodes.prefix(through: graph.nodes.lastIndex { node in layers.contains { $0.input == node.output } } ?? 0))
    let session = InferenceSession(graph: capture)
    var batchSize = 0
    var count = 0
    for batch in batches {
        let samples = batch.count
        guard samples > 0 else { throw .data(reason: "batch \(count + 1) has no samples") }
        if count == 0 {
            batchSize = samples
        } else if samples != batchSize {
            throw .data(reason: "batch \(count + 1) has \(samples) samples, the first had \(batchSize); use equal batches (drop the last partial one)")
        }
        let captured = try joinedSlices(batchSize: samples, sliceSize: TrainingGraph.frozenSliceSize) { range throws(TrainingError) in
            let images: Tensor
            do {
                images = try batch.read(range)
            } catch let error as TrainingError {
                throw error
            } catch {
                throw .data(reason: "samples \(range) of batch \(count + 1): \(error)")
            }
            do throws(ModelError) {
                return try session.run([inputName: images])
            } catch {
                throw .graph(error)
            }
        }
        try body(samples, captured)
        count += 1
    }
    return count
}

/// The mode-n unfolding `X_(n)`, `[d_n, N]` row-major with `N` the product of the other extents:
/// with X viewed as `[outer, d_n, inner]`, column `o·inner + i` of row `k` is `X[o, k, i]` (the other
/// axes in their order). Mode 0 is the tensor itself; other modes are one copy of contiguous rows.
func modeUnfolding(_ input: Tensor, mode: Int) -> Tensor {
    precondition(mode >= 0 && mode < input.rank, "mode \(mode) out of range for \(input.shape)")
    let dimension = input.shape[mode]
    let outer = input.shape[..<mode].reduce(1, *)
    let inner = input.shape[(mode + 1)...].reduce(1, *)
    guard outer > 1 else { return Tensor(shape: [dimension, inner], scalars: input.scalars) }
    let columns = outer * inner
    return Tensor(shape: [dimension, columns]) { unfolded in
        input.withUnsafeBufferPointer { x in
            for o in 0..<outer {
                for k in 0..<dimension {
                    let source = x.baseAddress! + (o * dimension + k) * inner
                    (unfolded.baseAddress! + k * columns + o * inner).update(from: source, count: inner)
                }
            }
        }
    }
}

/// The Gram matrix of a row-major `[rows, columns]` matrix M, one `sgemm`: `M Mᵀ` (`[rows, rows]`),
/// or `Mᵀ M` (`[columns, columns]`) when `ofColumns`.
func gramMatrix(_ matrix: Tensor, ofColumns: Bool = false) -> [Float] {
    precondition(matrix.rank == 2, "gramMatrix: \(matrix.shape) is not a matrix")
    let rows = matrix.shape[0], columns = matrix.shape[1]
    let size = ofColumns ? columns : rows
    var gram = [Float](repeating: 0, count: size * size)
    matrix.withUnsafeBufferPointer { m in
        gram.withUnsafeMutableBufferPointer { g in
            gemm(transposeA: ofColumns, transposeB: !ofColumns, m: size, n: size, k: ofColumns ? rows : columns,
                 a: m.baseAddress!, lda: columns, b: m.baseAddress!, ldb: columns, c: g.baseAddress!, ldc: size)
        }
    }
    return gram
}
