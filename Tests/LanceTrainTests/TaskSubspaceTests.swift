import LanceCore
import LanceData
import LanceLinalg
import LanceModel
import LanceNN
import LanceONNX
import LanceTestSupport
import LanceTrain
import Testing

/// Continual learning's pieces (method section 5): the im2col view, the low-rank weight gradient on
/// it, protected bases and the orthogonal task bases, GPM's projection.
struct TaskSubspaceTests {
    /// A 3×3, stride 2, padding 1 convolution of `[3, 4, 7, 7]` to 5 channels.
    static let convolution = Convolution(window: WindowGeometry(kernelSize: [3, 3], strides: [2, 2], padding: .explicit(top: 1, left: 1, bottom: 1, right: 1)),
                                         groups: 1)

    /// Orthonormal `[d, r]` columns from a random Gram matrix's eigenvectors.
    static func orthonormal(_ d: Int, _ r: Int, seed: UInt64) throws -> Tensor {
        let a = Tensor.random(shape: [d, d], in: -1...1, seed: seed)
        var gram = [Double](repeating: 0, count: d * d)
        for i in 0..<d { for j in 0..<d { for k in 0..<d { gram[i * d + j] += Double(a.scalars[i * d + k] * a.scalars[j * d + k]) } } }
        let (_, vectors) = try symmetricEigen(gram, dimension: d)
        return Tensor(shape: [d, r], scalars: (0..<(d * r)).map { Float(vectors[($0 / r) * d + $0 % r]) })
    }

    @Test("the im2col view reproduces the convolution: Y[b] = W · X_unf[b]")
    func unfoldMatchesConvolution() {
        let x = Tensor.random(shape: [3, 4, 7, 7], in: -1...1, seed: 1)
        let w = Tensor.random(shape: [5, 4, 3, 3], in: -1...1, seed: 2)
        let y = conv2d(x, weight: w, bias: nil, convolution: Self.convolution)
        let unfolded = unfoldedInput(x, convolution: Self.convolution)
        #expect(unfolded.shape == [3, 36, 16])
        var worst: Float = 0
        for b in 0..<3 {
            for o in 0..<5 {
                for l in 0..<16 {
                    var sum: Float = 0
                    for f in 0..<36 { sum += w.scalars[o * 36 + f] * unfolded.scalars[(b * 36 + f) * 16 + l] }
                    worst = max(worst, abs(sum - y.scalars[(b * 5 + o) * 16 + l]))
                }
            }
        }
        #expect(worst < 1e-5)
        // A pointwise convolution unfolds to its input.
        let pointwise = Convolution(window: WindowGeometry(kernelSize: [1, 1]), groups: 1)
        #expect(unfoldedInput(x, convolution: pointwise).scalars == x.scalars)
    }

    @Test("the unfolded LANCE weight gradient equals the dense gradient on the reconstructed im2col tensor", arguments: [[2, 9, 5], [3, 36, 16]])
    func unfoldedGradient(ranks: [Int]) throws {
        let x = Tensor.random(shape: [3, 4, 7, 7], in: -1...1, seed: 3)
        let unfolded = unfoldedInput(x, convolution: Self.convolution)
        let factors = [try Self.orthonormal(3, ranks[0], seed: 4), try Self.orthonormal(36, ranks[1], seed: 5),
                       try Self.orthonormal(16, ranks[2], seed: 6)]
        let core = TuckerCore(projecting: unfolded, factors: factors)
        let reconstruction = core.reconstructed()
        let dy = Tensor.random(shape: [3, 5, 4, 4], in: -1...1, seed: 7)
        let gradient = unfoldedLowRankWeightGradient(compressed: core, outputGradient: dy, weightShape: [5, 4, 3, 3])
        // Dense: dW[o, f] = Σ_{b, l} dY[b, o, l] · X̂[b, f, l].
        var dense = [Float](repeating: 0, count: 5 * 36)
        for b in 0..<3 { for o in 0..<5 { for f in 0..<36 { for l in 0..<16 {
            dense[o * 36 + f] += dy.scalars[(b * 5 + o) * 16 + l] * reconstruction.scalars[(b * 36 + f) * 16 + l]
        } } } }
        let scale = dense.map(abs).max()!
        #expect(gradient.shape == [5, 4, 3, 3])
        #expect(zip(gradient.scalars, dense).map { abs($0 - $1) }.max()! / scale < 1e-4)
        if ranks == [3, 36, 16] {
            // Full rank: the exact weight gradient of the convolution.
            let exact = conv2dWeightGradient(input: x, outputGradient: dy, weightShape: [5, 4, 3, 3], convolution: Self.convolution)
            #expect(exact.maxAbsoluteDifference(to: gradient) / scale < 1e-4)
        }
    }

