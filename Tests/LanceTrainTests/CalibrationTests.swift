import LanceCore
import LanceData
import LanceLinalg
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import LanceTrain
import Testing

@Suite("Activation accounting (method section 3.4)",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models (or $LANCE_SHARED); they are missing"))
struct AccountingTests {
    @Test("MobileNetV2 at batch 128, 224×224: 30.63 MiB for the last 2 and 57.42 MiB for the last 4 convolutions")
    func mobileNetV2() throws {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        for (count, expected) in [(2, 30.63), (4, 57.42)] {
            let layers = try graph.trainedLayers(.last(count))
            #expect(layers.filter { !$0.isHead }.count == count)
            #expect(layers.last?.isHead == true && layers.last?.kind == .linear)
            let accounting = try graph.accounting(for: layers, batchSize: 128, inputSize: [224, 224])
            let convolutionMiB = Double(accounting.filter { !$0.isHead }.reduce(0) { $0 + $1.fullBytes }) / bytesPerMiB
            #expect(abs(convolutionMiB - expected) < 0.005, "last \(count): \(convolutionMiB) MiB")
        }
        // The head's input: 128 × 1280 floats.
        let head = try graph.accounting(for: try graph.trainedLayers(.last(2)), batchSize: 128).last
        #expect(head?.fullBytes == 128 * 1280 * 4)
    }

    @Test("another input size changes the figures without running anything")
    func otherInputSize() throws {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        let layers = try graph.trainedLayers(.last(2))
        let small = try graph.accounting(for: layers, batchSize: 64, inputSize: [112, 112])
        // 112×112 input: the last convolutions see 4×4 maps.
        #expect(small[0].inputShape == [64, 960, 4, 4])
    }
}

@Suite("Calibration bases")
struct CalibrationTests {
    @Test("the rank rule keeps the smallest rank whose cumulative energy exceeds ε")
    func rankRule() {
        #expect(lanceRank(normalisedSpectrum: [0.5, 0.3, 0.2], energy: 0.7) == 2)
        #expect(lanceRank(normalisedSpectrum: [0.5, 0.25, 0.25], energy: 0.75) == 3)  // 0.75 is not above ε
        #expect(lanceRank(normalisedSpectrum: [0.9, 0.1], energy: 0.7) == 1)
        #expect(lanceRank(normalisedSpectrum: [0.25, 0.25, 0.25, 0.25], energy: 0.99) == 4)
    }

    /// `X = G ×0 A ×1 B ×2 C ×3 D` with a random core `G` of extents `ranks` and random factors.
    static func tensorOfMultilinearRank(_ shape: [Int], ranks: [Int], seed: UInt64) -> Tensor {
        let core = Tensor.random(shape: ranks, seed: seed)
        let factors = zip(shape, ranks).enumerated().map { Tensor.random(shape: [$1.0, $1.1], seed: seed + UInt64($0) + 1) }
        var x = [Float](repeating: 0, count: shape.reduce(1, *))
        for i0 in 0..<shape[0] { for i1 in 0..<shape[1] { for i2 in 0..<shape[2] { for i3 in 0..<shape[3] {
            var sum: Float = 0
            for a in 0..<ranks[0] { for b in 0..<ranks[1] { for c in 0..<ranks[2] { for d in 0..<ranks[3] {
                sum += core[a, b, c, d] * factors[0][i0, a] * factors[1][i1, b] * factors[2][i2, c] * factors[3][i3, d]
            } } } }
            x[((i0 * shape[1] + i1) * shape[2] + i2) * shape[3] + i3] = sum
        } } } }
        return Tensor(shape: shape, scalars: x)
    }

    @Test("a tensor of known multilinear rank gives those ranks exactly, with orthonormal bases")
    func knownRanks() throws {
        let shape = [8, 6, 7, 5], ranks = [2, 3, 2, 4]
        var accumulator = ModeGramAccumulator(shape: shape)
        accumulator.add(Self.tensorOfMultilinearRank(shape, ranks: ranks, seed: 11))
        let bases = try accumulator.bases(energy: 0.99999, modeNames: ["batch", "channel", "height", "width"])
        #expect(bases.map(\.rank) == ranks)
        for basis in bases {
            #expect(basis.energyKept >= 0.99999)
            #expect(Self.orthonormalityError(basis.factor) < 1e-5, "\(basis.mode)")
            #expect(abs(basis.spectrum.reduce(0, +) - 1) < 1e-5)
        }
    }

    @Test("the reference weighting weighs the first batch n_dim times more")
    func referenceWeighting() {
        let first = Tensor.random(shape: [3, 4], seed: 1), second = Tensor.random(shape: [3, 4], seed: 2)
        var plain = ModeGramAccumulator(shape: [3, 4])
        var weighted = ModeGramAccumulator(shape: [3, 4], accumulation: .referenceWeighting)
        for batch in [first, second] { plain.add(batch); weighted.add(batch) }
        // F_2 = G_1 / 2 + G_2 / (2 · n) for mode 0 (n = 3): F_2 = (3·G_1 + G_2) / 6.
        var single = ModeGramAccumulator(shape: [3, 4]); single.add(first)
        var other = ModeGramAccumulator(shape: [3, 4]); other.add(second)
        for k in 0..<9 {
            let expected = (3 * single.grams[0][k] + other.grams[0][k]) / 6
            #expect(abs(weighted.grams[0][k] - expected) < 1e-9)
            #expect(abs(plain.grams[0][k] - (single.grams[0][k] + other.grams[0][k])) < 1e-9)
        }
    }

    static func orthonormalityError(_ factor: Tensor) -> Float {
        let (n, r) = (factor.shape[0], factor.shape[1])
        var worst: Float = 0
        for a in 0..<r { for b in 0..<r {
            var dot: Float = 0
            for i in 0..<n { dot += factor[i, a] * factor[i, b] }
            worst = max(worst, abs(dot - (a == b ? 1 : 0)))
        } }
        return worst
    }
}

@Suite("Calibration of the real MobileNetV2",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models and ../shared/data (or $LANCE_SHARED); they are missing"))
struct RealCalibrationTests {
    @Test("bases on ImageNet images: orthonormal, energy kept ≥ ε in every mode, batch rank ≤ B")
    func imageNet() throws {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        let images = try NPY.read(Fixtures.data("imagenet20/images.npy")).tensor
        let layers = try graph.trainedLayers(.last(2))
        let batches = [images.slice(batch: 0..<5), images.slice(batch: 5..<10), images.slice(batch: 10..<15)]
        let result = try calibrateBases(graph: graph, layers: layers, batches: batches, options: CalibrationOptions(energy: 0.7))
        #expect(result.batches == 3 && result.batchSize == 5)
        #expect(result.layers.map(\.layer) == layers.map(\.node))
        #expect(result.layers[0].inputShape == [5, 960, 7, 7])
        #expect(result.layers[2].inputShape == [5, 1280])
        for layer in result.layers {
            for basis in layer.modes {
                #expect(basis.energyKept >= 0.7, "\(layer.layer) \(basis.mode)")
                #expect(basis.rank >= 1 && basis.rank <= basis.dimension)
                #expect(CalibrationTests.orthonormalityError(basis.factor) < 1e-5, "\(layer.layer) \(basis.mode)")
            }
        }
        let accounting = try graph.accounting(for: layers, batchSize: 5,
                                              calibration: CalibrationRecord(energy: 0.7, batchSize: 5, batches: 3, accumulation: "plain-sum",
                                                                             layerRule: "last:2", dataDescription: "", dataFingerprint: "",
                                                                             layers: result.layers))
        for (record, layer) in zip(accounting, result.layers) {
            let core = layer.modes.reduce(1) { $0 * $1.rank }
            let factors = layer.modes.reduce(0) { $0 + $1.dimension * $1.rank }
            // The head keeps its input uncompressed, as training does.
            #expect(record.lanceBytes == (record.isHead ? record.fullBytes : (core + factors) * 4), "\(record.layer)")
            #expect(record.lanceWeightGradientMACs != nil)
        }
        // The convolution inputs compress even at this small batch.
        #expect((accounting[0].compressionRatio ?? 0) > 10)

        // Calibration runs the model on slices of the batch; the bases equal those of the Gram
        // matrices of whole-batch forward passes.
        var capture = graph
        capture.outputs = layers.map { ValueInfo(name: $0.input, dimensions: nil) }
        let session = InferenceSession(graph: capture)
        var accumulators: [ModeGramAccumulator] = []
        for batch in batches {
            let captured = try session.run([graph.inputs[0].name: batch])
            if accumulators.isEmpty { accumulators = layers.map { ModeGramAccumulator(shape: captured[$0.input]!.shape) } }
            for (index, layer) in layers.enumerated() { accumulators[index].add(captured[layer.input]!) }
        }
        for (index, layer) in layers.enumerated() {
            let expected = try accumulators[index].bases(energy: 0.7, modeNames: layer.modeNames)
            for (sliced, whole) in zip(result.layers[index].modes, expected) {
                let place = "\(layer.node) \(whole.mode)"
                #expect(sliced.rank == whole.rank, "\(place): rank \(sliced.rank) from slices, \(whole.rank) from whole batches")
                let spectrumError = zip(sliced.spectrum, whole.spectrum).map { abs($0 - $1) }.max() ?? 0
                #expect(spectrumError < 1e-6, "\(place): spectra differ by \(spectrumError)")
                // Each kept eigenvector agrees up to its sign.
                for k in 0..<min(sliced.rank, whole.rank) {
                    let dot = (0..<whole.dimension).reduce(Float(0)) { $0 + sliced.factor[$1, k] * whole.factor[$1, k] }
                    #expect(abs(abs(dot) - 1) < 1e-4, "\(place): eigenvector \(k) differs (|dot| \(abs(dot)))")
                }
            }
        }
    }
}
