#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Cosine annealing of the learning rate (PyTorch `CosineAnnealingLR`, closed form):
///
/// ```
/// η_t = η_min + (η₀ − η_min) · (1 + cos(π · t / T)) / 2,     0 ≤ t ≤ T
/// ```
///
/// The paper's recipe (method section 6.1) anneals per **epoch** over the epochs (`T = epochs`,
/// `t` = epochs completed) to `η_min = 0.01 · η₀`; `perStep` anneals over the optimizer steps
/// instead (`T` = total steps, `t` = steps taken). Past `T` the rate stays at `η_min` (PyTorch
/// would climb again along the cosine).
public struct CosineSchedule: Sendable, Equatable {
    /// η₀, the rate at `t = 0`.
    public var baseLearningRate: Float
    /// η_min, the rate at `t = T`.
    public var minimumLearningRate: Float
    /// T: epochs (or steps with `perStep`) to anneal over; `0` keeps η₀ throughout.
    public var length: Int
    /// Whether `t` counts optimizer steps rather than epochs.
    public var perStep: Bool

    /// Creates a schedule; by default the paper's `η_min = 0.01 · η₀`, per epoch.
    public init(baseLearningRate: Float, minimumLearningRate: Float? = nil, length: Int, perStep: Bool = false) {
        self.baseLearningRate = baseLearningRate
        self.minimumLearningRate = minimumLearningRate ?? 0.01 * baseLearningRate
        self.length = length
        self.perStep = perStep
    }

    /// η_t for `t` epochs (or steps) done.
    public func learningRate(at t: Int) -> Float {
        guard length > 0 else { return baseLearningRate }
        let progress = Double(min(max(t, 0), length)) / Double(length)
        let base = Double(baseLearningRate), minimum = Double(minimumLearningRate)
        return Float(minimum + (base - minimum) * (1 + cos(Double.pi * progress)) / 2)
    }

    /// The rate for the next update of an optimizer that has taken `step` steps in epoch `epoch`.
    public func learningRate(step: Int, epoch: Int) -> Float {
        learningRate(at: perStep ? step : epoch)
    }
}