    /// A feature Gram matrix `Σ x xᵀ` of `count` vectors in a random `rank`-dimensional subspace of ℝᵈ plus small noise.
    static func gram(dimension d: Int, rank: Int, count: Int, seed: UInt64) throws -> [Double] {
        let basis = try orthonormal(d, rank, seed: seed)
        let coefficients = Tensor.random(shape: [count, rank], in: -1...1, seed: seed + 1)
        let noise = Tensor.random(shape: [count, d], in: -0.01...0.01, seed: seed + 2)
        var gram = [Double](repeating: 0, count: d * d)
        for n in 0..<count {
            var x = [Double](repeating: 0, count: d)
            for i in 0..<d {
                for k in 0..<rank { x[i] += Double(basis.scalars[i * rank + k] * coefficients.scalars[n * rank + k]) }
                x[i] += Double(noise.scalars[n * d + i])
            }
            for i in 0..<d { for j in 0..<d { gram[i * d + j] += x[i] * x[j] } }
        }
        return gram
    }

    @Test("a new task's feature basis is orthogonal to the protected basis, and the protected basis grows orthonormally")
    func orthogonality() throws {
        let d = 96
        let protected = try protectedDirections(featureGram: try Self.gram(dimension: d, rank: 12, count: 200, seed: 10),
                                                dimension: d, protected: nil, threshold: 0.97)
        #expect(protected.shape[0] == d && protected.shape[1] >= 10 && protected.shape[1] <= 20)
        // A second task whose data overlaps the first's subspace.
        let taskGram = try Self.gram(dimension: d, rank: 16, count: 200, seed: 20)
        let layer = TrainedLayer(node: "conv", kind: .convolution, input: "x", isHead: false)
        let grams = try Self.accumulator(featureGram: taskGram, dimension: d)
        let bases = try taskBases(layer: layer, grams: grams, protected: protected, energy: 0.95, featureThreshold: 0.97)
        let feature = bases.modes[1].factor
        #expect(feature.shape[1] >= 1)
        #expect(Self.maxAbsoluteProduct(protected, feature) < 1e-5)
        #expect(Self.maxAbsoluteProduct(feature, feature, identity: true) < 1e-5)
        // GPM's update: the new directions are orthogonal to P and orthonormal.
        let added = try protectedDirections(featureGram: taskGram, dimension: d, protected: protected, threshold: 0.97)
        #expect(added.shape[1] >= 1)
        #expect(Self.maxAbsoluteProduct(protected, added) < 1e-5)
        let grown = concatenatedColumns([protected, added])!
        #expect(Self.maxAbsoluteProduct(grown, grown, identity: true) < 1e-5)
        // Data inside span(P) adds nothing.
        let inside = try protectedDirections(featureGram: try Self.gram(dimension: d, rank: 12, count: 200, seed: 10),
                                             dimension: d, protected: grown, threshold: 0.9)
        #expect(inside.shape[1] == 0)
    }

