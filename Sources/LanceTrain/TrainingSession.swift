import Foundation
import LanceCore
import LanceModel
import LanceNN
import LanceRuntime

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The settings of a `Trainer`; the defaults are the paper's recipe (method section 6.1): SGD with
/// η₀ = 0.05, momentum 0.9, weight decay 1e-4, cosine annealing per epoch to 0.01·η₀, gradient-norm
/// clipping at 2.0.
public struct TrainerConfiguration: Sendable, Equatable {
    /// The update rule.
    public var optimizer: OptimizerKind
    /// The base learning rate η₀.
    public var learningRate: Float
    /// η_min of the cosine schedule (`nil`: 0.01·η₀).
    public var minimumLearningRate: Float?
    /// Epochs (or steps with `schedulePerStep`) the cosine anneals over; 0 keeps η₀.
    public var scheduleLength: Int
    /// Whether the cosine advances per optimizer step instead of per epoch.
    public var schedulePerStep: Bool
    /// The global gradient-norm bound (`nil`: no clipping).
    public var maxGradientNorm: Float?
    /// Whether the head's input is compressed like the convolutions' (see `TrainingGraph`).
    public var compressHead: Bool
    /// Whether the scale and bias of the batch normalizations between the trained layers and the
    /// loss train too, with their inference statistics (see `TrainingGraph`; default: frozen).
    public var trainBatchNormalization: Bool

    /// Creates settings (the paper's recipe by default, 50 epochs).
    public init(optimizer: OptimizerKind = .paperSGD, learningRate: Float = 0.05, minimumLearningRate: Float? = nil,
                scheduleLength: Int = 50, schedulePerStep: Bool = false, maxGradientNorm: Float? = 2.0,
                compressHead: Bool = false, trainBatchNormalization: Bool = false) {
        self.optimizer = optimizer
        self.learningRate = learningRate
        self.minimumLearningRate = minimumLearningRate
        self.scheduleLength = scheduleLength
        self.schedulePerStep = schedulePerStep
        self.maxGradientNorm = maxGradientNorm
        self.compressHead = compressHead
        self.trainBatchNormalization = trainBatchNormalization
    }

    /// The schedule these settings describe.
    public var schedule: CosineSchedule {
        CosineSchedule(baseLearningRate: learningRate, minimumLearningRate: minimumLearningRate, length: scheduleLength,
                       perStep: schedulePerStep)
    }
}

/// What one training step did.
public struct StepResult: Sendable, Equatable {
    /// The batch's mean softmax cross-entropy (before the update).
    public var loss: Float
    /// The fraction of the batch whose arg-max logit is its label (before the update).
    public var accuracy: Float
    /// Samples classified correctly.
    public var correct: Int
    /// The bytes held for backward, counted from the saved tensors.
    public var memory: BackwardMemory
    /// The learning rate of this update.
    public var learningRate: Float
    /// The global gradient norm before clipping.
    public var gradientNorm: Float
    /// The process's peak resident memory so far (`getrusage` `ru_maxrss`), in bytes.
    public var peakResidentBytes: Int
}

/// The loss and accuracy of a batch under the current weights (forward only).
public struct EvaluationResult: Sendable, Equatable {
    /// Mean softmax cross-entropy.
    public var loss: Float
    /// Fraction correct.
    public var accuracy: Float
    /// Samples classified correctly.
    public var correct: Int
    /// The logits `[B, K]`.
    public var logits: Tensor
}

/// Fine-tunes a model on batches an app (or the command line) supplies: each `step` runs the
/// training forward (`TrainingGraph`), softmax cross-entropy, the backward pass, gradient-norm
/// clipping and one optimizer update with the scheduled learning rate. The trainer owns a copy of
/// the graph and updates its trained parameters in place (`graph`).
///
/// A step whose loss or gradients are not finite throws `TrainingError.numeric` and changes
/// nothing (neither the parameters nor the optimizer state).
///
/// ```swift
/// var trainer = try Trainer(graph: graph, layers: try graph.trainedLayers(.last(2)),
///                           method: .lance(calibration), configuration: TrainerConfiguration(scheduleLength: 10))
/// for (images, labels) in batches { let result = try trainer.step(images: images, labels: labels) }
/// trainer.finishEpoch()
/// ```
public struct Trainer: Sendable {
    /// The training graph runner (its `graph` holds the current parameters).
    public private(set) var runner: TrainingGraph
    /// The optimizer and its state.
    public private(set) var optimizer: Optimizer
    /// The settings.
    public let configuration: TrainerConfiguration
    /// Per trained weight parameter, a protected basis P `[d, k]` its gradient is projected away
    /// from before every update (`projectingOutProtected`; GPM's gradient projection). Empty by
    /// default.
    public var gradientProjections: [String: (basis: Tensor, featuresFirst: Bool)] = [:]
    /// The session `evaluate` scores with, built once for the current weights: evaluation comes a
    /// few samples at a time, and building a session (folding batch normalization) is not free.
    /// Training drops it (its buffers, and the weights' storage it shares, so that they update in
    /// place).
    private let scoring = ScoringSessionCache()
    /// Stands for the current weights; replaced at every update, so that a session built for other
    /// weights (earlier ones, or those of a copy of this trainer that trained on) is never reused.
    private var weightsToken = WeightsToken()

