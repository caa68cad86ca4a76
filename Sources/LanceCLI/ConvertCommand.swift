import ArgumentParser
import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceModel
import LanceTrain

/// `lance-convert`: a model file (or container) to a `.lance` container, optionally calibrated.
public struct ConvertCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lance-convert",
        abstract: "Convert an ONNX or Keras model to a .lance container, computing LANCE bases from calibration data.",
        discussion: """
            Without --calibration the container holds the model only; running lance-convert again on \
            that container with --calibration adds the bases. Calibration runs forward passes only over \
            --calibration-batches batches of --batch-size samples, accumulates the mode Gram matrices of \
            every trained layer's input and keeps, per mode, the smallest rank whose energy exceeds --energy. \
            Training must later use the same batch size (the batch basis is B × r).
            """)

    @Argument(help: "The model (.onnx, Keras .h5 or .keras) or an existing .lance container.")
    var model: String

    @Option(name: [.short, .customLong("output")], help: "The container to write (.lance).")
    var output: String

    @Option(help: "For a Keras weights-only .h5: the architecture JSON (model.to_json()).")
    var architecture: String?

    @Option(help: "Calibration data: a folder of class folders of images, .npy/.npz, HDF5 (images, labels) or IDX files.")
    var calibration: String?

    @Option(help: "Layers to train: last:K (the last K convolutions with groups 1, plus the classifier head) or node names.")
    var trainLayers = "last:4"

    @Option(help: "Energy threshold ε of the rank rule.")
    var energy: Float = 0.7

    @Option(help: "Samples per calibration batch (training must use the same).")
    var batchSize = 128

    @Option(help: "Number of calibration batches.")
    var calibrationBatches = 100

    @Flag(help: "Weigh batches like the authors' code (the first batch counts n_dim times more) instead of summing.")
    var referenceWeighting = false

    @Option(help: "Seed of the calibration data shuffle.")
    var seed: UInt64 = 0

    @Flag(help: "Mirror each calibration sample left to right with probability 1/2, seeded by --seed, as the LANCE recipe calibrates on its augmented training batches.")
    var flip = false

    @OptionGroup var preprocessingOptions: PreprocessingOptions

    @Flag(help: "Store bases and frozen weights as float16 (about half the size; computation stays float32).")
    var fp16 = false

    @Flag(help: "Also compute the protected bases of the trained layers from the calibration data, making the imported model task 0 of a task registry (lance-train --add-task then adds tasks that leave it unchanged).")
    var protect = false

    @Option(help: "Energy threshold ε_cl of the protected bases (GPM's rule).")
    var protectEnergy: Float = 0.97

    @Option(help: "Added to --protect-energy for every later task (task t uses ε_cl + t·step).")
    var protectEnergyStep: Float = 0

    @Option(help: "Calibration batches the protected bases are computed from (the first N).")
    var protectBatches = 11

    @Option(help: "Name of the imported model's task (default: the model file's name).")
    var taskName: String?

    public init() {}

    public func validate() throws {
        guard output.lowercased().hasSuffix(".lance") else { throw ValidationError("-o must name a .lance file") }
        guard batchSize >= 1, calibrationBatches >= 1 else { throw ValidationError("--batch-size and --calibration-batches must be at least 1") }
        guard energy > 0 && energy < 1 else { throw ValidationError("--energy must be between 0 and 1") }
        _ = try LayerSelection(parsing: trainLayers)
        try preprocessingOptions.validate()
        guard protectEnergy > 0 && protectEnergy < 1 else { throw ValidationError("--protect-energy must be between 0 and 1") }
        guard protectEnergyStep >= 0 && protectEnergyStep < 1 else { throw ValidationError("--protect-energy-step must be in [0, 1)") }
        guard protectBatches >= 1 else { throw ValidationError("--protect-batches must be at least 1") }
        if protect && calibration == nil {
            throw ValidationError("--protect computes the protected bases from the calibration data; give --calibration DATA")
        }
    }

    public func run() throws {
        let start = Date()
        var container: Container
        if URL(fileURLWithPath: model).pathExtension.lowercased() == "lance" {
            container = try ContainerFile.read(model)
        } else {
            let graph = try reportingUnsupportedOperators { try loadModel(model, architecture: architecture) }
            container = Container(graph: graph, sourceSHA256: try fileSHA256(model))
        }
        if let size = preprocessingOptions.inputSize.flatMap(parseSize) {
            try resizeInput(of: &container.graph, to: size)
        }
        if let calibration {
            let preprocessing = try preprocessingOptions.preprocessing(for: container.graph, existing: container.preprocessing)
            container.preprocessing = preprocessing
            try calibrate(&container, data: calibration, preprocessing: preprocessing)
            if protect { try protectImportedTask(&container, data: calibration, preprocessing: preprocessing) }
        } else if preprocessingOptions.isGiven {
            container.preprocessing = try preprocessingOptions.preprocessing(for: container.graph, existing: container.preprocessing)
        }
        try ContainerFile.write(container, to: output, halfPrecision: fp16)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("wrote \(output): \(String(Double(bytes) / bytesPerMiB, decimals: 2)) MiB\(fp16 ? " (float16 storage)" : ""), "
              + "\(String(Date().timeIntervalSince(start), decimals: 2)) s")
    }

    private func calibrate(_ container: inout Container, data: String, preprocessing: Preprocessing) throws {
        let graph = container.graph
        let selection = try LayerSelection(parsing: trainLayers)
        let layers = try graph.trainedLayers(selection)
        let source = try openDataSource(data, preprocessing: preprocessing)
        let available = source.count / batchSize
        guard available >= 1 else {
            throw ValidationError("\(data) has \(source.count) samples, fewer than one batch of \(batchSize)")
        }
        let batchCount = min(calibrationBatches, available)
        if batchCount < calibrationBatches {
            printError("note: \(data) holds \(available) full batches of \(batchSize); calibrating on \(batchCount)")
        }
        var fingerprint = SHA256()
        let progress = ProgressLine(label: "calibration", total: batchCount, unit: "batches")
        let started = Date()
        let stream = BatchStream(try BatchIterator(source: source, batchSize: batchSize, shuffleSeed: seed, dropLast: true,
                                                   limit: batchCount * batchSize), flip: flip ? HorizontalFlip(seed: seed) : nil) { batch in
            fingerprint.update(batch.images)
        }
        let result: (layers: [LayerBases], batchSize: Int, batches: Int)
        do {
            result = try calibrateBases(graph: graph, layers: layers, batches: stream,
                                        options: CalibrationOptions(energy: energy, accumulation: referenceWeighting ? .referenceWeighting : .plainSum)) { done in
                progress.update(done, rate: Double(done * batchSize) / max(Date().timeIntervalSince(started), 1e-9), rateUnit: "images/s")
            }
        } catch {
            if let dataError = stream.error { throw dataError }
            throw error
        }
        if let dataError = stream.error { throw dataError }
        progress.finish()
        let seconds = Date().timeIntervalSince(started)
        container.calibration = CalibrationRecord(
            energy: energy, batchSize: result.batchSize, batches: result.batches,
            accumulation: referenceWeighting ? GramAccumulation.referenceWeighting.rawValue : GramAccumulation.plainSum.rawValue,
            layerRule: selection.description,
            dataDescription: "\(URL(fileURLWithPath: data).lastPathComponent): \(source.sampleDescription)\(flip ? ", random horizontal flips" : "")",
            dataFingerprint: fingerprint.hexDigest(), layers: result.layers)
        container.metrics.append(contentsOf: [
            Metric(name: "seconds", scope: "calibration", value: seconds),
            Metric(name: "images_per_second", scope: "calibration", value: Double(result.batches * result.batchSize) / max(seconds, 1e-9)),
            Metric(name: "peak_resident_mib", scope: "calibration", value: peakResidentMiB()),
        ])
        // The trained layers' weights and biases are what training updates; everything else is frozen.
        let trainedParameters = Set(layers.flatMap { layer in graph.nodes.first { $0.name == layer.node }?.inputs.dropFirst() ?? [] })
        for index in container.graph.parameters.indices {
            let parameter = container.graph.parameters[index]
            container.graph.parameters[index].trainable = trainedParameters.contains(parameter.name) && !parameter.synthesized
        }
        let accounting = try graph.accounting(for: layers, batchSize: result.batchSize, calibration: container.calibration)
        let report = TrainingReport(selection: selection.description, batchSize: result.batchSize, layers: accounting)
        print(report.lines(showBases: false).joined(separator: "\n"))
        print("calibration: \(result.batches) batches of \(result.batchSize) in \(String(seconds, decimals: 1)) s "
              + "(\(String(Double(result.batches * result.batchSize) / max(seconds, 1e-9), decimals: 1)) images/s), "
              + "peak resident memory \(String(peakResidentMiB(), decimals: 1)) MiB")
    }
}

