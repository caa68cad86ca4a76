import LanceCore
import LanceModel

/// Everything a `.lance` file holds: the model, how its inputs are prepared, the calibrated
/// projection bases, tasks, optimizer state and metrics.
///
/// The byte layout is specified in `docs/container-format.md`.
public struct Container: Sendable, Equatable {
    /// The model (weights, trainable flags, layout changes, provenance).
    public var graph: Graph
    /// SHA-256 (hex) of the source model file the graph was imported from.
    public var sourceSHA256: String
    /// How raw samples become model inputs; `nil` when not recorded yet.
    public var preprocessing: Preprocessing?
    /// The calibrated projection bases; `nil` before calibration.
    public var calibration: CalibrationRecord?
    /// The tasks the model serves (task 0 is the imported model's own; added tasks follow).
    public var tasks: [TaskRecord]
    /// Optimizer state for resuming training; `nil` when none was saved.
    public var optimizerState: OptimizerState?
    /// Measurements in the order they were taken (per epoch, per task, ...).
    public var metrics: [Metric]

    /// Creates a container.
    public init(graph: Graph, sourceSHA256: String, preprocessing: Preprocessing? = nil,
                calibration: CalibrationRecord? = nil, tasks: [TaskRecord] = [], optimizerState: OptimizerState? = nil,
                metrics: [Metric] = []) {
        self.graph = graph
        self.sourceSHA256 = sourceSHA256
        self.preprocessing = preprocessing
        self.calibration = calibration
        self.tasks = tasks
        self.optimizerState = optimizerState
        self.metrics = metrics
    }
}

/// One task of the model: its classes, its head and the subspace it protects.
public struct TaskRecord: Sendable, Equatable {
    /// The task's unique name.
    public var name: String
    /// Number of classes of its head.
    public var classes: Int
    /// Class names, in output order (may be empty).
    public var classNames: [String]
    /// The task's head weights (for the imported task: copies of the graph's head parameters).
    public var head: [Parameter]
    /// Per shared trained layer (node name), the directions of its input-feature space this task
    /// protects, `[features, k_task]` (orthonormal, and orthogonal to every earlier task's); the
    /// layer's protected basis P is the concatenation over the tasks in order. The feature space
    /// is the im2col feature axis `C·kH·kW` for convolutions and the input features for linear layers.
    public var protectedBases: [String: Tensor]
    /// Final metrics of the task (`accuracy`, ...).
    public var metrics: [String: Double]

    /// Creates a task record.
    public init(name: String, classes: Int, classNames: [String] = [], head: [Parameter] = [],
                protectedBases: [String: Tensor] = [:], metrics: [String: Double] = [:]) {
        self.name = name
        self.classes = classes
        self.classNames = classNames
        self.head = head
        self.protectedBases = protectedBases
        self.metrics = metrics
    }
}

/// One measurement (`train_loss` of epoch 3, `peak_resident_mib`, ...).
public struct Metric: Sendable, Equatable {
    /// What was measured.
    public var name: String
    /// Where it belongs (`epoch 3`, `task fmnist-1`, `calibration`), free text.
    public var scope: String
    /// The value.
    public var value: Double

    /// Creates a metric.
    public init(name: String, scope: String, value: Double) {
        self.name = name
        self.scope = scope
        self.value = value
    }
}
