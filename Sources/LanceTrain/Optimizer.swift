import LanceCore
import LanceLinalg
import LanceModel

/// Which update rule an `Optimizer` applies, with its hyperparameters (PyTorch's formulas).
public enum OptimizerKind: Sendable, Equatable {
    /// `torch.optim.SGD` with dampening 0 and Nesterov off:
    /// ```
    /// g ← g + λ·p                          (weight decay, L2 added to the gradient)
    /// b ← g on the first step, else b ← μ·b + g   (when μ ≠ 0)
    /// p ← p − η·b                          (η·g when μ = 0)
    /// ```
    case sgd(momentum: Float, weightDecay: Float)
    /// `torch.optim.AdamW` (decoupled weight decay, bias correction, no amsgrad):
    /// ```
    /// p ← p·(1 − η·λ)
    /// m ← β₁·m + (1 − β₁)·g        v ← β₂·v + (1 − β₂)·g²
    /// p ← p − (η / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
    /// ```
    case adamW(beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float)

    /// The paper's recipe (method section 6.1): SGD, momentum 0.9, weight decay 1e-4.
    public static let paperSGD = OptimizerKind.sgd(momentum: 0.9, weightDecay: 1e-4)

    /// AdamW with PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, weight decay 1e-2.
    public static let defaultAdamW = OptimizerKind.adamW(beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 1e-2)

    /// `sgd` or `adamw` (`OptimizerState.kind`).
    public var name: String {
        switch self {
        case .sgd: "sgd"
        case .adamW: "adamw"
        }
    }
}

/// SGD with momentum or AdamW over named parameters, with PyTorch's update formulas
/// (`OptimizerKind`). The learning rate is given to each `update`, so any schedule can drive it.
public struct Optimizer: Sendable, Equatable {
    /// The update rule and its hyperparameters.
    public let kind: OptimizerKind
    /// Updates applied so far (AdamW's `t` is `step` after the increment of an update).
    public private(set) var step: Int
    /// Epochs completed (kept for the schedule and checkpoints; `update` does not change it).
    public var epoch: Int
    /// Per-parameter state: SGD momentum buffers, AdamW first and second moments.
    public private(set) var slots: [String: Tensor]

    /// A fresh optimizer.
    public init(_ kind: OptimizerKind) {
        self.kind = kind
        self.step = 0
        self.epoch = 0
        self.slots = [:]
    }

    /// Applies one update to `parameters` from `gradients` (same names and shapes) with the learning
    /// rate η. Parameters without a gradient are left alone and keep their slots (as PyTorch skips
    /// parameters whose `grad` is `None`).
    public mutating func update(_ parameters: inout [String: Tensor], gradients: [String: Tensor], learningRate: Float) {
        step += 1
        for name in parameters.keys.sorted() {
            guard let gradient = gradients[name], let shape = parameters[name]?.shape else { continue }
            precondition(shape == gradient.shape, "gradient of '\(name)' has shape \(gradient.shape), the parameter \(shape)")
            // The parameter and its slots are updated in place (one pass over each, no copies).
            switch kind {
            case .sgd(let momentum, let weightDecay):
                guard momentum != 0 else {
                    gradient.withUnsafeBufferPointer { g in
                        parameters[name]!.withUnsafeMutableBufferPointer { p in
                            for k in 0..<p.count { p[k] -= learningRate * (g[k] + weightDecay * p[k]) }
                        }
                    }
                    continue
                }
                let key = "momentum/" + name
                let first = slots[key] == nil
                var buffer = slots.removeValue(forKey: key) ?? Tensor(shape: shape)  // the only reference: no copy
                buffer.withUnsafeMutableBufferPointer { b in
                    gradient.withUnsafeBufferPointer { g in
                        parameters[name]!.withUnsafeMutableBufferPointer { p in
                            sgdMomentumStep(p, g, b, momentum: first ? 0 : momentum, weightDecay: weightDecay,
                                            learningRate: learningRate)
                        }
                    }
                }
                slots[key] = buffer
            case .adamW(let beta1, let beta2, let epsilon, let weightDecay):
                let firstKey = "first_moment/" + name, secondKey = "second_moment/" + name
                var first = slots.removeValue(forKey: firstKey) ?? Tensor(shape: shape)
                var second = slots.removeValue(forKey: secondKey) ?? Tensor(shape: shape)
                // Bias corrections in double precision, as PyTorch computes them from Python floats.
                let t = Double(step)
                let correction1 = 1 - pow(Double(beta1), t)
                let correction2 = 1 - pow(Double(beta2), t)
                let stepSize = Float(Double(learningRate) / correction1)
                let correction2Root = Float(correction2.squareRoot())
                let decay = 1 - learningRate * weightDecay
                parameters[name]!.withUnsafeMutableBufferPointer { p in
                    gradient.withUnsafeBufferPointer { g in
                        first.withUnsafeMutableBufferPointer { m in
                            second.withUnsafeMutableBufferPointer { v in
                                for k in 0..<p.count {
                                    p[k] *= decay
                                    m[k] = beta1 * m[k] + (1 - beta1) * g[k]
                                    v[k] = beta2 * v[k] + (1 - beta2) * g[k] * g[k]
                                    let denominator = v[k].squareRoot() / correction2Root + epsilon
                                    p[k] -= stepSize * m[k] / denominator
                                }
                            }
                        }
                    }
                }
                slots[firstKey] = first
                slots[secondKey] = second
            }
        }
    }

