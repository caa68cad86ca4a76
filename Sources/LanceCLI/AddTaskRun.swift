import ArgumentParser
import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceModel
import LanceRuntime
import LanceTrain

/// `lance-train --add-task`: a new task with its own head, trained so that the earlier tasks'
/// outputs do not change (method section 5.2), or with the naive and GPM baselines.
extension TrainCommand {
    func runAddTask(_ name: String) throws {
        let started = Date()
        let output = self.output ?? container
        var model = try ContainerFile.read(container)
        guard let calibration = model.calibration, let protection = calibration.protection, !model.tasks.isEmpty,
              model.tasks[0].protectedBases.isEmpty == false else {
            throw CommandError.dataMismatch(path: container, reason: "has no protected bases, which adding a task needs; convert the model with lance-convert MODEL --calibration DATA --protect -o OUT.lance")
        }
        if model.tasks.contains(where: { $0.name == name }) {
            throw CommandError.dataMismatch(path: container, reason: "already has a task named '\(name)' (tasks: \(model.tasks.map(\.name).joined(separator: ", "))); choose another name")
        }
        let selection = try selectClasses.map { try parseClassList($0, option: "--select-classes") }
        let preprocessing = model.preprocessing ?? Preprocessing(resize: .direct)
        let source = try openDataSource(data, preprocessing: preprocessing, selecting: selection)
        guard source.hasLabels else { throw CommandError.dataMismatch(path: data, reason: "has no labels; a task needs one class label per sample") }
        let dataClasses = source.classNames.count
        guard let classes else {
            throw ValidationError("--add-task needs --classes N, the new task's class count (the data has \(dataClasses))")
        }
        if classes > dataClasses {
            throw CommandError.dataMismatch(path: data, reason: "has \(dataClasses) classes, fewer than --classes \(classes); a task's head has exactly the classes of its data")
        }
        if classes < dataClasses {
            throw CommandError.dataMismatch(path: data, reason: "has \(dataClasses) classes, more than --classes \(classes)")
        }
        let names = try classNames.map { text -> [String] in
            let list = text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            guard list.count == classes else { throw ValidationError("--class-names gives \(list.count) names for \(classes) classes") }
            return list
        } ?? source.classNames
        let evalSource = try evalData.map { try openDataSource($0, preprocessing: preprocessing, selecting: selection) }
        if let evalSource, let evalData, !evalSource.hasLabels || evalSource.classNames.count > classes {
            throw CommandError.dataMismatch(path: evalData, reason: "needs labels of the task's \(classes) classes")
        }

        let shared = try sharedLayers(of: model, path: container)
        let protected = Dictionary(uniqueKeysWithValues: shared.map { ($0.node, protectedBasis(of: model, layer: $0.node)) })
        if let missing = shared.first(where: { protected[$0.node] == nil }) {
            throw CommandError.dataMismatch(path: container, reason: "layer '\(missing.node)' has no protected basis; convert again with --protect")
        }
        let taskIndex = model.tasks.count
        let threshold = protection.threshold(forTask: taskIndex)
        let batch = batchSize ?? calibration.batchSize
        let perEpoch = min(limit ?? source.count, source.count)
        guard perEpoch >= batch else {
            throw CommandError.dataMismatch(path: data, reason: "\(perEpoch) samples are fewer than one batch of \(batch)")
        }
        let method = self.method
        let decay = weightDecay ?? 0
        if decay != 0 && method != .naive {
            throw ValidationError("--weight-decay must be 0 when adding a task with \(method.rawValue): weight decay shrinks the weights along the protected directions too")
        }

        // The task's graph: the shared layers with a new head; shared biases stay fixed.
        var graph = try LanceTrain.replaceHead(in: model.graph, classes: classes, seed: seed)
        for index in graph.parameters.indices { graph.parameters[index].trainable = false }
        guard let head = try graph.trainedLayers(.last(0)).first(where: \.isHead) else {
            throw CommandError.dataMismatch(path: container, reason: "the model has no classifier head")
        }
        let nodes = Dictionary(graph.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let frozenBiases = Set(shared.compactMap { nodes[$0.node]?.inputs.dropFirst(2).first })
        let epochCount = epochs ?? 5
        let augmentation = flip == true ? HorizontalFlip(seed: seed) : nil

        // What the shared layers keep, and the bases they train through.
        let trainingMethod: TrainingMethod
        var projections: [String: (basis: Tensor, featuresFirst: Bool)] = [:]
        var basesNote = ""
        switch method {
        case .lance:
            let iterator = try BatchIterator(source: source, batchSize: batch, shuffleSeed: seed, dropLast: true, limit: perEpoch)
            let stream = BatchStream(iterator) { _ in }
            let progress = ProgressLine(label: "task bases", total: iterator.batchCount, unit: "batches")
            let grams: [ModeGramAccumulator]
            do {
                grams = try accumulateFeatureGrams(graph: graph, layers: shared, batches: stream) { done in progress.update(done, rate: 0, rateUnit: "") }
            } catch {
                if let dataError = stream.error { throw dataError }
                throw error
            }
            progress.finish()
            var layers: [LayerBases] = []
            for (layer, gram) in zip(shared, grams) {
                layers.append(try taskBases(layer: layer, grams: gram, protected: protected[layer.node]!, energy: energy ?? 0.95,
                                            featureThreshold: threshold))
            }
            basesNote = layers.map { "\($0.layer) [\($0.modes.map { String($0.rank) }.joined(separator: ","))]" }.joined(separator: ", ")
            trainingMethod = .lance(CalibrationRecord(energy: energy ?? 0.95, batchSize: batch, batches: grams.first?.batches ?? 0,
                                                      accumulation: GramAccumulation.plainSum.rawValue, layerRule: calibration.layerRule,
                                                      dataDescription: source.sampleDescription, dataFingerprint: "", layers: layers))
        case .gpm:
            for layer in shared {
                guard let node = nodes[layer.node] else { continue }
                projections[node.inputs[1]] = (protected[layer.node]!!, FeatureView.featuresFirst(node.operation))
            }
            trainingMethod = .full
        case .naive:
            trainingMethod = .full
        case .full, .hosvd:
            throw ValidationError("--add-task trains with --method lance (orthogonal subspaces), naive (no protection) or gpm (gradient projection)")
        }
        let configuration = TrainerConfiguration(
            optimizer: .sgd(momentum: momentum ?? 0, weightDecay: decay), learningRate: lr ?? 0.01,
            scheduleLength: epochCount, maxGradientNorm: (clip ?? 0) > 0 ? clip : nil)
        var trainer = try Trainer(graph: graph, layers: shared + [head], method: trainingMethod, configuration: configuration,
                                  frozenParameters: frozenBiases)
        trainer.gradientProjections = projections
        let projectionBytes = method == .gpm ? shared.reduce(0) { total, layer in
            let d = protected[layer.node]!!.shape[0]
            return total + d * d * MemoryLayout<Float>.size
        } : 0
        print("adding task '\(name)' (task \(taskIndex), \(classes) classes) with \(method.rawValue): shared layers "
              + shared.map(\.node).joined(separator: ", ") + ", batch \(batch), \(perEpoch / batch) steps per epoch, \(epochCount) epochs, "
              + "sgd η₀ \(configuration.learningRate) momentum \(momentum ?? 0), ε_cl \(threshold)"
              + (augmentation != nil ? ", random horizontal flips" : "")
              + (basesNote.isEmpty ? "" : "; ranks (batch, feature, position) \(basesNote)"))

        var best: (epoch: Int, score: Double, graph: Graph)?
        var maxTrainedBytes = 0, maxOtherBytes = 0
        for epoch in 1...epochCount {
            let iterator = try BatchIterator(source: source, batchSize: batch, shuffleSeed: seed &+ UInt64(epoch), dropLast: true, limit: perEpoch)
            let progress = TrainingProgress(epoch: epoch, of: epochCount, steps: iterator.batchCount)
            let epochStart = Date()
            var lossSum = 0.0, correct = 0, seen = 0, step = 0
            for start in stride(from: 0, through: iterator.order.count - batch, by: batch) {
                let result: StepResult
                let labels: [Int]
                do {
                    // The frozen part runs slice by slice, as in fine-tuning.
                    let samples = Array(iterator.order[start..<(start + batch)])
                    let frozen = try slicedFrozenFeatures(trainer, source: source, samples: samples, flip: augmentation, epoch: epoch)
                    labels = frozen.labels
                    result = try trainer.step(features: frozen.features, labels: labels)
                } catch let error as TrainingError {
                    throw TrainingStopped(message: "adding task '\(name)' stopped in epoch \(epoch), step \(step + 1): \(error.description). Nothing was written; \(container) is unchanged.")
                }
                step += 1
                lossSum += Double(result.loss) * Double(labels.count)
                correct += result.correct
                seen += labels.count
                maxTrainedBytes = max(maxTrainedBytes, result.memory.trainedLayerBytes)
                maxOtherBytes = max(maxOtherBytes, result.memory.otherBytes)
                progress.update(step: step, loss: lossSum / Double(seen), accuracy: Double(correct) / Double(seen),
                                imagesPerSecond: Double(seen) / max(Date().timeIntervalSince(epochStart), 1e-9),
                                heldMiB: Double(result.memory.totalBytes + projectionBytes) / bytesPerMiB)
            }
            progress.finish()
            trainer.finishEpoch()
            let trainLoss = lossSum / Double(max(seen, 1))
            let evalAccuracy = try evalSource.map { try accuracy(of: trainer.graph, on: $0) }
            print("epoch \(epoch)/\(epochCount): loss \(String(trainLoss, decimals: 4)), accuracy \(String(100 * Double(correct) / Double(max(seen, 1)), decimals: 2))%"
                  + (evalAccuracy.map { ", eval accuracy \(String(100 * $0, decimals: 2))%" } ?? ""))
            guard trainLoss.isFinite else {
                throw TrainingStopped(message: "adding task '\(name)' stopped after epoch \(epoch): the loss is not finite. Nothing was written; \(container) is unchanged.")
            }
            let score = evalAccuracy ?? -trainLoss
            if best == nil || score > best!.score { best = (epoch, score, trainer.graph) }
        }
        guard let best else { return }

        // The protected basis grows by the new task's subspace (LANCE and GPM; GPM's update).
        var newDirections: [String: Tensor] = [:]
        if method != .naive {
            let batches = min(protectBatches, perEpoch / batch)
            let stream = BatchStream(try BatchIterator(source: source, batchSize: batch, shuffleSeed: seed, dropLast: true,
                                                       limit: batches * batch)) { _ in }
            let grams: [ModeGramAccumulator]
            do {
                grams = try accumulateFeatureGrams(graph: best.graph, layers: shared, batches: stream)
            } catch {
                if let dataError = stream.error { throw dataError }
                throw error
            }
            for (layer, gram) in zip(shared, grams) {
                newDirections[layer.node] = try protectedDirections(featureGram: gram.grams[1], dimension: gram.shape[1],
                                                                    protected: protected[layer.node]!, threshold: threshold)
            }
        }

        // The container: shared weights updated, the first task's head kept in the graph, the new head in the registry.
        let sharedWeights = Set(shared.compactMap { nodes[$0.node]?.inputs[1] })
        for index in model.graph.parameters.indices where sharedWeights.contains(model.graph.parameters[index].name) {
            model.graph.parameters[index].tensor = best.graph.parametersByName[model.graph.parameters[index].name]!.tensor
        }
        let headParameters = [ReplacedHead.weightName, ReplacedHead.biasName].compactMap { best.graph.parametersByName[$0] }
        let evalAccuracy = evalSource != nil ? best.score : nil
        var metrics: [String: Double] = [
            "epochs": Double(epochCount),
            "best_epoch": Double(best.epoch),
            "backward_bytes_trained_layers": Double(maxTrainedBytes),
            "backward_bytes_other": Double(maxOtherBytes),
            "projection_bytes": Double(projectionBytes),
            "peak_resident_mib": peakResidentMiB(),
            "seconds": Date().timeIntervalSince(started),
        ]
        if let evalAccuracy { metrics["accuracy"] = evalAccuracy }
        model.tasks.append(TaskRecord(name: name, classes: classes, classNames: names, head: headParameters,
                                      protectedBases: newDirections, metrics: metrics))
        model.metrics.append(Metric(name: "method_\(method.rawValue)", scope: "task \(name)", value: 1))
        try ContainerFile.write(model, to: output, halfPrecision: storesHalfPrecision(container))
        let grown = shared.map { layer in
            "\(layer.node) +\(newDirections[layer.node]?.shape[1] ?? 0) → \((protected[layer.node]!!.shape[1]) + (newDirections[layer.node]?.shape[1] ?? 0))/\(protected[layer.node]!!.shape[0])"
        }.joined(separator: ", ")
        print("wrote \(output): task '\(name)' with the weights of epoch \(best.epoch)"
              + (evalAccuracy.map { ", eval accuracy \(String(100 * $0, decimals: 2))%" } ?? "")
              + (method == .naive ? "" : "; protected directions \(grown)"))
        print("done in \(String(Date().timeIntervalSince(started), decimals: 1)) s: held for backward \(String(Double(maxTrainedBytes) / bytesPerMiB, decimals: 3)) MiB by the trained layers"
              + (projectionBytes > 0 ? " + \(String(Double(projectionBytes) / bytesPerMiB, decimals: 3)) MiB projection matrices" : "")
              + ", peak resident memory \(String(peakResidentMiB(), decimals: 1)) MiB")
    }

    /// Top-1 accuracy of a graph on a labelled source (forward only).
    private func accuracy(of graph: Graph, on source: any DataSource) throws -> Double {
        let session = InferenceSession(graph: graph)
        var correct = 0, seen = 0
        try forEachEvaluationSlice(of: source, limit: limit) { slice in
            let logits = try session.run(slice.images)
            correct += zip(logits.argmaxPerRow(), slice.labels).filter { $0 == $1 }.count
            seen += slice.labels.count
            return true
        }
        return Double(correct) / Double(max(seen, 1))
    }
}
