import ArgumentParser
import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceModel
import LanceTrain

/// Set by the SIGINT handler; the training loop stops after the current step.
nonisolated(unsafe) private var interruptRequested: sig_atomic_t = 0

/// `lance-train`: fine-tunes a container's trained layers on a dataset, checkpointing after every epoch.
public struct TrainCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lance-train",
        abstract: "Fine-tune a .lance container's trained layers on a dataset (LANCE, full backprop or HOSVD).",
        discussion: """
            The trained layers are those of the container's calibration (or --train-layers for full and \
            hosvd). After every epoch the container is written atomically (weights, optimizer state, \
            metrics), so that an interrupted or failed run leaves the last checkpoint intact and --resume \
            continues from it; at the end the weights of the best epoch are written. --epochs is the length \
            of the whole schedule: with --resume training continues up to it.
            """)

    public enum Method: String, ExpressibleByArgument, CaseIterable, Sendable {
        /// Fine-tuning: the calibrated bases; adding a task: bases orthogonal to the protected ones.
        case lance
        /// Fine-tuning only: full backpropagation.
        case full
        /// Fine-tuning only: per-batch HOSVD.
        case hosvd
        /// Adding a task only: full backpropagation without protection (the forgetting baseline).
        case naive
        /// Adding a task only: full backpropagation with GPM's gradient projection.
        case gpm
    }

    public enum OptimizerChoice: String, ExpressibleByArgument, CaseIterable, Sendable {
        case sgd, adamw
    }

    @Argument(help: "The .lance container to train.")
    var container: String

    @Option(help: "Training data: a folder of class folders of images, .npy/.npz, HDF5 (images, labels) or IDX files.")
    var data: String

    @Option(help: "Evaluation data, evaluated after every epoch (the best epoch is chosen by its accuracy).")
    var evalData: String?

    @Option(help: "Epochs of the schedule (default 10; with --resume the saved schedule length).")
    var epochs: Int?

    @Option(help: "Stop this run after epoch N of the schedule (continue later with --resume).")
    var stopAfter: Int?

    @Option(help: "Samples per batch (default: the calibration batch size; LANCE requires it).")
    var batchSize: Int?

    @Option(help: "Base learning rate η₀ of the cosine schedule (default 0.05 for sgd, 0.001 for adamw; with --resume the saved one).")
    var lr: Float?

    @Option(help: "What the trained layers keep for backward: lance (calibrated bases), full (the inputs) or hosvd (per-batch HOSVD); with --add-task: lance (orthogonal subspaces), naive (no protection) or gpm (gradient projection).")
    var method: Method = .lance

    @Option(help: "Update rule: sgd or adamw (default sgd; with --resume the saved one).")
    var optimizer: OptimizerChoice?

    @Option(help: "SGD momentum (default 0.9).")
    var momentum: Float?

    @Option(help: "Weight decay (default 1e-4 for sgd, 1e-2 for adamw).")
    var weightDecay: Float?

    @Option(help: "Global gradient-norm bound; 0 turns clipping off (default 2.0).")
    var clip: Float?

    @Option(help: "Energy threshold of the per-batch HOSVD (--method hosvd, default 0.7), or of the batch and position bases of a task added with lance (default 0.95).")
    var energy: Float?

    @Option(help: "Layers to train (last:K or node names); needed for full and hosvd without calibration bases.")
    var trainLayers: String?

    @Option(help: "Classes of the new head (default: the data's); a head of another size is replaced.")
    var classes: Int?

    @Flag(help: "Replace the classifier head even when its size equals the data's class count.")
    var replaceHead = false

    @Option(help: "Seed of the head initialisation and of the shuffle (epoch e uses seed + e).")
    var seed: UInt64 = 0

    @Option(help: "Samples per epoch (and evaluated), for quick runs.")
    var limit: Int?

    @Flag(help: "Keep the frozen part's outputs of every sample on disk after its first use, so later epochs skip the frozen forward pass; preprocessing is deterministic, so the features do not change.")
    var cacheFeatures = false

    @Flag(inversion: .prefixedNo, help: "Mirror each training sample left to right with probability 1/2, the augmentation of the LANCE recipe; the choice follows --seed, the epoch and the sample, and evaluation never flips (default off; with --resume the saved choice).")
    var flip: Bool?

    @Flag(name: .customLong("train-batchnorm"), inversion: .prefixedNo, help: "Also train the scale and bias of the BatchNormalization nodes between the trained layers and the loss, with their inference statistics (default: frozen; with --resume the saved choice).")
    var trainBatchNormalization: Bool?

    @Flag(help: "Continue from the optimizer state saved in the container.")
    var resume = false

    @Option(help: "Add a task of this name with its own head (--classes N) instead of fine-tuning in place; the earlier tasks' outputs stay unchanged. Needs a container converted with --protect.")
    var addTask: String?

    @Option(help: "Class names of the added task, separated by commas (default: the data's).")
    var classNames: String?

    @Option(help: "Use only the samples of these classes of --data and --eval-data, relabelled 0, 1, … in this order (e.g. 2,3).")
    var selectClasses: String?

    @Option(help: "Batches of the task's data the protected basis is extended from after training (--add-task).")
    var protectBatches = 11

    @Option(name: [.short, .customLong("output")], help: "The container to write (default: CONTAINER, in place).")
    var output: String?

    public init() {}

    public func validate() throws {
        guard container.lowercased().hasSuffix(".lance") else { throw ValidationError("CONTAINER must be a .lance file") }
        if let output, !output.lowercased().hasSuffix(".lance") { throw ValidationError("-o must name a .lance file") }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after must be at least 1") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if let classes, classes < 1 { throw ValidationError("--classes must be at least 1") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number") }
        if let clip, !(clip >= 0 && clip.isFinite) { throw ValidationError("--clip must be 0 (off) or positive") }
        if let momentum, !(momentum >= 0 && momentum < 1) { throw ValidationError("--momentum must be in [0, 1)") }
        if let weightDecay, !(weightDecay >= 0 && weightDecay.isFinite) { throw ValidationError("--weight-decay must be 0 or positive") }
        if let energy, !(energy > 0 && energy < 1) { throw ValidationError("--energy must be between 0 and 1") }
        if let selectClasses { _ = try parseClassList(selectClasses, option: "--select-classes") }
        guard protectBatches >= 1 else { throw ValidationError("--protect-batches must be at least 1") }
        if addTask != nil {
            if resume { throw ValidationError("--resume continues a fine-tune; a task is added in one run (--add-task)") }
            if cacheFeatures || replaceHead || trainLayers != nil || stopAfter != nil || trainBatchNormalization == true {
                throw ValidationError("--add-task trains the container's shared layers with a new head; --cache-features, --replace-head, --train-layers, --stop-after and --train-batchnorm do not apply")
            }
            if optimizer == .adamw { throw ValidationError("--add-task trains with SGD (AdamW's update leaves the orthogonal subspace)") }
        } else if method == .naive || method == .gpm {
            throw ValidationError("--method \(method.rawValue) is a baseline for adding a task; give --add-task NAME")
        } else if classNames != nil {
            throw ValidationError("--class-names names the classes of a task added with --add-task")
        }
        if momentum != nil && optimizer == .adamw { throw ValidationError("--momentum applies to sgd only") }
        if let trainLayers { _ = try LayerSelection(parsing: trainLayers) }
        if resume && (classes != nil || replaceHead) {
            throw ValidationError("--resume continues with the container's head; --classes and --replace-head start a new run")
        }
    }

    public func run() throws {
        if !cacheFeatures { mapLargeBlocks() }
        if let addTask { return try runAddTask(addTask) }
        let started = Date()
        let output = self.output ?? container
        var model = try ContainerFile.read(container)
        if model.tasks.count > 1 {
            throw CommandError.dataMismatch(path: container, reason: "holds \(model.tasks.count) tasks (\(model.tasks.map(\.name).joined(separator: ", "))); fine-tuning in place would change the shared layers under all of them. Add a task with --add-task NAME, or export one task (lance-export --task) and convert that")
        }
        let halfPrecision = storesHalfPrecision(container)
        let saved = resume ? model.optimizerState : nil
        if resume && saved == nil {
            throw CommandError.dataMismatch(path: container, reason: "holds no optimizer state to resume from; train without --resume")
        }

        // The trained layers and the method.
        let selection: LayerSelection
        if let trainLayers {
            selection = try LayerSelection(parsing: trainLayers)
        } else if let calibration = model.calibration {
            selection = .names(calibration.layers.map(\.layer))
        } else {
            throw CommandError.dataMismatch(path: container, reason: method == .lance
                ? "has no calibration bases; run lance-convert \(container) --calibration DATA -o OUT.lance first"
                : "has no calibration record naming the layers to train; give --train-layers last:K or node names")
        }
        let trainingMethod: TrainingMethod
        switch method {
        case .lance:
            guard let calibration = model.calibration else {
                throw CommandError.dataMismatch(path: container, reason: "has no calibration bases, which --method lance needs; run lance-convert \(container) --calibration DATA -o OUT.lance first (or use --method full or hosvd)")
            }
            trainingMethod = .lance(calibration)
        case .full: trainingMethod = .full
        case .hosvd: trainingMethod = .hosvd(energy: energy ?? 0.7)
        case .naive, .gpm: throw ValidationError("--method \(method.rawValue) needs --add-task NAME")
        }

        // Batch size.
        let calibrationBatch = model.calibration?.batchSize
        let batch = batchSize ?? calibrationBatch ?? 32
        if method == .lance, let calibrationBatch, batch != calibrationBatch {
            throw ValidationError("--batch-size \(batch) differs from the calibration batch size \(calibrationBatch): LANCE's batch basis is B × r, so training must use batches of \(calibrationBatch) (or recalibrate with lance-convert --batch-size \(batch), or use --method full or hosvd)")
        }

        // Data.
        let preprocessing = model.preprocessing ?? derivedPreprocessing(for: model.graph)
        let classSelection = try selectClasses.map { try parseClassList($0, option: "--select-classes") }
        let source = try openDataSource(data, preprocessing: preprocessing, selecting: classSelection)
        guard source.hasLabels else { throw CommandError.dataMismatch(path: data, reason: "has no labels; training needs one class label per sample") }
        let perEpoch = min(limit ?? source.count, source.count)
        guard perEpoch >= batch else {
            throw CommandError.dataMismatch(path: data, reason: "\(perEpoch) samples are fewer than one batch of \(batch)")
        }
        let dataClasses = max(source.classNames.count, 1)
        let evalSource = try evalData.map { try openDataSource($0, preprocessing: preprocessing, selecting: classSelection) }
        if let evalSource, let evalData, !evalSource.hasLabels {
            throw CommandError.dataMismatch(path: evalData, reason: "has no labels; evaluation needs one class label per sample")
        }

        // Classes and head.
        let modelClasses = try outputClasses(of: model.graph)
        let wantedClasses = classes ?? dataClasses
        if wantedClasses < dataClasses {
            throw CommandError.dataMismatch(path: data, reason: "has \(dataClasses) classes, more than --classes \(wantedClasses)")
        }
        if resume {
            if modelClasses != nil && modelClasses! < dataClasses {
                throw CommandError.dataMismatch(path: data, reason: "has \(dataClasses) classes but the container's head has \(modelClasses!); resume only with the same task")
            }
        } else if replaceHead || modelClasses != wantedClasses {
            model.graph = try LanceTrain.replaceHead(in: model.graph, classes: wantedClasses, seed: seed)
            printError("note: new classifier head with \(wantedClasses) classes (was \(modelClasses.map(String.init) ?? "unknown"))")
        }
        let classCount = resume ? (modelClasses ?? dataClasses) : wantedClasses

        let layers = try model.graph.trainedLayers(selection)
        let totalEpochs = epochs ?? saved?.hyperparameters["schedule_length"].map { Int($0) } ?? 10
        let configuration = try trainerConfiguration(saved: saved, epochs: totalEpochs)
        var trainer = try Trainer(graph: model.graph, layers: layers, method: trainingMethod, configuration: configuration)
        var firstEpoch = 0
        if let saved {
            try trainer.restore(saved)
            firstEpoch = saved.epoch
            // Metrics of epochs after the saved state belong to weights this container no longer holds.
            model.metrics.removeAll { metric in epochNumber(metric.scope).map { $0 > firstEpoch } ?? false }
        }
        let lastEpoch = min(totalEpochs, stopAfter ?? totalEpochs)
        guard firstEpoch < lastEpoch else {
            print("nothing to do: the container has completed \(firstEpoch) of \(totalEpochs) epochs (give a larger --epochs to continue)")
            return
        }
        let trainedNames = Set(trainer.runner.trainedParameterNames)
        let taskName = dataFolderName(data)
        let flipping = flip ?? (saved?.hyperparameters[Self.flipHyperparameter] == 1)
        let augmentation = flipping ? HorizontalFlip(seed: seed) : nil
        // The optimizer state with the augmentation, so that --resume repeats it.
        func checkpointState() -> OptimizerState {
            var state = trainer.snapshot
            state.hyperparameters[Self.flipHyperparameter] = flipping ? 1 : 0
            state.hyperparameters[Self.batchNormalizationHyperparameter] = configuration.trainBatchNormalization ? 1 : 0
            return state
        }
        let batchNormalizations = configuration.trainBatchNormalization
            ? model.graph.nodes.filter { node in
                if case .batchNormalization = node.operation { return trainedNames.contains(node.inputs[1]) }
                return false
            }.count : 0

        if perEpoch % batch != 0 {
            printError("note: each epoch uses \(perEpoch / batch) full batches of \(batch); the last \(perEpoch % batch) samples are left out")
        }
        print("training \(layers.count) layers (\(layers.map(\.node).joined(separator: ", "))) with \(method.rawValue), "
              + "\(configuration.optimizer.name) η₀ \(configuration.learningRate), batch \(batch), \(perEpoch / batch) steps per epoch, "
              + "epochs \(firstEpoch + 1)–\(lastEpoch) of \(totalEpochs), \(classCount) classes"
              + (batchNormalizations > 0 ? ", and the scale and bias of \(batchNormalizations) batch normalizations" : "")
              + (flipping ? ", random horizontal flips" : ""))

        interruptRequested = 0
        signal(SIGINT) { _ in interruptRequested = 1 }
        // A parent may have started us with SIGINT blocked (test runners do); the handler needs it delivered.
        var interruptSet = sigset_t()
        sigemptyset(&interruptSet)
        sigaddset(&interruptSet, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &interruptSet, nil)
        defer { signal(SIGINT, SIG_DFL) }

        // Best weights so far: on resume the container's own epoch is the reference.
        var best: (epoch: Int, score: Double, graph: Graph, state: OptimizerState)?
        if firstEpoch > 0 {
            let scope = "epoch \(firstEpoch)"
            let eval = model.metrics.last { $0.scope == scope && $0.name == "eval_accuracy" }?.value
            let loss = model.metrics.last { $0.scope == scope && $0.name == "train_loss" }?.value
            if let score = evalSource != nil ? eval : loss.map({ -$0 }) {
                best = (firstEpoch, score, trainer.graph, checkpointState())
            }
        }
        // With flips a sample has two versions: slot `index` plain, slot `count + index` mirrored.
        let cache = cacheFeatures ? try FeatureCache(sampleCount: source.count * (flipping ? 2 : 1)) : nil
        var maxTrainedBytes = 0, maxOtherBytes = 0
        var lastTrainAccuracy = 0.0, lastEvalAccuracy: Double?
        var epochsRun = 0

        for epoch in (firstEpoch + 1)...lastEpoch {
            let iterator = try BatchIterator(source: source, batchSize: batch, shuffleSeed: seed &+ UInt64(epoch), dropLast: true, limit: perEpoch)
            let steps = iterator.batchCount
            let progress = TrainingProgress(epoch: epoch, of: totalEpochs, steps: steps)
            let epochStart = Date()
            var lossSum = 0.0, correct = 0, seen = 0, step = 0
            var trainedBytes = 0, otherBytes = 0
            var position = 0
            var prefetched: PrefetchedBatch?
            func cacheSlots(_ samples: [Int]) -> [Int] {
                samples.map { augmentation?.flips(sample: $0, epoch: epoch) == true ? source.count + $0 : $0 }
            }
            while position + batch <= iterator.order.count {
                let indices = Array(iterator.order[position..<(position + batch)])
                position += batch
                // The frozen part runs slice by slice (`frozenFeatures(batchSize:images:)`), reading
                // each slice's samples just before it, so a whole batch of model inputs is never held.
                func frozenFeatures(of samples: [Int]) throws -> (features: [String: Tensor], labels: [Int]) {
                    do {
                        return try slicedFrozenFeatures(trainer, source: source, samples: samples, flip: augmentation, epoch: epoch)
                    } catch let error as TrainingError {
                        throw TrainingStopped(message: "training stopped in epoch \(epoch), step \(step + 1) of \(steps): \(error.description). "
                                              + checkpointSentence(output: output, input: container, completed: epoch - 1, started: firstEpoch))
                    }
                }
                let features: [String: Tensor]
                let labels: [Int]
                if let cache {
                    let slots = cacheSlots(indices)
                    if let ready = prefetched, ready.indices == slots {
                        (features, labels) = try ready.wait()
                    } else {
                        // Only the samples not cached yet run through the frozen part (per sample, so
                        // the features do not depend on the batch they came with).
                        let missing = indices.indices.filter { !cache.contains([slots[$0]]) }
                        if !missing.isEmpty {
                            let computed = try frozenFeatures(of: missing.map { indices[$0] })
                            try cache.store(computed.features, labels: computed.labels, indices: missing.map { slots[$0] })
                        }
                        (features, labels) = try cache.batch(slots)
                    }
                    // The next batch, when cached already, is read while this one trains.
                    prefetched = nil
                    if position + batch <= iterator.order.count {
                        let next = cacheSlots(Array(iterator.order[position..<(position + batch)]))
                        if cache.contains(next) { prefetched = PrefetchedBatch(cache, indices: next) }
                    }
                } else {
                    (features, labels) = try frozenFeatures(of: indices)
                }
                if let bad = labels.first(where: { $0 < 0 || $0 >= classCount }) {
                    throw CommandError.dataMismatch(path: data, reason: "label \(bad) is outside the head's 0..<\(classCount) classes; give --classes or --replace-head")
                }
                let result: StepResult
                do {
                    // Handed over, so that the trained part can release a LANCE layer's input once projected.
                    result = try trainer.step(features: consume features, labels: labels)
                } catch {
                    throw TrainingStopped(message: "training stopped in epoch \(epoch), step \(step + 1) of \(steps): \(error.description). "
                                          + checkpointSentence(output: output, input: container, completed: epoch - 1, started: firstEpoch))
                }
                step += 1
                lossSum += Double(result.loss) * Double(labels.count)
                correct += result.correct
                seen += labels.count
                trainedBytes = max(trainedBytes, result.memory.trainedLayerBytes)
                otherBytes = max(otherBytes, result.memory.otherBytes)
                let seconds = max(Date().timeIntervalSince(epochStart), 1e-9)
                progress.update(step: step, loss: lossSum / Double(seen), accuracy: Double(correct) / Double(seen),
                                imagesPerSecond: Double(seen) / seconds, heldMiB: Double(result.memory.totalBytes) / bytesPerMiB)
                if interruptRequested != 0 { break }
            }
            progress.finish()
            if interruptRequested != 0 {
                print("interrupted in epoch \(epoch) after step \(step) of \(steps); nothing of this epoch was written. "
                      + checkpointSentence(output: output, input: container, completed: epoch - 1, started: firstEpoch))
                throw ExitCode(130)
            }
            let seconds = Date().timeIntervalSince(epochStart)
            let trainLoss = lossSum / Double(max(seen, 1))
            let trainAccuracy = Double(correct) / Double(max(seen, 1))
            maxTrainedBytes = max(maxTrainedBytes, trainedBytes)
            maxOtherBytes = max(maxOtherBytes, otherBytes)
            lastTrainAccuracy = trainAccuracy

            var evalAccuracy: Double?
            if let evalSource {
                evalAccuracy = try evaluate(trainer, on: evalSource, classCount: classCount)
                lastEvalAccuracy = evalAccuracy
            }
            trainer.finishEpoch()
            epochsRun += 1
            print("epoch \(epoch)/\(totalEpochs): loss \(String(trainLoss, decimals: 4)), accuracy \(percent(trainAccuracy))"
                  + (evalAccuracy.map { ", eval accuracy \(percent($0))" } ?? "")
                  + ", \(String(Double(seen) / max(seconds, 1e-9), decimals: 1)) images/s, \(String(seconds, decimals: 1)) s")

            let score = evalAccuracy ?? -trainLoss
            let scope = "epoch \(epoch)"
            model.metrics.removeAll { $0.scope == scope }
            model.metrics.append(contentsOf: [
                Metric(name: "train_loss", scope: scope, value: trainLoss),
                Metric(name: "train_accuracy", scope: scope, value: trainAccuracy),
            ] + (evalAccuracy.map { [Metric(name: "eval_accuracy", scope: scope, value: $0)] } ?? []) + [
                Metric(name: "images_per_second", scope: scope, value: Double(seen) / max(seconds, 1e-9)),
                Metric(name: "backward_bytes_trained_layers", scope: scope, value: Double(trainedBytes)),
                Metric(name: "backward_bytes_other", scope: scope, value: Double(otherBytes)),
                Metric(name: "peak_resident_mib", scope: scope, value: peakResidentMiB()),
            ])
            if !score.isFinite {
                throw TrainingStopped(message: "training stopped after epoch \(epoch): its \(evalAccuracy == nil ? "loss" : "accuracy") is not finite. "
                                      + checkpointSentence(output: output, input: container, completed: epoch - 1, started: firstEpoch))
            }
            // The checkpoint: current weights and optimizer state.
            applyTraining(trainer.graph, state: checkpointState(), to: &model, trainedNames: trainedNames,
                          task: taskName, classNames: source.classNames, classes: classCount)
            try ContainerFile.write(model, to: output, halfPrecision: halfPrecision)
            if best == nil || score > best!.score {
                best = (epoch, score, trainer.graph, checkpointState())
            }
        }

        // The best weights (with the optimizer state of that epoch, so that --resume stays exact).
        guard let best else { return }
        applyTraining(best.graph, state: best.state, to: &model, trainedNames: trainedNames,
                      task: taskName, classNames: source.classNames, classes: classCount)
        let bestScope = "epoch \(best.epoch)"
        let bestAccuracy = model.metrics.last { $0.scope == bestScope && $0.name == (evalSource != nil ? "eval_accuracy" : "train_accuracy") }?.value
        if !model.tasks.isEmpty, let bestAccuracy { model.tasks[0].metrics["accuracy"] = bestAccuracy }
        try ContainerFile.write(model, to: output, halfPrecision: halfPrecision)

        let elapsed = Date().timeIntervalSince(started)
        let finalAccuracy = lastEvalAccuracy ?? lastTrainAccuracy
        let kind = evalSource != nil ? "eval" : "train"
        print("wrote \(output) with the weights of epoch \(best.epoch) (best \(evalSource != nil ? "eval accuracy" : "training loss"))")
        print("done: \(epochsRun) epochs (\(lastEpoch) of \(totalEpochs)) in \(String(elapsed, decimals: 1)) s, final \(kind) accuracy \(percent(finalAccuracy)), "
              + "best \(bestAccuracy.map(percent) ?? "?") (epoch \(best.epoch)), peak resident memory \(String(peakResidentMiB(), decimals: 1)) MiB, "
              + "held for backward \(String(Double(maxTrainedBytes) / bytesPerMiB, decimals: 2)) MiB trained layers' inputs + "
              + "\(String(Double(maxOtherBytes) / bytesPerMiB, decimals: 2)) MiB other saved tensors")
    }

    /// The optimizer-state entry that records `--flip` (1) or its absence (0).
    static let flipHyperparameter = "horizontal_flip"
    /// The optimizer-state entry that records `--train-batchnorm` (1) or its absence (0).
    static let batchNormalizationHyperparameter = "train_batch_normalization"

    private func trainerConfiguration(saved: OptimizerState?, epochs: Int) throws -> TrainerConfiguration {
        let savedKind = saved.map { $0.kind == "adamw" ? OptimizerChoice.adamw : .sgd }
        let choice = optimizer ?? savedKind ?? .sgd
        if let saved, let savedKind, savedKind != choice {
            throw ValidationError("the container's optimizer state is \(saved.kind); resume with --optimizer \(saved.kind)")
        }
        func savedValue(_ name: String) -> Float? { saved?.hyperparameters[name].map { Float($0) } }
        let kind: OptimizerKind
        switch choice {
        case .sgd:
            kind = .sgd(momentum: momentum ?? savedValue("momentum") ?? 0.9, weightDecay: weightDecay ?? savedValue("weight_decay") ?? 1e-4)
        case .adamw:
            kind = .adamW(beta1: savedValue("beta1") ?? 0.9, beta2: savedValue("beta2") ?? 0.999, epsilon: savedValue("epsilon") ?? 1e-8,
                          weightDecay: weightDecay ?? savedValue("weight_decay") ?? 1e-2)
        }
        let rate = lr ?? savedValue("learning_rate") ?? (choice == .adamw ? 1e-3 : 0.05)
        let minimum = lr == nil ? savedValue("minimum_learning_rate") : nil
        let bound = clip ?? savedValue("max_gradient_norm") ?? 2.0
        return TrainerConfiguration(optimizer: kind, learningRate: rate, minimumLearningRate: minimum, scheduleLength: epochs,
                                    maxGradientNorm: bound > 0 ? bound : nil,
                                    trainBatchNormalization: trainBatchNormalization ?? (savedValue(Self.batchNormalizationHyperparameter) == 1))
    }

    private func evaluate(_ trainer: Trainer, on source: any DataSource, classCount: Int) throws -> Double {
        var correct = 0, seen = 0
        try forEachEvaluationSlice(of: source, limit: limit) { slice in
            if let bad = slice.labels.first(where: { $0 < 0 || $0 >= classCount }) {
                throw CommandError.dataMismatch(path: source.path, reason: "label \(bad) is outside the head's 0..<\(classCount) classes")
            }
            let result = try trainer.evaluate(images: slice.images, labels: slice.labels)
            correct += result.correct
            seen += slice.labels.count
            return interruptRequested == 0
        }
        return Double(correct) / Double(max(seen, 1))
    }
}

