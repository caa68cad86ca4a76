import LanceCore
import LanceModel
import LanceNN
import LanceRuntime
import LanceTestSupport
import LanceTrain
import Testing

/// A small CNN: conv1 (3→5, 3×3, pad 1) → relu → conv2 (5→4, 3×3, stride 2, pad 1) → batch norm
/// (frozen) → clip(0, 6) → global average pool → flatten → gemm (4→3, `transposeB`).
enum SmallNetwork {
    static let batch = 4
    static let inputShape = [batch, 3, 6, 6]

    static func graph(seed: UInt64 = 1) -> Graph {
        let conv1 = Convolution(window: WindowGeometry(kernelSize: [3, 3], padding: .explicit(top: 1, left: 1, bottom: 1, right: 1)))
        let conv2 = Convolution(window: WindowGeometry(kernelSize: [3, 3], strides: [2, 2],
                                                       padding: .explicit(top: 1, left: 1, bottom: 1, right: 1)))
        let nodes = [
            Node(name: "conv1", operation: .convolution(conv1), inputs: ["x", "w1", "b1"], output: "c1"),
            Node(name: "relu1", operation: .activation(.relu), inputs: ["c1"], output: "r1"),
            Node(name: "conv2", operation: .convolution(conv2), inputs: ["r1", "w2", "b2"], output: "c2"),
            Node(name: "bn2", operation: .batchNormalization(epsilon: 1e-5),
                 inputs: ["c2", "bn_scale", "bn_bias", "bn_mean", "bn_variance"], output: "n2"),
            Node(name: "clip2", operation: .activation(.clip(minimum: 0, maximum: 6)), inputs: ["n2"], output: "r2"),
            Node(name: "pool", operation: .globalAveragePool, inputs: ["r2"], output: "p"),
            Node(name: "flatten", operation: .flatten(axis: 1), inputs: ["p"], output: "f"),
            Node(name: "fc", operation: .gemm(Gemm(transposeB: true)), inputs: ["f", "wf", "bf"], output: "logits"),
        ]
        let parameters = [
            Parameter(name: "w1", tensor: .random(shape: [5, 3, 3, 3], in: -0.5...0.5, seed: seed)),
            Parameter(name: "b1", tensor: .random(shape: [5], in: -0.2...0.2, seed: seed + 1)),
            Parameter(name: "w2", tensor: .random(shape: [4, 5, 3, 3], in: -0.4...0.4, seed: seed + 2)),
            Parameter(name: "b2", tensor: .random(shape: [4], in: -0.2...0.2, seed: seed + 3)),
            Parameter(name: "bn_scale", tensor: .random(shape: [4], in: 0.5...1.5, seed: seed + 4)),
            Parameter(name: "bn_bias", tensor: .random(shape: [4], in: 0...1, seed: seed + 5)),
            Parameter(name: "bn_mean", tensor: .random(shape: [4], in: -0.1...0.1, seed: seed + 6)),
            Parameter(name: "bn_variance", tensor: .random(shape: [4], in: 0.5...1.5, seed: seed + 7)),
            Parameter(name: "wf", tensor: .random(shape: [3, 4], in: -1...1, seed: seed + 8)),
            Parameter(name: "bf", tensor: .random(shape: [3], in: -0.1...0.1, seed: seed + 9)),
        ]
        return Graph(name: "small", inputs: [ValueInfo(name: "x", dimensions: [.symbolic("N"), .fixed(3), .fixed(6), .fixed(6)])],
                     outputs: [ValueInfo(name: "logits", dimensions: [.symbolic("N"), .fixed(3)])],
                     nodes: nodes, parameters: parameters, provenance: Provenance(sourceFormat: "test", producer: "", formatVersion: ""))
    }

    static let trainedNames = ["conv1", "conv2", "fc"]

    static func layers(_ graph: Graph) throws -> [TrainedLayer] {
        try graph.trainedLayers(.names(trainedNames))
    }

    static func images(seed: UInt64) -> Tensor { .random(shape: inputShape, in: -1...1, seed: seed) }

    static let labels = [0, 2, 1, 2]

