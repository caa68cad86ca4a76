import LanceCore

/// An optimizer's complete state, stored in containers (kind, step, epoch,
/// hyperparameters, slots), so that a checkpoint can resume exactly.
///
/// Hyperparameter names: `momentum`, `weight_decay` (SGD); `beta1`, `beta2`, `epsilon`,
/// `weight_decay` (AdamW); the `Trainer` adds `learning_rate` (the base rate η₀),
/// `minimum_learning_rate`, `schedule_length`, `schedule_per_step` (1 or 0) and
/// `max_gradient_norm` (0: no clipping). Slot names: `momentum/<parameter>` (SGD's buffer b);
/// `first_moment/<parameter>` and `second_moment/<parameter>` (AdamW's m and v).
public struct OptimizerState: Sendable, Equatable {
    /// `sgd` or `adamw`.
    public var kind: String
    /// Updates applied so far.
    public var step: Int
    /// Epochs completed.
    public var epoch: Int
    /// Hyperparameters by name.
    public var hyperparameters: [String: Double]
    /// Per-parameter state tensors by name.
    public var slots: [String: Tensor]

    /// Creates an optimizer state.
    public init(kind: String, step: Int, epoch: Int, hyperparameters: [String: Double], slots: [String: Tensor]) {
        self.kind = kind
        self.step = step
        self.epoch = epoch
        self.hyperparameters = hyperparameters
        self.slots = slots
    }
}

