import LanceCore

/// One mode's fixed projection basis of a trained layer's input (LANCE calibration).
///
/// For mode `n` of the input X, `factor` is `U_n`, `[dimension, rank]` row-major, whose orthonormal
/// columns are the leading eigenvectors of the mode Gram matrix `Σ_batches X_(n) X_(n)ᵀ`;
/// `spectrum` holds all its eigenvalues, descending, divided by their sum (so they add up to 1),
/// and `energyKept` the sum of the first `rank` of them.
public struct ModeBasis: Sendable, Equatable {
    /// What the mode indexes: `batch`, `channel`, `height`, `width` for convolutions; `batch`,
    /// `feature` for linear layers.
    public var mode: String
    /// The mode's extent.
    public var dimension: Int
    /// The retained rank `r_n` (columns of `factor`).
    public var rank: Int
    /// `U_n`, `[dimension, rank]`.
    public var factor: Tensor
    /// All normalised eigenvalues, descending (`dimension` values summing to 1).
    public var spectrum: [Float]

    /// The fraction of the mode's energy the basis keeps: `Σ_{i<rank} spectrum[i]`.
    public var energyKept: Float { spectrum.prefix(rank).reduce(0, +) }

    /// Creates a mode basis.
    public init(mode: String, dimension: Int, rank: Int, factor: Tensor, spectrum: [Float]) {
        self.mode = mode
        self.dimension = dimension
        self.rank = rank
        self.factor = factor
        self.spectrum = spectrum
    }
}

/// The projection bases of one trained layer.
public struct LayerBases: Sendable, Equatable {
    /// The trained node (a convolution or Gemm) in the graph.
    public var layer: String
    /// The node's input shape at the calibration batch size (`[B, C, H, W]` or `[B, I]`).
    public var inputShape: [Int]
    /// One basis per mode of the input, in axis order.
    public var modes: [ModeBasis]

    /// Creates the bases of a layer.
    public init(layer: String, inputShape: [Int], modes: [ModeBasis]) {
        self.layer = layer
        self.inputShape = inputShape
        self.modes = modes
    }
}

/// How the bases were computed, so results can be reproduced and checked.
public struct CalibrationRecord: Sendable, Equatable {
    /// The energy threshold ε of the rank rule.
    public var energy: Float
    /// Samples per calibration batch (the training batch size must match: `U_0` is `B × r_0`).
    public var batchSize: Int
    /// Batches the Gram matrices were accumulated over.
    public var batches: Int
    /// `plain-sum`, or `reference-weighting` (the authors' running average, section 4 of the method).
    public var accumulation: String
    /// How the trained layers were chosen (`last:4`, or the names given).
    public var layerRule: String
    /// A description of the calibration data and its SHA-256 fingerprint.
    public var dataDescription: String
    /// SHA-256 (hex) of the calibration samples as they were fed (after preprocessing).
    public var dataFingerprint: String
    /// Per trained layer, its bases.
    public var layers: [LayerBases]
    /// The continual-learning thresholds when the container protects its tasks' subspaces
    /// (`lance-convert --protect`); `nil` otherwise.
    public var protection: ProtectionSettings?

    /// Creates a calibration record.
    public init(energy: Float, batchSize: Int, batches: Int, accumulation: String, layerRule: String,
                dataDescription: String, dataFingerprint: String, layers: [LayerBases],
                protection: ProtectionSettings? = nil) {
        self.energy = energy
        self.batchSize = batchSize
        self.batches = batches
        self.accumulation = accumulation
        self.layerRule = layerRule
        self.dataDescription = dataDescription
        self.dataFingerprint = dataFingerprint
        self.layers = layers
        self.protection = protection
    }
}

/// The energy thresholds of the protected subspaces (method section 5.2): the feature-mode
/// threshold of task t (task 0 is the imported model) is `min(energy + t · energyStep, 1)`.
public struct ProtectionSettings: Sendable, Equatable {
    /// ε_cl of task 0 (GPM's CIFAR value 0.97 by default).
    public var energy: Float
    /// Δ, added per task.
    public var energyStep: Float

    /// Creates protection thresholds.
    public init(energy: Float = 0.97, energyStep: Float = 0) {
        self.energy = energy
        self.energyStep = energyStep
    }

    /// The feature-mode threshold of task `task` (0-based).
    public func threshold(forTask task: Int) -> Float {
        min(energy + Float(task) * energyStep, 1)
    }
}