    /// The model with the trained parameters' current values.
    public var graph: Graph { runner.graph }

    /// Prepares training.
    ///
    /// - Throws: as `TrainingGraph.init`.
    ///
    /// - Parameter frozenParameters: operands of the trained layers kept fixed (see `TrainingGraph`).
    public init(graph: Graph, layers: [TrainedLayer], method: TrainingMethod,
                configuration: TrainerConfiguration = TrainerConfiguration(),
                frozenParameters: Set<String> = []) throws(TrainingError) {
        self.runner = try TrainingGraph(graph: graph, layers: layers, method: method, compressHead: configuration.compressHead,
                                        frozenParameters: frozenParameters,
                                        trainBatchNormalization: configuration.trainBatchNormalization)
        self.optimizer = Optimizer(configuration.optimizer)
        self.configuration = configuration
    }

    /// The learning rate the next step uses.
    public var learningRate: Float {
        configuration.schedule.learningRate(step: optimizer.step, epoch: optimizer.epoch)
    }

    /// One training step on a batch.
    ///
    /// - Parameters:
    ///   - images: the model input `[B, ...]` (under `lance`, B is the calibration batch size).
    ///   - labels: B class indices in `0..<K`.
    /// - Throws: `TrainingError.data` for labels or a batch that do not fit; `.graph` for an input
    ///   shape the model rejects; `.numeric` when the loss or a gradient is NaN or infinite (the
    ///   update is then not applied).
    public mutating func step(images: Tensor, labels: [Int]) throws(TrainingError) -> StepResult {
        try step(features: try frozenFeatures(images: images), labels: labels)
    }

    /// The frozen part's outputs for a batch (forward only; see `TrainingGraph.frozenFeatures`).
    public func frozenFeatures(images: Tensor) throws(TrainingError) -> [String: Tensor] {
        // Training goes on: the scoring session's buffers are not needed meanwhile.
        scoring.clear()
        return try runner.frozenFeatures(images: images)
    }

    /// The frozen part's outputs for a batch whose model inputs are produced slice by slice
    /// (see `TrainingGraph.frozenFeatures(batchSize:images:)`).
    public func frozenFeatures(batchSize: Int, images: (Range<Int>) throws(TrainingError) -> Tensor)
        throws(TrainingError) -> [String: Tensor] {
        scoring.clear()
        return try runner.frozenFeatures(batchSize: batchSize, images: images)
    }

    /// One training step from the frozen part's outputs (kept from an earlier epoch, for example).
    public mutating func step(features: consuming [String: Tensor], labels: [Int]) throws(TrainingError) -> StepResult {
        scoring.clear()
        let (loss, logits, backward, memory) = try runner.lossAndGradients(features: consume features, labels: labels)
        let correct = zip(logits.argmaxPerRow(), labels).filter { $0 == $1 }.count
        var gradients = backward.parameterGradients
        for (name, projection) in gradientProjections {
            if let gradient = gradients[name] {
                gradients[name] = projectingOutProtected(gradient, protected: projection.basis, featuresFirst: projection.featuresFirst)
            }
        }
        let stepNumber = optimizer.step + 1
        guard loss.isFinite else {
            throw .numeric(reason: "training step \(stepNumber): the loss is \(loss); the update was not applied — lower the learning rate or check the data for NaN or infinite values")
        }
        let norm = configuration.maxGradientNorm.map { clipGradientNorm(&gradients, maxNorm: $0) } ?? globalGradientNorm(gradients)
        guard norm.isFinite else {
            let culprit = gradients.keys.sorted().first { name in gradients[name]!.scalars.contains { !$0.isFinite } } ?? "?"
            throw .numeric(reason: "training step \(stepNumber): the gradient of '\(culprit)' is not finite (norm \(norm)); the update was not applied — lower the learning rate")
        }
        let rate = learningRate
        weightsToken = WeightsToken()
        runner.updateTrainedParameters { parameters in
            optimizer.update(&parameters, gradients: gradients, learningRate: rate)
        }
        return StepResult(loss: loss, accuracy: Float(correct) / Float(max(labels.count, 1)), correct: correct,
                          memory: memory, learningRate: rate, gradientNorm: norm, peakResidentBytes: peakResidentBytes())
    }