    @Test("a protected basis that spans the whole feature space leaves no room: a clear error")
    func noRoom() throws {
        let d = 12
        let full = try Self.orthonormal(d, d, seed: 50)
        let layer = TrainedLayer(node: "conv", kind: .convolution, input: "x", isHead: false)
        let grams = try Self.accumulator(featureGram: try Self.gram(dimension: d, rank: 4, count: 50, seed: 51), dimension: d)
        #expect(throws: TrainingError.data(reason: "the protected basis of layer 'conv' spans all 12 feature directions; no room is left for a new task (lance-inspect --tasks shows the room per layer)")) {
            try taskBases(layer: layer, grams: grams, protected: full, energy: 0.95, featureThreshold: 0.97)
        }
    }

    /// An accumulator whose feature Gram matrix is `featureGram` (batch and position modes of size 1).
    static func accumulator(featureGram: [Double], dimension d: Int) throws -> ModeGramAccumulator {
        // The eigenvectors scaled by √λ, one sample each: their outer products sum to the Gram matrix.
        let (values, vectors) = try symmetricEigen(featureGram, dimension: d)
        var accumulator = ModeGramAccumulator(shape: [1, d, 1])
        for k in 0..<d where values[k] > 0 {
            let root = values[k].squareRoot()
            accumulator.add(Tensor(shape: [1, d, 1], scalars: (0..<d).map { Float(vectors[$0 * d + k] * root) }))
        }
        return accumulator
    }

    /// `max |AᵀB|` (minus the identity when `identity`).
    static func maxAbsoluteProduct(_ a: Tensor, _ b: Tensor, identity: Bool = false) -> Float {
        let (d, p, q) = (a.shape[0], a.shape[1], b.shape[1])
        var worst: Float = 0
        for i in 0..<p {
            for j in 0..<q {
                var sum: Double = 0
                for k in 0..<d { sum += Double(a.scalars[k * p + i]) * Double(b.scalars[k * q + j]) }
                if identity && i == j { sum -= 1 }
                worst = max(worst, Float(abs(sum)))
            }
        }
        return worst
    }

    @Test("GPM's projection removes the gradient's protected component, for both weight layouts")
    func gradientProjection() throws {
        let protected = try Self.orthonormal(12, 4, seed: 30)
        let gradient = Tensor.random(shape: [5, 12], in: -1...1, seed: 31)
        let projected = projectingOutProtected(gradient, protected: protected, featuresFirst: false)
        // (G P) = 0.
        var worst: Float = 0
        for o in 0..<5 { for k in 0..<4 {
            var sum: Float = 0
            for i in 0..<12 { sum += projected.scalars[o * 12 + i] * protected.scalars[i * 4 + k] }
            worst = max(worst, abs(sum))
        } }
        #expect(worst < 1e-5)
        #expect(projected.maxAbsoluteDifference(to: gradient) > 0.01)
        let transposed = transpose(gradient, permutation: [1, 0])
        let projectedFirst = projectingOutProtected(transposed, protected: protected, featuresFirst: true)
        #expect(transpose(projectedFirst, permutation: [1, 0]).maxAbsoluteDifference(to: projected) < 1e-5)
    }
}

@Suite("Adding a task to the real MobileNetV2",
       .enabled(if: Fixtures.sharedAvailable && Fixtures.fashionMNISTAvailable,
                "needs ../shared/models (or $LANCE_SHARED) and Fashion-MNIST (apt-get install dataset-fashion-mnist)"))