/// Training ended early (a non-finite step); the message says where and what the container holds.
struct TrainingStopped: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Copies trained weights and the optimizer state into the container, with the task record.
private func applyTraining(_ graph: Graph, state: OptimizerState, to container: inout Container, trainedNames: Set<String>,
                           task: String, classNames: [String], classes: Int) {
    var graph = graph
    for index in graph.parameters.indices where trainedNames.contains(graph.parameters[index].name) {
        graph.parameters[index].trainable = !graph.parameters[index].synthesized
    }
    container.graph = graph
    container.optimizerState = state
    let names = classNames.count == classes ? classNames : []
    let head = headParameters(of: graph)
    if container.tasks.isEmpty {
        container.tasks = [TaskRecord(name: task, classes: classes, classNames: names, head: head)]
    } else {
        container.tasks[0].name = task
        container.tasks[0].classes = classes
        container.tasks[0].classNames = names
        container.tasks[0].head = head
    }
}

/// The sentence saying what the output holds after a stop.
private func checkpointSentence(output: String, input: String, completed: Int, started: Int) -> String {
    if completed > started {
        return "\(output) holds the checkpoint of epoch \(completed); continue with lance-train \(output) --resume."
    }
    if started > 0 {
        return "nothing was written by this run; \(input) still holds the checkpoint of epoch \(started)."
    }
    return "nothing was written to \(output) by this run."
}