    /// Bases of the three layers from calibration batches (`energy` 1: full rank).
    static func calibration(_ graph: Graph, energy: Float) throws -> CalibrationRecord {
        let layers = try layers(graph)
        let batches = (0..<3).map { images(seed: 100 + UInt64($0)) }
        let result = try calibrateBases(graph: graph, layers: layers, batches: batches, options: CalibrationOptions(energy: energy))
        return CalibrationRecord(energy: energy, batchSize: result.batchSize, batches: result.batches, accumulation: "plain-sum",
                                 layerRule: trainedNames.joined(separator: ","), dataDescription: "random", dataFingerprint: "",
                                 layers: result.layers)
    }

    /// The value `name` computed by a forward pass.
    static func value(_ name: String, of graph: Graph, images: Tensor) throws -> Tensor {
        var capture = graph
        capture.outputs = [ValueInfo(name: name, dimensions: nil)]
        return try InferenceSession(graph: capture).run(images)
    }
}

/// Two pointwise convolutions in a row: convA (6→5, 1×1) → convB (5→7, 1×1) → clip(0, 6) → global
/// average pool → flatten → gemm (7→3). Under LANCE the gradient of convA's output is never formed
/// (`lowRankPointwiseGradients`) unless it is kept.
enum PointwisePair {
    static let inputShape = [4, 6, 5, 5]

    static func graph() -> Graph {
        let pointwise = Convolution(window: WindowGeometry(kernelSize: [1, 1]))
        let nodes = [
            Node(name: "convA", operation: .convolution(pointwise), inputs: ["x", "wa", "ba"], output: "ya"),
            Node(name: "convB", operation: .convolution(pointwise), inputs: ["ya", "wb", "bb"], output: "yb"),
            Node(name: "clip", operation: .activation(.clip(minimum: 0, maximum: 6)), inputs: ["yb"], output: "r"),
            Node(name: "pool", operation: .globalAveragePool, inputs: ["r"], output: "p"),
            Node(name: "flatten", operation: .flatten(axis: 1), inputs: ["p"], output: "f"),
            Node(name: "fc", operation: .gemm(Gemm(transposeB: true)), inputs: ["f", "wf", "bf"], output: "logits"),
        ]
        let parameters = [
            Parameter(name: "wa", tensor: .random(shape: [5, 6, 1, 1], in: -0.5...0.5, seed: 21)),
            Parameter(name: "ba", tensor: .random(shape: [5], in: -0.2...0.2, seed: 22)),
            Parameter(name: "wb", tensor: .random(shape: [7, 5, 1, 1], in: -0.5...0.5, seed: 23)),
            Parameter(name: "bb", tensor: .random(shape: [7], in: 0...0.5, seed: 24)),
            Parameter(name: "wf", tensor: .random(shape: [3, 7], in: -1...1, seed: 25)),
            Parameter(name: "bf", tensor: .random(shape: [3], in: -0.1...0.1, seed: 26)),
        ]
        return Graph(name: "pointwise-pair", inputs: [ValueInfo(name: "x", dimensions: [.symbolic("N"), .fixed(6), .fixed(5), .fixed(5)])],
                     outputs: [ValueInfo(name: "logits", dimensions: [.symbolic("N"), .fixed(3)])],
                     nodes: nodes, parameters: parameters, provenance: Provenance(sourceFormat: "test", producer: "", formatVersion: ""))
    }

    static func images(seed: UInt64) -> Tensor { .random(shape: inputShape, in: -1...1, seed: seed) }
}

func relativeError(_ actual: Tensor, _ expected: Tensor) -> Float {
    let scale = expected.scalars.map(abs).max() ?? 0
    return actual.maxAbsoluteDifference(to: expected) / max(scale, 1e-12)
}