struct TaskAdditionRealModelTests {
    @Test("after training a task with LANCE, every shared layer's output on inputs inside span(P) is unchanged")
    func protectedOutputsUnchanged() throws {
        var graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        graph.inputs[0].dimensions = [.symbolic("N"), .fixed(3), .fixed(64), .fixed(64)]
        let preprocessing = Preprocessing(size: [64, 64], resize: .direct, scale: 1 / 255, mean: [0.485, 0.456, 0.406],
                                          standardDeviation: [0.229, 0.224, 0.225], channels: 3)
        let train = try openDataSource(Fixtures.fashionMNIST("train-images-idx3-ubyte.gz"), preprocessing: preprocessing)
        func batches(_ source: any DataSource, count: Int, seed: UInt64) throws -> [Batch] {
            var iterator = try BatchIterator(source: source, batchSize: 8, shuffleSeed: seed, dropLast: true, limit: 8 * count)
            var result: [Batch] = []
            while let batch = try iterator.next() { result.append(batch) }
            return result
        }
        let shared = try graph.trainedLayers(.last(2)).filter { !$0.isHead }
        // Task 0's protected bases from its "own" data (classes 0–4).
        let oldTask = try ClassSubsetSource(base: train, classes: [0, 1, 2, 3, 4])
        let grams = try accumulateFeatureGrams(graph: graph, layers: shared, batches: try batches(oldTask, count: 3, seed: 1).map(\.images))
        var protected: [String: Tensor] = [:]
        for (layer, gram) in zip(shared, grams) {
            protected[layer.node] = try protectedDirections(featureGram: gram.grams[1], dimension: gram.shape[1], protected: nil, threshold: 0.97)
        }
        // The new task (classes 5 and 6) through bases orthogonal to P, shared biases frozen, a new head.
        let newTask = try ClassSubsetSource(base: train, classes: [5, 6])
        let taskBatches = try batches(newTask, count: 3, seed: 2)
        var taskGraph = try replaceHead(in: graph, classes: 2, seed: 3)
        let taskGrams = try accumulateFeatureGrams(graph: taskGraph, layers: shared, batches: taskBatches.map(\.images))
        var bases: [LayerBases] = []
        for (layer, gram) in zip(shared, taskGrams) {
            let layerBases = try taskBases(layer: layer, grams: gram, protected: protected[layer.node], energy: 0.95, featureThreshold: 0.97)
            #expect(TaskSubspaceTests.maxAbsoluteProduct(protected[layer.node]!, layerBases.modes[1].factor) < 1e-5, "\(layer.node)")
            bases.append(layerBases)
        }
        let record = CalibrationRecord(energy: 0.95, batchSize: 8, batches: 3, accumulation: "plain-sum", layerRule: "last:2",
                                       dataDescription: "", dataFingerprint: "", layers: bases)
        let nodes = Dictionary(uniqueKeysWithValues: taskGraph.nodes.map { ($0.name, $0) })
        let biases = Set(shared.compactMap { nodes[$0.node]?.inputs.dropFirst(2).first })
        let head = try taskGraph.trainedLayers(.last(0)).filter(\.isHead)
        var trainer = try Trainer(graph: taskGraph, layers: shared + head, method: .lance(record),
                                  configuration: TrainerConfiguration(optimizer: .sgd(momentum: 0, weightDecay: 0), learningRate: 0.5,
                                                                      scheduleLength: 0, maxGradientNorm: nil),
                                  frozenParameters: biases)
        #expect(biases.allSatisfy { !trainer.runner.trainedParameterNames.contains($0) })
        for batch in taskBatches { _ = try trainer.step(images: batch.images, labels: batch.labels) }
        taskGraph = trainer.graph

        for layer in shared {
            let node = nodes[layer.node]!
            guard case .convolution(let convolution) = node.operation else { Issue.record("\(layer.node) is not a convolution"); continue }
            let before = graph.parametersByName[node.inputs[1]]!.tensor
            let after = taskGraph.parametersByName[node.inputs[1]]!.tensor
            #expect(after.maxAbsoluteDifference(to: before) > 1e-3, "\(layer.node) did not train")
            #expect(graph.parametersByName[node.inputs[2]]! == taskGraph.parametersByName[node.inputs[2]]!, "the bias of \(layer.node) moved")
            // Inputs whose channel vectors lie in span(P) (these layers are 1×1: the feature space is the channels).
            let basis = protected[layer.node]!
            let (channels, k) = (basis.shape[0], basis.shape[1])
            let coefficients = Tensor.random(shape: [2 * 3 * 3, k], in: -1...1, seed: 40)
            var inside = [Float](repeating: 0, count: 2 * channels * 9)
            for b in 0..<2 { for p in 0..<9 { for c in 0..<channels {
                var sum: Float = 0
                for j in 0..<k { sum += basis.scalars[c * k + j] * coefficients.scalars[(b * 9 + p) * k + j] }
                inside[(b * channels + c) * 9 + p] = sum
            } } }
            let x = Tensor(shape: [2, channels, 3, 3], scalars: inside)
            let bias = graph.parametersByName[node.inputs[2]]!.tensor
            let old = conv2d(x, weight: before, bias: bias, convolution: convolution)
            let new = conv2d(x, weight: after, bias: bias, convolution: convolution)
            let scale = old.scalars.map(abs).max()!
            #expect(new.maxAbsoluteDifference(to: old) / scale < 1e-4, "\(layer.node)")
            // The same check fails for inputs outside span(P): the layer did change.
            let outside = Tensor.random(shape: [2, channels, 3, 3], in: -1...1, seed: 41)
            let oldOutside = conv2d(outside, weight: before, bias: bias, convolution: convolution)
            let newOutside = conv2d(outside, weight: after, bias: bias, convolution: convolution)
            #expect(newOutside.maxAbsoluteDifference(to: oldOutside) / oldOutside.scalars.map(abs).max()! > 1e-3, "\(layer.node)")
        }
    }
}