extension ConvertCommand {
    /// Makes the imported model task 0 of the registry: per shared trained layer, the protected
    /// basis of its input features on the first `--protect-batches` calibration batches.
    private func protectImportedTask(_ container: inout Container, data: String, preprocessing: Preprocessing) throws {
        guard container.tasks.count <= 1, container.tasks.allSatisfy({ $0.protectedBases.isEmpty }) else {
            throw CommandError.dataMismatch(path: model, reason: "already has a task registry with protected bases; protection is computed once, when the model is converted")
        }
        let layers = try sharedLayers(of: container, path: model)
        guard !layers.isEmpty else {
            throw ValidationError("--protect needs trained convolution or linear layers besides the head; choose them with --train-layers")
        }
        let settings = ProtectionSettings(energy: protectEnergy, energyStep: protectEnergyStep)
        let source = try openDataSource(data, preprocessing: preprocessing)
        let batchCount = min(protectBatches, source.count / batchSize)
        let started = Date()
        let progress = ProgressLine(label: "protected bases", total: batchCount, unit: "batches")
        let stream = BatchStream(try BatchIterator(source: source, batchSize: batchSize, shuffleSeed: seed, dropLast: true,
                                                   limit: batchCount * batchSize)) { _ in }
        let grams: [ModeGramAccumulator]
        do {
            grams = try accumulateFeatureGrams(graph: container.graph, layers: layers, batches: stream) { done in
                progress.update(done, rate: Double(done * batchSize) / max(Date().timeIntervalSince(started), 1e-9), rateUnit: "images/s")
            }
        } catch {
            if let dataError = stream.error { throw dataError }
            throw error
        }
        progress.finish()
        var bases: [String: Tensor] = [:]
        for (layer, gram) in zip(layers, grams) {
            bases[layer.node] = try protectedDirections(featureGram: gram.grams[1], dimension: gram.shape[1], protected: nil,
                                                        threshold: settings.threshold(forTask: 0))
        }
        container.calibration?.protection = settings
        let graph = container.graph
        let head = headParameters(of: graph)
        let classes = try outputClasses(of: graph) ?? 0
        let name = taskName ?? container.tasks.first?.name ?? URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent
        var task = container.tasks.first ?? TaskRecord(name: name, classes: classes, head: head)
        task.name = name
        task.protectedBases = bases
        container.tasks = [task]
        print("protected bases (ε_cl \(protectEnergy), \(batchCount) batches, \(String(Date().timeIntervalSince(started), decimals: 1)) s): "
              + layers.map { "\($0.node) \(bases[$0.node]!.shape[1])/\(bases[$0.node]!.shape[0])" }.joined(separator: ", "))
    }
}