    /// Marks an epoch as completed (advances a per-epoch schedule).
    public mutating func finishEpoch() {
        optimizer.epoch += 1
    }

    /// Loss and accuracy of a batch under the current weights, forward only (any batch size; the
    /// whole graph runs through an `InferenceSession`, built once per weight update).
    ///
    /// - Throws: `TrainingError.graph` or `.data` as `step`.
    public func evaluate(images: Tensor, labels: [Int]) throws(TrainingError) -> EvaluationResult {
        let session = scoring.session(for: weightsToken) {
            var scoringGraph = runner.graph
            scoringGraph.outputs = [ValueInfo(name: runner.logitsName, dimensions: nil)]
            return InferenceSession(graph: scoringGraph)
        }
        let logits: Tensor
        do {
            // Slice by slice, like the training's frozen part: the early layers' activations of
            // the whole batch are never alive at once (the logits do not depend on the split).
            logits = try session.run(images, batchSize: TrainingGraph.frozenSliceSize)
            // What a later call may need is the session, not the tensors it kept for reuse.
            session.releaseBuffers()
        } catch {
            throw .graph(error)
        }
        try TrainingGraph.checkLabels(labels, logits: logits)
        let (loss, _) = softmaxCrossEntropy(logits: logits, labels: labels)
        let correct = zip(logits.argmaxPerRow(), labels).filter { $0 == $1 }.count
        return EvaluationResult(loss: loss, accuracy: Float(correct) / Float(max(labels.count, 1)), correct: correct, logits: logits)
    }

    /// The optimizer state with the schedule and clipping settings (`OptimizerState` names).
    public var snapshot: OptimizerState {
        var state = optimizer.snapshot
        state.hyperparameters["learning_rate"] = Double(configuration.learningRate)
        state.hyperparameters["minimum_learning_rate"] = Double(configuration.schedule.minimumLearningRate)
        state.hyperparameters["schedule_length"] = Double(configuration.scheduleLength)
        state.hyperparameters["schedule_per_step"] = configuration.schedulePerStep ? 1 : 0
        state.hyperparameters["max_gradient_norm"] = Double(configuration.maxGradientNorm ?? 0)
        return state
    }

    /// Continues from a saved state: the optimizer's step, epoch and slots are restored (the graph's
    /// parameters must be those saved with it). The update rule must match the configuration's.
    ///
    /// - Throws: `TrainingError.data` when the snapshot is of another kind or lacks a slot shape.
    public mutating func restore(_ snapshot: OptimizerState) throws(TrainingError) {
        let restored = try Optimizer(restoring: snapshot)
        guard restored.kind == configuration.optimizer else {
            throw .data(reason: "the saved optimizer is \(snapshot.kind) with other settings than this run's \(configuration.optimizer.name); resume with the same optimizer settings")
        }
        for (slot, tensor) in snapshot.slots {
            guard let name = slot.split(separator: "/", maxSplits: 1).last.map(String.init),
                  let parameter = runner.parameter(name), parameter.shape == tensor.shape else {
                throw .data(reason: "the saved optimizer slot '\(slot)' does not match a trained parameter of this model")
            }
        }
        optimizer = restored
    }
}

/// The process's peak resident set size in bytes (`getrusage(RUSAGE_SELF).ru_maxrss`, which Linux
/// reports in KiB and macOS in bytes).
public func peakResidentBytes() -> Int {
    #if os(Linux)
    // VmHWM: the peak of this address space. (`getrusage`'s ru_maxrss survives execve, so a tool
    // started by a large process would report its parent's peak.)
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
       let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") {
        return kilobytes * 1024
    }
    var usage = rusage()
    guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 else { return 0 }
    return Int(usage.ru_maxrss) * 1024
    #else
    var usage = rusage()
    guard getrusage(RUSAGE_SELF, &usage) == 0 else { return 0 }
    return Int(usage.ru_maxrss)
    #endif
}

/// Identifies one state of a trainer's weights (by object identity).
final class WeightsToken: Sendable {}

/// The scoring session of one weights state, shared by the copies of a `Trainer` that hold it.
final class ScoringSessionCache: @unchecked Sendable {
    private let lock = NSLock()
    private var cached: (token: WeightsToken, session: InferenceSession)?

    /// The session cached for `token`, or the one `make` builds, then cached.
    func session(for token: WeightsToken, make: () -> InferenceSession) -> InferenceSession {
        lock.lock()
        defer { lock.unlock() }
        if let cached, cached.token === token { return cached.session }
        let session = make()
        cached = (token, session)
        return session
    }

    /// Drops the cached session.
    func clear() {
        lock.lock()
        cached = nil
        lock.unlock()
    }
}