@Suite("Training graph: gradients")
struct TrainingGradientTests {
    @Test("under full, every trained parameter's gradient equals central finite differences of the loss (with and without the batch normalization's scale and bias)",
          arguments: [false, true])
    func fullMatchesFiniteDifferences(trainBatchNormalization: Bool) throws {
        let graph = SmallNetwork.graph()
        var runner = try TrainingGraph(graph: graph, layers: try SmallNetwork.layers(graph), method: .full,
                                       trainBatchNormalization: trainBatchNormalization)
        #expect(runner.trainedParameterNames == (trainBatchNormalization ? ["w1", "b1", "w2", "b2", "bn_scale", "bn_bias", "wf", "bf"]
                                                                          : ["w1", "b1", "w2", "b2", "wf", "bf"]))
        let images = SmallNetwork.images(seed: 7)
        let labels = SmallNetwork.labels
        let analytic = try runner.lossAndGradients(images: images, labels: labels).gradients.parameterGradients
        #expect(Set(analytic.keys) == Set(runner.trainedParameterNames))
        func loss(_ runner: TrainingGraph) throws -> Double {
            let logits = try runner.forward(images: images).logits
            return Double(softmaxCrossEntropy(logits: logits, labels: labels).loss)
        }
        let step: Float = 1e-3
        #expect(analytic.values.allSatisfy { $0.scalars.contains { abs($0) > 1e-2 } }, "gradients too small to test")
        for name in runner.trainedParameterNames {
            let original = runner.parameter(name)!
            let gradient = analytic[name]!
            var worst: Float = 0
            for index in 0..<original.count {
                var plus = original.scalars, minus = original.scalars
                plus[index] += step
                minus[index] -= step
                runner.setParameter(name, to: Tensor(shape: original.shape, scalars: plus))
                let up = try loss(runner)
                runner.setParameter(name, to: Tensor(shape: original.shape, scalars: minus))
                let down = try loss(runner)
                let numeric = Float((up - down) / (2 * Double(step)))
                // float32 losses: the central difference is good to about 1e-4 at this step.
                worst = max(worst, abs(numeric - gradient.scalars[index]) / (1e-3 + 1e-2 * abs(numeric)))
            }
            runner.setParameter(name, to: original)
            #expect(worst <= 1, "\(name): worst difference \(worst) of the tolerance 1e-3 + 1e-2·|numeric|")
        }
    }

    @Test("a trained batch normalization keeps its input, and its gradients under lance equal full backprop's")
    func trainedBatchNormalization() throws {
        let graph = SmallNetwork.graph()
        let layers = try SmallNetwork.layers(graph)
        let images = SmallNetwork.images(seed: 7)
        let full = try TrainingGraph(graph: graph, layers: layers, method: .full, trainBatchNormalization: true)
        let lance = try TrainingGraph(graph: graph, layers: layers, method: .lance(try SmallNetwork.calibration(graph, energy: 0.8)),
                                      trainBatchNormalization: true)
        let expected = try full.lossAndGradients(images: images, labels: SmallNetwork.labels).gradients.parameterGradients
        let actual = try lance.lossAndGradients(images: images, labels: SmallNetwork.labels).gradients.parameterGradients
        // The normalization follows the last convolution, whose output is exact under lance too.
        for name in ["bn_scale", "bn_bias", "wf", "bf"] {
            #expect(relativeError(actual[name]!, expected[name]!) < 1e-5, "\(name)")
        }
        // It keeps conv2's output (4×4×3×3 floats) for its scale's gradient.
        let frozen = try TrainingGraph(graph: graph, layers: layers, method: .full).forward(images: images).memory
        let trained = try full.forward(images: images).memory
        #expect(trained.otherBytes - frozen.otherBytes == 4 * 4 * 3 * 3 * 4)
        // A model whose suffix has no batch normalization says so.
        let pair = PointwisePair.graph()
        #expect(throws: TrainingError.self) {
            try TrainingGraph(graph: pair, layers: try pair.trainedLayers(.names(["convB", "fc"])), method: .full, trainBatchNormalization: true)
        }
    }

    @Test("under lance with full-rank bases, the parameter gradients equal full backprop's")
    func fullRankLanceEqualsFull() throws {
        let graph = SmallNetwork.graph()
        let layers = try SmallNetwork.layers(graph)
        let calibration = try SmallNetwork.calibration(graph, energy: 1)
        for layer in calibration.layers {
            #expect(layer.modes.map(\.rank) == layer.inputShape, "\(layer.layer) is not full rank")
        }
        let images = SmallNetwork.images(seed: 8)
        let full = try TrainingGraph(graph: graph, layers: layers, method: .full)
            .lossAndGradients(images: images, labels: SmallNetwork.labels)
        for compressHead in [false, true] {
            let lance = try TrainingGraph(graph: graph, layers: layers, method: .lance(calibration), compressHead: compressHead)
                .lossAndGradients(images: images, labels: SmallNetwork.labels)
            #expect(lance.loss == full.loss)
            for (name, expected) in full.gradients.parameterGradients {
                let actual = try #require(lance.gradients.parameterGradients[name])
                #expect(relativeError(actual, expected) < 1e-4, "\(name) (compressHead \(compressHead))")
            }
        }
    }

    @Test("under lance with low-rank bases, dW is the dense gradient on the reconstructed input, and dX stays exact")
    func lowRankLance() throws {
        let graph = SmallNetwork.graph()
        let layers = try SmallNetwork.layers(graph)
        let calibration = try SmallNetwork.calibration(graph, energy: 0.7)
        let conv1Bases = try #require(calibration.layers.first { $0.layer == "conv1" })
        let conv2Bases = try #require(calibration.layers.first { $0.layer == "conv2" })
        #expect(conv2Bases.modes.map(\.rank) != conv2Bases.inputShape, "energy 0.7 should truncate some mode")
        let images = SmallNetwork.images(seed: 9)
        let kept: Set<String> = ["c1", "r1", "c2"]
        let full = try TrainingGraph(graph: graph, layers: layers, method: .full)
            .lossAndGradients(images: images, labels: SmallNetwork.labels, keepingValueGradients: kept)
        let lance = try TrainingGraph(graph: graph, layers: layers, method: .lance(calibration))
            .lossAndGradients(images: images, labels: SmallNetwork.labels, keepingValueGradients: kept)
        // The forward is exact, so the loss and every value gradient are those of full backprop.
        #expect(lance.loss == full.loss)
        for name in kept {
            let actual = try #require(lance.gradients.valueGradients[name]), expected = try #require(full.gradients.valueGradients[name])
            #expect(relativeError(actual, expected) < 1e-6, "∂loss/∂\(name)")
        }
        // Exact gradients where only dY enters: the biases and the (uncompressed) head.
        for name in ["b1", "b2", "wf", "bf"] {
            #expect(relativeError(lance.gradients.parameterGradients[name]!, full.gradients.parameterGradients[name]!) < 1e-6, "\(name)")
        }
        // dW = conv2d weight gradient on X̂ = S ×₀U₀ ×₁U₁ ×₂U₂ ×₃U₃.
        let conv2Node = graph.nodes.first { $0.name == "conv2" }!
        guard case .convolution(let conv2) = conv2Node.operation else { Issue.record("conv2 is not a convolution"); return }
        let r1 = try SmallNetwork.value("r1", of: graph, images: images)
        let reconstructed2 = TuckerCore(projecting: r1, bases: conv2Bases.modes).reconstructed()
        let expected2 = conv2dWeightGradient(input: reconstructed2, outputGradient: full.gradients.valueGradients["c2"]!,
                                             weightShape: [4, 5, 3, 3], convolution: conv2)
        #expect(relativeError(lance.gradients.parameterGradients["w2"]!, expected2) < 1e-4)
        // ... and it differs from the exact gradient (the bases do truncate).
        #expect(relativeError(lance.gradients.parameterGradients["w2"]!, full.gradients.parameterGradients["w2"]!) > 1e-3)
        guard case .convolution(let conv1) = graph.nodes[0].operation else { return }
        let reconstructed1 = TuckerCore(projecting: images, bases: conv1Bases.modes).reconstructed()
        let expected1 = conv2dWeightGradient(input: reconstructed1, outputGradient: full.gradients.valueGradients["c1"]!,
                                             weightShape: [5, 3, 3, 3], convolution: conv1)
        #expect(relativeError(lance.gradients.parameterGradients["w1"]!, expected1) < 1e-4)
    }

    @Test("two pointwise convolutions: the gradients without forming the first one's output gradient equal those that form it",
          arguments: ["lance", "hosvd"])
    func deferredPointwiseGradient(_ methodName: String) throws {
        let graph = PointwisePair.graph()
        let layers = try graph.trainedLayers(.names(["convA", "convB", "fc"]))
        let method: TrainingMethod
        if methodName == "lance" {
            let batches = (0..<3).map { PointwisePair.images(seed: 200 + UInt64($0)) }
            let result = try calibrateBases(graph: graph, layers: layers, batches: batches, options: CalibrationOptions(energy: 0.7))
            method = .lance(CalibrationRecord(energy: 0.7, batchSize: result.batchSize, batches: result.batches,
                                              accumulation: "plain-sum", layerRule: "convA,convB,fc", dataDescription: "random",
                                              dataFingerprint: "", layers: result.layers))
        } else {
            method = .hosvd(energy: 0.7)
        }
        let runner = try TrainingGraph(graph: graph, layers: layers, method: method)
        let images = PointwisePair.images(seed: 11)
        let labels = [0, 2, 1, 2]
        let deferred = try runner.lossAndGradients(images: images, labels: labels).gradients.parameterGradients
        // Keeping ∂loss/∂ya makes the backward pass form it, and convA's gradients come from it.
        let formed = try runner.lossAndGradients(images: images, labels: labels, keepingValueGradients: ["ya"]).gradients
        #expect(formed.valueGradients["ya"] != nil)
        #expect(Set(deferred.keys) == ["wa", "ba", "wb", "bb", "wf", "bf"])
        for (name, expected) in formed.parameterGradients {
            let actual = try #require(deferred[name])
            #expect(expected.scalars.contains { abs($0) > 1e-3 }, "\(name): gradient too small to compare")
            #expect(relativeError(actual, expected) < 1e-5, "\(name): relative error \(relativeError(actual, expected))")
        }
    }

    @Test("under hosvd the gradient is the dense one on the batch's own reconstruction")
    func hosvdGradient() throws {
        let graph = SmallNetwork.graph()
        let images = SmallNetwork.images(seed: 10)
        let result = try TrainingGraph(graph: graph, layers: try SmallNetwork.layers(graph), method: .hosvd(energy: 0.8))
            .lossAndGradients(images: images, labels: SmallNetwork.labels, keepingValueGradients: ["c2"])
        let r1 = try SmallNetwork.value("r1", of: graph, images: images)
        let compressed = try hosvdCompress(r1, energy: 0.8)
        guard case .convolution(let conv2) = graph.nodes[2].operation else { return }
        let expected = conv2dWeightGradient(input: compressed.reconstructed(), outputGradient: result.gradients.valueGradients["c2"]!,
                                            weightShape: [4, 5, 3, 3], convolution: conv2)
        #expect(relativeError(result.gradients.parameterGradients["w2"]!, expected) < 1e-4)
        let layerBytes = result.memory.layers.first { $0.layer == "conv2" }!.bytes
        #expect(layerBytes == ActivationMemory(inputShape: r1.shape, compressed: compressed).lanceBytes)
    }

    @Test("bytes held for backward: core plus factors under lance, numel(X)·4 under full, masks for activations")
    func memoryAccounting() throws {
        let graph = SmallNetwork.graph()
        let layers = try SmallNetwork.layers(graph)
        let calibration = try SmallNetwork.calibration(graph, energy: 0.7)
        let images = SmallNetwork.images(seed: 11)
        let full = try TrainingGraph(graph: graph, layers: layers, method: .full).forward(images: images).memory
        let lance = try TrainingGraph(graph: graph, layers: layers, method: .lance(calibration)).forward(images: images).memory
        #expect(full.layers.map(\.layer) == SmallNetwork.trainedNames)
        // full: conv1 keeps X [4, 3, 6, 6], conv2 keeps r1 [4, 5, 6, 6], the head keeps f [4, 4].
        #expect(full.layers.map(\.bytes) == [4 * 3 * 6 * 6 * 4, 4 * 5 * 6 * 6 * 4, 4 * 4 * 4])
        for (record, bases) in zip(lance.layers.prefix(2), calibration.layers.prefix(2)) {
            let core = bases.modes.reduce(1) { $0 * $1.rank }
            let factors = bases.modes.reduce(0) { $0 + $1.dimension * $1.rank }
            #expect(record.bytes == (core + factors) * 4, "\(record.layer)")
        }
        #expect(lance.layers[2].bytes == 4 * 4 * 4)  // the head keeps its input by default
        // Other saved tensors: one bit per element for relu1 (4·5·6·6 = 720 → 12 words) and clip2 (4·4·3·3 = 144 → 3 words).
        #expect(full.otherBytes == (12 + 3) * 8)
        #expect(lance.otherBytes == full.otherBytes)
        #expect(lance.totalBytes < full.totalBytes)
    }

    @Test("the lance batch must equal the calibration batch")
    func batchMismatch() throws {
        let graph = SmallNetwork.graph()
        let runner = try TrainingGraph(graph: graph, layers: try SmallNetwork.layers(graph),
                                       method: .lance(try SmallNetwork.calibration(graph, energy: 0.7)))
        #expect(throws: TrainingError.self) { try runner.forward(images: .random(shape: [3, 3, 6, 6], seed: 1)) }
    }
}