/// Declares a new spatial size for an image model's input, checking that every layer accepts it
/// (fully convolutional networks with global pooling do).
func resizeInput(of graph: inout Graph, to size: [Int]) throws {
    guard graph.inputs.count == 1, var dimensions = graph.inputs[0].dimensions, dimensions.count == 4 else {
        throw ValidationError("--input-size needs a model with one image input [N, C, H, W]")
    }
    dimensions[2] = .fixed(size[0])
    dimensions[3] = .fixed(size[1])
    var resized = graph
    resized.inputs[0].dimensions = dimensions
    do {
        _ = try resized.inferShapes(inputShapes: resized.inputShapes(batchSize: 1))
    } catch {
        throw CommandError.dataMismatch(path: graph.name, reason: "the model does not accept \(size[0])×\(size[1]) inputs: \(error)")
    }
    graph = resized
}

/// The batches of a `BatchIterator`'s order as `SlicedBatch`es: each slice of samples is read and
/// preprocessed when the forward pass asks for it, flipped by `flip` (as epoch 0) when given, and
/// handed to `onSlice` (slices come in order, so a hash of them is that of the whole batches). The
/// first read error ends the pass and is kept in `error` for the caller to throw.
final class BatchStream: Sequence, IteratorProtocol {
    private let iterator: BatchIterator
    private let flip: HorizontalFlip?
    private let onSlice: (Batch) -> Void
    private var position = 0
    private(set) var error: DataError?

    init(_ iterator: BatchIterator, flip: HorizontalFlip? = nil, onSlice: @escaping (Batch) -> Void) {
        self.iterator = iterator
        self.flip = flip
        self.onSlice = onSlice
    }

    func next() -> SlicedBatch? {
        guard error == nil, position < iterator.order.count else { return nil }
        let indices = Array(iterator.order[position..<Swift.min(position + iterator.batchSize, iterator.order.count)])
        position += indices.count
        return SlicedBatch(count: indices.count) { [self] range in
            do throws(DataError) {
                let slice = try readSamples(iterator.source, indices: Array(indices[range]), flip: flip, epoch: 0)
                onSlice(slice)
                return slice.images
            } catch {
                self.error = error
                throw error
            }
        }
    }
}

