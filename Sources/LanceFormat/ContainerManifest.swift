import LanceModel

/// How a tensor's elements are stored in the file (computation is always float32).
public enum BlobElementType: String, Sendable, Equatable, CustomStringConvertible {
    /// IEEE 754 binary32, little-endian.
    case float32
    /// IEEE 754 binary16, little-endian; widened to float32 when read.
    case float16

    /// Bytes per element.
    public var byteCount: Int { self == .float32 ? 4 : 2 }

    /// `float32` or `float16`.
    public var description: String { rawValue }
}

/// One entry of the blob table: where a tensor's payload lies in the file.
public struct StoredTensor: Sendable, Equatable {
    /// What the tensor is (`parameter/conv1.weight`, `calibration/<layer>/<mode>`, ...).
    public var name: String
    /// Absolute file offset (a multiple of 64).
    public var offset: Int
    /// Payload length in bytes.
    public var byteCount: Int
    /// Storage element type.
    public var elementType: BlobElementType
    /// Row-major extents.
    public var shape: [Int]
    /// CRC-32C of the payload.
    public var checksum: UInt32
}

/// A graph or head parameter as described by the manifest (its values not loaded).
public struct StoredParameter: Sendable, Equatable {
    /// The parameter's name.
    public var name: String
    /// Whether fine-tuning may change it.
    public var trainable: Bool
    /// Whether the importer made it up (see `Parameter.synthesized`).
    public var synthesized: Bool
    /// The layout change applied at import, if any.
    public var layoutChange: LayoutChange?
    /// Where its values are stored.
    public var storage: StoredTensor
}

/// One mode basis as described by the manifest.
public struct StoredModeBasis: Sendable, Equatable {
    /// `batch`, `channel`, `height`, `width` or `feature`.
    public var mode: String
    /// The mode's extent.
    public var dimension: Int
    /// The retained rank.
    public var rank: Int
    /// All normalised eigenvalues, descending.
    public var spectrum: [Float]
    /// Where the factor `U_n` is stored.
    public var factor: StoredTensor
}

/// The calibration record as described by the manifest.
public struct StoredCalibration: Sendable, Equatable {
    /// The energy threshold of the rank rule.
    public var energy: Float
    /// Samples per calibration batch.
    public var batchSize: Int
    /// Batches accumulated.
    public var batches: Int
    /// The accumulation rule.
    public var accumulation: String
    /// How the trained layers were chosen.
    public var layerRule: String
    /// The calibration data's description.
    public var dataDescription: String
    /// SHA-256 of the calibration samples.
    public var dataFingerprint: String
    /// Per trained layer: its name, input shape and mode bases.
    public var layers: [(layer: String, inputShape: [Int], modes: [StoredModeBasis])]

    public static func == (lhs: StoredCalibration, rhs: StoredCalibration) -> Bool {
        lhs.energy == rhs.energy && lhs.batchSize == rhs.batchSize && lhs.batches == rhs.batches
            && lhs.accumulation == rhs.accumulation && lhs.layerRule == rhs.layerRule
            && lhs.dataDescription == rhs.dataDescription && lhs.dataFingerprint == rhs.dataFingerprint
            && lhs.layers.map(\.layer) == rhs.layers.map(\.layer) && lhs.layers.map(\.inputShape) == rhs.layers.map(\.inputShape)
            && lhs.layers.map(\.modes) == rhs.layers.map(\.modes)
    }
}

/// A task as described by the manifest.
public struct StoredTask: Sendable, Equatable {
    /// The task's name.
    public var name: String
    /// Number of classes.
    public var classes: Int
    /// Class names in output order.
    public var classNames: [String]
    /// Head parameters.
    public var head: [StoredParameter]
    /// Final metrics.
    public var metrics: [String: Double]
}

/// The optimizer state as described by the manifest.
public struct StoredOptimizerState: Sendable, Equatable {
    /// `sgd` or `adamw`.
    public var kind: String
    /// Steps taken.
    public var step: Int
    /// Epochs completed.
    public var epoch: Int
    /// Hyperparameters by name.
    public var hyperparameters: [String: Double]
}

/// Everything a container's manifest says, without loading (or checksumming) tensor payloads:
/// what `lance-inspect` needs, read in time proportional to the manifest, not the weights.
public struct ContainerManifest: Sendable, Equatable {
    /// The file's format version (major).
    public var majorVersion: Int
    /// The file's format version (minor).
    public var minorVersion: Int
    /// The file's length in bytes.
    public var fileByteCount: Int
    /// The program that wrote it.
    public var writer: String
    /// The graph's name.
    public var graphName: String
    /// Graph inputs.
    public var inputs: [ValueInfo]
    /// Graph outputs.
    public var outputs: [ValueInfo]
    /// The nodes in topological order.
    public var nodes: [Node]
    /// The graph's parameters in source order.
    public var parameters: [StoredParameter]
    /// Where the model came from.
    public var provenance: Provenance
    /// SHA-256 of the source model file.
    public var sourceSHA256: String
    /// Input preprocessing, if recorded.
    public var preprocessing: Preprocessing?
    /// Calibration, if calibrated.
    public var calibration: StoredCalibration?
    /// The tasks.
    public var tasks: [StoredTask]
    /// The optimizer state, if saved.
    public var optimizerState: StoredOptimizerState?
    /// Measurements in order.
    public var metrics: [Metric]
    /// The blob table, in file order.
    public var blobs: [StoredTensor]
}

extension StoredTensor {
    init(_ entry: BlobEntry) {
        self.init(name: entry.name, offset: entry.offset, byteCount: entry.byteLength, elementType: entry.elementType,
                  shape: entry.shape, checksum: entry.checksum)
    }
}