/// `3` from `epoch 3`.
private func epochNumber(_ scope: String) -> Int? {
    scope.hasPrefix("epoch ") ? Int(scope.dropFirst(6)) : nil
}

/// The name of the folder the data lives in (the folder itself when the path is one).
private func dataFolderName(_ path: String) -> String {
    var isDirectory: ObjCBool = false
    let url = URL(fileURLWithPath: path).standardizedFileURL
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
        return url.lastPathComponent
    }
    return url.deletingLastPathComponent().lastPathComponent
}

/// The preprocessing used when the container records none: direct resize to the model's input,
/// its channel count, no scaling (as lance-convert derives it).
private func derivedPreprocessing(for graph: Graph) -> Preprocessing {
    var result = Preprocessing(resize: .direct)
    if let dimensions = graph.inputs.first?.dimensions, dimensions.count == 4 {
        if case .fixed(let channels) = dimensions[1] { result.channels = channels }
        if case .fixed(let height) = dimensions[2], case .fixed(let width) = dimensions[3] { result.size = [height, width] }
    }
    return result
}

private func percent(_ fraction: Double) -> String { "\(String(fraction * 100, decimals: 2))%" }

/// The per-epoch progress line on stderr: redrawn in place on a terminal, plain lines every 10% otherwise.
final class TrainingProgress {
    let epoch: Int
    let epochs: Int
    let steps: Int
    private let terminal = isatty(STDERR_FILENO) != 0
    private let started = Date()
    private var lastPrinted = -1

    init(epoch: Int, of epochs: Int, steps: Int) {
        self.epoch = epoch
        self.epochs = epochs
        self.steps = steps
    }

    func update(step: Int, loss: Double, accuracy: Double, imagesPerSecond: Double, heldMiB: Double) {
        // The epoch's remaining steps at the mean pace of its steps so far.
        let remaining = Int((Date().timeIntervalSince(started) / Double(max(step, 1)) * Double(steps - step)).rounded())
        let text = "epoch \(epoch)/\(epochs): step \(step)/\(steps), loss \(String(loss, decimals: 4)), accuracy \(percent(accuracy)), "
            + "\(String(imagesPerSecond, decimals: 1)) images/s, \(String(heldMiB, decimals: 2)) MiB held for backward"
            + (step < steps ? ", \(remaining / 60):\(String(format: "%02d", remaining % 60)) left in the epoch" : "")
        if terminal {
            FileHandle.standardError.write(Data("\r\(text)\u{1B}[K".utf8))
        } else if step == steps || step * 10 / max(steps, 1) > lastPrinted {
            lastPrinted = step * 10 / max(steps, 1)
            printError(text)
        }
    }

    func finish() {
        if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