    /// The complete state (`hyperparameters` holds the rule's own; the `Trainer` adds its schedule).
    public var snapshot: OptimizerState {
        var hyperparameters: [String: Double] = [:]
        switch kind {
        case .sgd(let momentum, let weightDecay):
            hyperparameters["momentum"] = Double(momentum)
            hyperparameters["weight_decay"] = Double(weightDecay)
        case .adamW(let beta1, let beta2, let epsilon, let weightDecay):
            hyperparameters["beta1"] = Double(beta1)
            hyperparameters["beta2"] = Double(beta2)
            hyperparameters["epsilon"] = Double(epsilon)
            hyperparameters["weight_decay"] = Double(weightDecay)
        }
        return OptimizerState(kind: kind.name, step: step, epoch: epoch, hyperparameters: hyperparameters, slots: slots)
    }

    /// Restores an optimizer from a snapshot; continuing gives the same updates as the run that saved it.
    ///
    /// - Throws: `TrainingError.data` for an unknown kind or a missing hyperparameter.
    public init(restoring snapshot: OptimizerState) throws(TrainingError) {
        func value(_ name: String) throws(TrainingError) -> Float {
            guard let value = snapshot.hyperparameters[name] else {
                throw .data(reason: "the saved \(snapshot.kind) optimizer state lacks '\(name)'; start without --resume")
            }
            return Float(value)
        }
        switch snapshot.kind {
        case "sgd":
            kind = .sgd(momentum: try value("momentum"), weightDecay: try value("weight_decay"))
        case "adamw":
            kind = .adamW(beta1: try value("beta1"), beta2: try value("beta2"), epsilon: try value("epsilon"),
                          weightDecay: try value("weight_decay"))
        default:
            throw .data(reason: "the saved optimizer state is of kind '\(snapshot.kind)', which is neither sgd nor adamw")
        }
        step = snapshot.step
        epoch = snapshot.epoch
        slots = snapshot.slots
    }
}

/// Scales the gradients so that their global L2 norm is at most `maxNorm`, with PyTorch's
/// `d = g + λ·p`, `b ← μ·b + d`, `p ← p − η·b` over 16 lanes, blocks of the parameter shared by
/// the cores (`μ = 0` sets `b = d`: the first step).
private func sgdMomentumStep(_ p: UnsafeMutableBufferPointer<Float>, _ g: UnsafeBufferPointer<Float>,
                             _ b: UnsafeMutableBufferPointer<Float>, momentum: Float, weightDecay: Float, learningRate: Float) {
    nonisolated(unsafe) let (parameter, gradient, buffer) = (p.baseAddress!, g.baseAddress!, b.baseAddress!)
    let block = 1 << 14
    parallelFor((p.count + block - 1) / block, minimumPerChunk: 4) { blocks in
        var k = blocks.lowerBound * block
        let end = min(p.count, blocks.upperBound * block)
        while k + 16 <= end {
            let value = UnsafeRawPointer(parameter + k).loadUnaligned(as: SIMD16<Float>.self)
            let direction = UnsafeRawPointer(gradient + k).loadUnaligned(as: SIMD16<Float>.self) + weightDecay * value
            let previous = UnsafeRawPointer(buffer + k).loadUnaligned(as: SIMD16<Float>.self)
            let updated = momentum == 0 ? direction : momentum * previous + direction
            UnsafeMutableRawPointer(buffer + k).storeBytes(of: updated, as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(parameter + k).storeBytes(of: value - learningRate * updated, as: SIMD16<Float>.self)
            k += 16
        }
        while k < end {
            let direction = gradient[k] + weightDecay * parameter[k]
            buffer[k] = momentum == 0 ? direction : momentum * buffer[k] + direction
            parameter[k] -= learningRate * buffer[k]
            k += 1
        }
    }
}

/// `clip_grad_norm_` semantics:
///
/// ```
/// N = √(Σ_p Σ_k g_pk²)            (over all gradients together)
/// c = maxNorm / (N + 1e-6);  if c < 1: every g ← c·g
/// ```
///
/// - Returns: the norm N before clipping (infinite or NaN when a gradient is; nothing is scaled then).
@discardableResult
public func clipGradientNorm(_ gradients: inout [String: Tensor], maxNorm: Float) -> Float {
    let norm = globalGradientNorm(gradients)
    guard norm.isFinite else { return norm }
    let coefficient = Double(maxNorm) / (Double(norm) + 1e-6)
    guard coefficient < 1 else { return norm }
    let factor = Float(coefficient)
    for name in gradients.keys {
        gradients[name]!.withUnsafeMutableBufferPointer { g in for k in 0..<g.count { g[k] *= factor } }
    }
    return norm
}

/// The global L2 norm `√(Σ_p Σ_k g_pk²)` of a set of gradients (blocks of 4,096 squares summed in
/// single precision over 16 lanes, the blocks in double precision).
public func globalGradientNorm(_ gradients: [String: Tensor]) -> Float {
    var sum: Double = 0
    for gradient in gradients.values {
        gradient.withUnsafeBufferPointer { g in
            var start = 0
            while start < g.count {
                let end = min(g.count, start + 4_096)
                var lanes = SIMD16<Float>()
                var k = start
                while k + 16 <= end {
                    let value = UnsafeRawPointer(g.baseAddress! + k).loadUnaligned(as: SIMD16<Float>.self)
                    lanes += value * value
                    k += 16
                }
                var block = Double(lanes.sum())
                while k < end {
                    block += Double(g[k]) * Double(g[k])
                    k += 1
                }
                sum += block
                start = end
            }
        }
    }
    return Float(sum.squareRoot())
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
