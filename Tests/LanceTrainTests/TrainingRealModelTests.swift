import LanceCore
import LanceModel
import LanceONNX
import LanceTestSupport
import LanceTrain
import Testing

@Suite("Training the real MobileNetV2",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models (or $LANCE_SHARED); they are missing"))
struct TrainingRealModelTests {
    @Test("last:2 + a new 5-class head at 64×64, batch 4: lance and full steps are finite and move the parameters")
    func mobileNetV2() throws {
        var graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        graph.inputs[0].dimensions = [.symbolic("N"), .fixed(3), .fixed(64), .fixed(64)]
        graph = try replaceHead(in: graph, classes: 5, seed: 42)
        let layers = try graph.trainedLayers(.last(2))
        #expect(layers.count == 3 && layers.last?.isHead == true)
        let batches = (0..<2).map { Tensor.random(shape: [4, 3, 64, 64], in: -2...2, seed: 300 + UInt64($0)) }
        let labels = [0, 3, 1, 4]
        let result = try calibrateBases(graph: graph, layers: layers, batches: batches, options: CalibrationOptions(energy: 0.7))
        let calibration = CalibrationRecord(energy: 0.7, batchSize: 4, batches: 2, accumulation: "plain-sum", layerRule: "last:2",
                                            dataDescription: "random", dataFingerprint: "", layers: result.layers)

        var lance = try Trainer(graph: graph, layers: layers, method: .lance(calibration),
                                configuration: TrainerConfiguration(scheduleLength: 1))
        var steps: [StepResult] = []
        for batch in batches { steps.append(try lance.step(images: batch, labels: labels)) }
        for step in steps {
            #expect(step.loss.isFinite && step.gradientNorm.isFinite && step.gradientNorm > 0)
            #expect(step.learningRate == 0.05)
            #expect(step.peakResidentBytes > 0)
        }
        let before = graph.parametersByName, after = lance.graph.parametersByName
        for name in lance.runner.trainedParameterNames {
            #expect(before[name]!.tensor != after[name]!.tensor, "\(name) did not move")
        }
        // Frozen parameters stay as they were.
        let frozen = graph.parameters.map(\.name).filter { !lance.runner.trainedParameterNames.contains($0) }
        #expect(frozen.allSatisfy { before[$0] == after[$0] })
        // The convolutions keep core plus factors; the head keeps its 4 × 1280 input.
        let memory = steps[0].memory
        for (record, bases) in zip(memory.layers.prefix(2), calibration.layers.prefix(2)) {
            let core = bases.modes.reduce(1) { $0 * $1.rank }
            let factors = bases.modes.reduce(0) { $0 + $1.dimension * $1.rank }
            #expect(record.bytes == (core + factors) * 4, "\(record.layer)")
        }
        #expect(memory.layers[2].bytes == 4 * 1280 * 4)

        var full = try Trainer(graph: graph, layers: layers, method: .full, configuration: TrainerConfiguration(scheduleLength: 1))
        let fullStep = try full.step(images: batches[0], labels: labels)
        #expect(fullStep.loss == steps[0].loss)  // the forward is exact under both
        // full keeps the inputs [4, 960, 2, 2] and [4, 320, 2, 2] of the two convolutions.
        #expect(fullStep.memory.layers.map(\.bytes) == [4 * 960 * 2 * 2 * 4, 4 * 320 * 2 * 2 * 4, 4 * 1280 * 4])
        let evaluation = try lance.evaluate(images: batches[1], labels: labels)
        #expect(evaluation.loss.isFinite && evaluation.logits.shape == [4, 5])
    }

    @Test("the frozen part run slice by slice gives the whole batch's features exactly, reading each sample once")
    func frozenFeaturesInSlices() throws {
        var graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        graph.inputs[0].dimensions = [.symbolic("N"), .fixed(3), .fixed(64), .fixed(64)]
        graph = try replaceHead(in: graph, classes: 5, seed: 42)
        let runner = try TrainingGraph(graph: graph, layers: try graph.trainedLayers(.last(2)), method: .full)
        let batchSize = TrainingGraph.frozenSliceSize * 2 + 1  // two whole slices and one of a single sample
        let images = Tensor.random(shape: [batchSize, 3, 64, 64], in: -2...2, seed: 310)
        let whole = try runner.frozenFeatures(images: images)
        var requested: [Range<Int>] = []
        let sliced = try runner.frozenFeatures(batchSize: batchSize) { range throws(TrainingError) in
            requested.append(range)
            return images.slice(batch: range)
        }
        #expect(requested.count == 3 && requested.allSatisfy { $0.count <= TrainingGraph.frozenSliceSize })
        #expect(requested.map(\.lowerBound) == [0, TrainingGraph.frozenSliceSize, 2 * TrainingGraph.frozenSliceSize])
        #expect(requested.last?.upperBound == batchSize)
        #expect(Set(sliced.keys) == Set(runner.frozenFeatureNames) && Set(whole.keys) == Set(sliced.keys))
        for name in runner.frozenFeatureNames {
            #expect(sliced[name]!.shape == whole[name]!.shape && sliced[name]!.shape.first == batchSize)
            #expect(sliced[name]! == whole[name]!, "\(name) differs when computed in slices")
        }
        // A slice of the wrong size is a clear error.
        #expect(throws: TrainingError.self) {
            _ = try runner.frozenFeatures(batchSize: batchSize) { range throws(TrainingError) in images.slice(batch: 0..<1) }
        }
    }
}