/// The peak resident memory of this process so far, in MiB (`getrusage`).
func peakResidentMiB() -> Double {
    Double(peakResidentBytes()) / bytesPerMiB
}

/// SHA-256 of a file's bytes, hex.
func fileSHA256(_ path: String) throws -> String {
    let data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
    var hasher = SHA256()
    data.withUnsafeBytes { hasher.update($0) }
    return hasher.hexDigest()
}

/// A one-line progress report on stderr, redrawn in place on a terminal and printed every 10% otherwise.
final class ProgressLine {
    let label: String
    let total: Int
    let unit: String
    private let terminal = isatty(STDERR_FILENO) != 0
    private var lastPrinted = -1

    init(label: String, total: Int, unit: String) {
        self.label = label
        self.total = total
        self.unit = unit
    }

    func update(_ done: Int, rate: Double, rateUnit: String) {
        let text = "\(label): \(done)/\(total) \(unit), \(String(rate, decimals: 1)) \(rateUnit)"
        if terminal {
            FileHandle.standardError.write(Data("\r\(text)\u{1B}[K".utf8))
        } else if done == total || done * 10 / max(total, 1) > lastPrinted {
            lastPrinted = done * 10 / max(total, 1)
            printError(text)
        }
    }

    func finish() {
        if terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// Command-line options describing input preprocessing.
struct PreprocessingOptions: ParsableArguments {
    @Option(help: "Preset: imagenet (short side 256, centre crop, /255, ImageNet mean/std), unit (/255 only), or none.")
    var preprocessing: String?

    @Option(help: "Model input height and width, e.g. 224,224 (default: the model's).")
    var inputSize: String?

    @Option(help: "Resize rule: short-side-crop, direct or none.")
    var resize: Preprocessing.Resize?

    @Option(help: "Short side before the centre crop (short-side-crop).")
    var resizeShortSide: Int?

    @Option(help: "Factor applied to raw pixel values first, e.g. 0.00392157 for 1/255.")
    var scale: Float?

    @Option(help: "Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406.")
    var mean: String?

    @Option(help: "Per-channel standard deviation divided by, e.g. 0.229,0.224,0.225.")
    var std: String?

    var isGiven: Bool {
        preprocessing != nil || inputSize != nil || resize != nil || resizeShortSide != nil || scale != nil || mean != nil || std != nil
    }

    func validate() throws {
        if let preprocessing, !["imagenet", "unit", "none"].contains(preprocessing) {
            throw ValidationError("--preprocessing must be imagenet, unit or none")
        }
        if let inputSize, parseSize(inputSize) == nil { throw ValidationError("--input-size must be HEIGHT,WIDTH") }
        for (name, value) in [("--mean", mean), ("--std", std)] where value.map(parseFloats) == .some(nil) {
            throw ValidationError("\(name) must be one number or a comma-separated list")
        }
    }

    /// The preprocessing these options describe, starting from a preset, the container's, or a
    /// default derived from the model's input (its size, its channel count, no scaling).
    func preprocessing(for graph: Graph, existing: Preprocessing?) throws -> Preprocessing {
        var result: Preprocessing
        switch preprocessing {
        case "imagenet": result = .imageNet
        case "unit": result = Preprocessing(resize: .direct, scale: 1 / 255)
        case "none": result = Preprocessing()
        default: result = existing ?? Preprocessing(resize: .direct)
        }
        if let dimensions = graph.inputs.first?.dimensions, dimensions.count == 4 {
            if case .fixed(let channels) = dimensions[1] { result.channels = channels }
            if result.size == nil, case .fixed(let height) = dimensions[2], case .fixed(let width) = dimensions[3] {
                result.size = [height, width]
            }
        }
        if let inputSize { result.size = parseSize(inputSize) }
        if let resize { result.resize = resize }
        if let resizeShortSide { result.resizeShortSide = resizeShortSide }
        if let scale { result.scale = scale }
        if let mean, let values = parseFloats(mean) { result.mean = values }
        if let std, let values = parseFloats(std) { result.standardDeviation = values }
        return result
    }
}

extension Preprocessing.Resize: ExpressibleByArgument {}

func parseFloats(_ text: String) -> [Float]? {
    let values = text.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
    return values.isEmpty || values.contains(nil) ? nil : values.compactMap { $0 }
}
