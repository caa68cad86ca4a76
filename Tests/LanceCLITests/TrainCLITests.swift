import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceTestSupport
import Testing

@Suite("lance-train",
       .enabled(if: Fixtures.sharedAvailable && Fixtures.fashionMNISTAvailable,
                "needs ../shared/models (or $LANCE_SHARED) and Fashion-MNIST (apt-get install dataset-fashion-mnist)"))
struct TrainCLITests {
    static let model = Fixtures.model("mobilenet_v2_imagenet.onnx")
    static let train = Fixtures.fashionMNIST("train-images-idx3-ubyte.gz")
    static let test = Fixtures.fashionMNIST("t10k-images-idx3-ubyte.gz")

    /// MobileNetV2 at 64×64, calibrated on Fashion-MNIST with batches of 8 (last:2 plus the head).
    static func calibratedContainer(in folder: URL, calibrated: Bool = true) throws -> String {
        let path = folder.appendingPathComponent(calibrated ? "calibrated.lance" : "plain.lance").path
        var arguments = [model, "-o", path, "--input-size", "64,64", "--preprocessing", "imagenet", "--resize", "direct"]
        if calibrated {
            arguments += ["--calibration", train, "--batch-size", "8", "--calibration-batches", "2", "--train-layers", "last:2"]
        }
        let result = try runTool("lance-convert", arguments)
        try #require(result.status == 0, "\(result.stderr)")
        return path
    }

    /// Starts `lance-train` for 3 epochs in a child process and returns once the checkpoint of
    /// epoch 1 exists at `output` (or the process ended, or 60 s passed).
    static func trainingUntilFirstCheckpoint(source: String, output: String, standardOutput: Any, standardError: Any) throws -> Process {
        let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let executable = [products, products.deletingLastPathComponent()].map { $0.appendingPathComponent("lance-train") }
            .first { FileManager.default.fileExists(atPath: $0.path) } ?? Fixtures.projectRoot.appendingPathComponent(".build/debug/lance-train")
        let process = Process()
        process.executableURL = executable
        process.arguments = [source, "--data", train, "--epochs", "3", "--limit", "800", "--classes", "10", "-o", output]
        process.standardOutput = standardOutput
        process.standardError = standardError
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: output) && process.isRunning && Date() < deadline { usleep(10_000) }
        return process
    }

    static func parameters(_ container: Container) -> [String: [Float]] {
        Dictionary(container.graph.parameters.map { ($0.name, $0.tensor.scalars) }, uniquingKeysWith: { a, _ in a })
    }

    @Test("lance training writes weights, metrics, optimizer state and the task")
    func trainLance() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        let output = folder.appendingPathComponent("trained.lance").path
        let result = try runTool("lance-train", [source, "--data", Self.train, "--eval-data", Self.test, "--epochs", "2",
                                                 "--limit", "32", "--classes", "10", "--method", "lance", "-o", output])
        #expect(result.status == 0, "\(result.stderr)")
        let epochLines = result.stdout.split(separator: "\n").filter { $0.hasPrefix("epoch ") }
        #expect(epochLines.count == 2, "\(result.stdout)")
        for line in epochLines {
            let loss = line.split(separator: ",").first.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
            #expect(loss.map(\.isFinite) == true, "\(line)")
            #expect(line.contains("eval accuracy"))
        }
        #expect(result.stdout.contains("held for backward"))
        #expect(result.stdout.contains("with the weights of epoch"))
        #expect(result.stderr.contains("MiB held for backward"))

        let container = try ContainerFile.read(output)
        for epoch in 1...2 {
            let names = Set(container.metrics.filter { $0.scope == "epoch \(epoch)" }.map(\.name))
            #expect(names == ["train_loss", "train_accuracy", "eval_accuracy", "images_per_second",
                              "backward_bytes_trained_layers", "backward_bytes_other", "peak_resident_mib"], "\(names)")
        }
        let held = try #require(container.metrics.first { $0.scope == "epoch 1" && $0.name == "backward_bytes_trained_layers" })
        #expect(held.value > 0)
        let state = try #require(container.optimizerState)
        #expect(state.kind == "sgd")
        #expect(state.epoch >= 1 && state.step == state.epoch * 4)
        #expect(state.hyperparameters["schedule_length"] == 2)
        #expect(!state.slots.isEmpty)
        #expect(container.tasks.first?.classes == 10)
        #expect(container.tasks.first?.classNames.count == 10)
        #expect(container.tasks.first?.name == Fixtures.fashionMNISTRoot.lastPathComponent)
        // The head was replaced (10 classes) and trained; the source container is unchanged in shape.
        let head = try #require(container.graph.parameters.first { $0.name == "lance_head.weight" })
        #expect(head.tensor.shape.first == 10)
        #expect(head.trainable)
    }

    @Test("a checkpoint resumes to the same weights as an uninterrupted run (--flip is kept by the checkpoint)",
          arguments: [false, true])
    func resumeEquivalence(flipping: Bool) throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        let common = ["--data", Self.train, "--epochs", "2", "--limit", "24", "--classes", "10", "--seed", "3"] + (flipping ? ["--flip"] : [])
        let whole = folder.appendingPathComponent("whole.lance").path
        var result = try runTool("lance-train", [source, "-o", whole] + common)
        #expect(result.status == 0, "\(result.stderr)")

        let split = folder.appendingPathComponent("split.lance").path
        result = try runTool("lance-train", [source, "-o", split, "--stop-after", "1"] + common)
        #expect(result.status == 0, "\(result.stderr)")
        let checkpoint = try ContainerFile.read(split)
        #expect(checkpoint.optimizerState?.epoch == 1)
        result = try runTool("lance-train", [split, "--data", Self.train, "--limit", "24", "--seed", "3", "--resume"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("epochs 2–2 of 2"), "\(result.stdout)")
        #expect(result.stdout.contains("random horizontal flips") == flipping, "\(result.stdout)")

        let a = try ContainerFile.read(whole), b = try ContainerFile.read(split)
        #expect(Self.parameters(a) == Self.parameters(b))
        #expect(a.optimizerState == b.optimizerState)
        #expect(a.metrics.filter { $0.name == "train_loss" }.map(\.value) == b.metrics.filter { $0.name == "train_loss" }.map(\.value))
    }

    @Test("another batch size than the calibration's is refused under lance, and nothing is written")
    func batchSizeMismatch() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        let before = try Data(contentsOf: URL(fileURLWithPath: source))
        let result = try runTool("lance-train", [source, "--data", Self.train, "--batch-size", "4", "--limit", "16", "--classes", "10"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("calibration batch size 8"), "\(result.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: source)) == before)
    }

    @Test("full and hosvd train with their own batch size")
    func fullAndHOSVD() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        var held: [String: Double] = [:]
        for method in ["full", "hosvd"] {
            let output = folder.appendingPathComponent("\(method).lance").path
            let result = try runTool("lance-train", [source, "--data", Self.train, "--method", method, "--batch-size", "4",
                                                     "--epochs", "1", "--limit", "16", "--classes", "10", "-o", output])
            #expect(result.status == 0, "\(method): \(result.stderr)")
            #expect(result.stdout.contains("with \(method)"))
            let container = try ContainerFile.read(output)
            held[method] = container.metrics.first { $0.scope == "epoch 1" && $0.name == "backward_bytes_trained_layers" }?.value
        }
        let full = try #require(held["full"]), hosvd = try #require(held["hosvd"])
        #expect(full > 0 && hosvd > 0 && hosvd < full, "full \(full), hosvd \(hosvd)")
    }

    @Test("lance needs calibration; full trains a plain container with --train-layers")
    func uncalibrated() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let plain = try Self.calibratedContainer(in: folder, calibrated: false)
        var result = try runTool("lance-train", [plain, "--data", Self.train, "--limit", "16", "--classes", "10"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("lance-convert") && result.stderr.contains("--calibration"), "\(result.stderr)")
        result = try runTool("lance-train", [plain, "--data", Self.train, "--method", "full", "--train-layers", "last:1",
                                             "--batch-size", "8", "--epochs", "1", "--limit", "16", "--classes", "10"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try ContainerFile.read(plain).optimizerState?.epoch == 1)
    }

    @Test("a run that diverges stops with a clear message and leaves the container byte-identical")
    func divergenceLeavesContainer() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        // A first epoch writes a checkpoint in place.
        var result = try runTool("lance-train", [source, "--data", Self.train, "--epochs", "3", "--stop-after", "1",
                                                 "--limit", "32", "--classes", "10"])
        #expect(result.status == 0, "\(result.stderr)")
        let before = try Data(contentsOf: URL(fileURLWithPath: source))
        // Resuming with an absurd learning rate (near the float maximum) overflows the weights within
        // the epoch's 4 steps.
        result = try runTool("lance-train", [source, "--data", Self.train, "--limit", "32", "--resume", "--lr", "3e38"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("not applied") && result.stderr.contains("checkpoint of epoch 1"), "\(result.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: source)) == before)
    }

    @Test("Ctrl-C stops after the current step and leaves the last checkpoint intact")
    func interrupt() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        let output = folder.appendingPathComponent("interrupted.lance").path
        let out = Pipe(), err = Pipe()
        // The checkpoint of epoch 1 exists once this returns; interrupt during epoch 2.
        let process = try Self.trainingUntilFirstCheckpoint(source: source, output: output, standardOutput: out, standardError: err)
        let checkpoint = try Data(contentsOf: URL(fileURLWithPath: output))
        kill(process.processIdentifier, SIGINT)
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        _ = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 130, "\(stdout)")
        #expect(stdout.contains("interrupted in epoch 2"), "\(stdout)")
        #expect(stdout.contains("checkpoint of epoch 1"), "\(stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == checkpoint)
        #expect(try ContainerFile.read(output).optimizerState?.epoch == 1)
    }

    @Test("kill -9 during training leaves a valid container that --resume continues")
    func killedThenResumed() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        let output = folder.appendingPathComponent("killed.lance").path
        // After the first checkpoint, kill the process without warning during epoch 2.
        let process = try Self.trainingUntilFirstCheckpoint(source: source, output: output, standardOutput: FileHandle.nullDevice,
                                                            standardError: FileHandle.nullDevice)
        usleep(100_000)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        let checkpoint = try ContainerFile.read(output)
        let epoch = try #require(checkpoint.optimizerState?.epoch)
        #expect(epoch >= 1 && epoch < 3)
        let resumed = try runTool("lance-train", [output, "--data", Self.train, "--epochs", "3", "--limit", "800", "--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        // The run finished the remaining epochs (the container keeps the best epoch's weights).
        #expect(resumed.stdout.contains("done:"), "\(resumed.stdout)")
        #expect(try ContainerFile.read(output).metrics.contains { $0.scope == "epoch 3" })
    }

    @Test("--cache-features trains exactly as without it, with and without --flip; --flip changes the training")
    func cachedFeatures() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        func losses(_ extra: [String]) throws -> [String] {
            let output = folder.appendingPathComponent("out-\(extra.joined()).lance").path
            let result = try runTool("lance-train", [source, "--data", Self.train, "--epochs", "3", "--limit", "32", "--classes", "10",
                                                     "-o", output] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            return result.stdout.split(separator: "\n").filter { $0.hasPrefix("epoch ") }.map { String($0.split(separator: ",")[0]) }
        }
        let plain = try losses([]), cached = try losses(["--cache-features"])
        #expect(plain.count == 3)
        #expect(plain == cached)
        // Flipped samples are cached apart from their plain versions.
        let flipped = try losses(["--flip"]), flippedCached = try losses(["--flip", "--cache-features"])
        #expect(flipped.count == 3)
        #expect(flipped == flippedCached)
        #expect(flipped != plain)
    }

    @Test("lance-convert --flip calibrates on mirrored samples and says so in the calibration record")
    func flippedCalibration() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let plain = try ContainerFile.read(try Self.calibratedContainer(in: folder))
        let path = folder.appendingPathComponent("flipped.lance").path
        let result = try runTool("lance-convert", [Self.model, "-o", path, "--input-size", "64,64", "--preprocessing", "imagenet",
                                                   "--resize", "direct", "--calibration", Self.train, "--batch-size", "8",
                                                   "--calibration-batches", "2", "--train-layers", "last:2", "--flip"])
        try #require(result.status == 0, "\(result.stderr)")
        let flipped = try #require(try ContainerFile.read(path).calibration)
        let reference = try #require(plain.calibration)
        #expect(flipped.dataDescription.hasSuffix("random horizontal flips"), "\(flipped.dataDescription)")
        #expect(!reference.dataDescription.contains("flip"))
        // The fingerprint hashes the calibration batches' images in order (read slice by slice).
        let preprocessing = try #require(plain.preprocessing)
        var batches = try BatchIterator(source: try openDataSource(Self.train, preprocessing: preprocessing), batchSize: 8,
                                        shuffleSeed: 0, dropLast: true, limit: 16)
        var hasher = SHA256()
        while let batch = try batches.next() { hasher.update(batch.images) }
        #expect(reference.dataFingerprint == hasher.hexDigest())
        // Same samples, some mirrored: other pixels, so another fingerprint and other spectra.
        #expect(flipped.dataFingerprint != reference.dataFingerprint)
        #expect(flipped.layers.map { $0.modes.map(\.spectrum) } != reference.layers.map { $0.modes.map(\.spectrum) })
    }

    @Test("--train-batchnorm trains the scale and bias of the batch normalizations after the trained layers, and only those")
    func trainedBatchNormalization() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = folder.appendingPathComponent("bn.lance").path
        var result = try runTool("lance-convert", [Fixtures.model("mobilenet_v2_imagenet_bn.onnx"), "-o", source, "--input-size", "64,64",
                                                   "--preprocessing", "imagenet", "--resize", "direct", "--calibration", Self.train,
                                                   "--batch-size", "8", "--calibration-batches", "2", "--train-layers", "last:2"])
        try #require(result.status == 0, "\(result.stderr)")
        let output = folder.appendingPathComponent("trained.lance").path
        result = try runTool("lance-train", [source, "--data", Self.train, "--epochs", "1", "--limit", "16", "--classes", "10",
                                             "--train-batchnorm", "-o", output])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("the scale and bias of 2 batch normalizations"), "\(result.stdout)")
        let before = try ContainerFile.read(source), after = try ContainerFile.read(output)
        #expect(after.optimizerState?.hyperparameters["train_batch_normalization"] == 1)
        var trainedNormalizations = 0
        for node in after.graph.nodes {
            guard case .batchNormalization = node.operation else { continue }
            let scale = try #require(after.graph.parametersByName[node.inputs[1]])
            let bias = try #require(after.graph.parametersByName[node.inputs[2]])
            let moved = scale.tensor != before.graph.parametersByName[node.inputs[1]]?.tensor
                || bias.tensor != before.graph.parametersByName[node.inputs[2]]?.tensor
            // The statistics never move; scale and bias move exactly where they train.
            #expect(after.graph.parametersByName[node.inputs[3]]?.tensor == before.graph.parametersByName[node.inputs[3]]?.tensor)
            #expect(moved == scale.trainable && scale.trainable == bias.trainable, "\(node.name)")
            if scale.trainable { trainedNormalizations += 1 }
        }
        #expect(trainedNormalizations == 2)
        // The model without batch normalization (folded at export) has none to train.
        let plain = try Self.calibratedContainer(in: folder)
        result = try runTool("lance-train", [plain, "--data", Self.train, "--epochs", "1", "--limit", "16", "--classes", "10",
                                             "--train-batchnorm", "-o", folder.appendingPathComponent("none.lance").path])
        #expect(result.status == 1 && result.stderr.contains("no BatchNormalization"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("none.lance").path))
    }

    @Test("the library example (Examples/fine-tune) trains a container with its own batches and writes it back")
    func libraryExample() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.calibratedContainer(in: folder)
        let result = try runTool("lance-example-fine-tune", [source, Self.train, "2"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let losses = result.stdout.split(separator: "\n").filter { $0.hasPrefix("loss ") }
            .compactMap { Float($0.split(separator: ",")[0].dropFirst(5)) }
        #expect(losses.count == 2 && losses.allSatisfy(\.isFinite), "\(result.stdout)")
        let trained = try ContainerFile.read(source)
        #expect(trained.optimizerState?.step == 2)
        #expect(trained.graph.parameters.first { $0.name == "lance_head.weight" }?.tensor.shape.first == 10)
    }

    @Test("a float16 container stays float16 after training (trained weights in float32)")
    func halfPrecisionKept() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let calibrated = try Self.calibratedContainer(in: folder)
        let half = folder.appendingPathComponent("half.lance").path
        #expect(try runTool("lance-convert", [calibrated, "-o", half, "--fp16"]).status == 0)
        let output = folder.appendingPathComponent("trained.lance").path
        let result = try runTool("lance-train", [half, "--data", Self.train, "--epochs", "1", "--limit", "16", "--classes", "10", "-o", output])
        #expect(result.status == 0, "\(result.stderr)")
        let before = try FileManager.default.attributesOfItem(atPath: half)[.size] as? Int ?? 0
        let after = try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int ?? 0
        let manifest = try ContainerFile.readManifestOnly(output)
        let trained = Set(manifest.parameters.filter(\.trainable).map(\.name))
        #expect(!trained.isEmpty)
        for parameter in manifest.parameters {
            #expect(parameter.storage.elementType == (trained.contains(parameter.name) ? .float32 : .float16), "\(parameter.name)")
        }
        #expect(Double(after) < 0.7 * Double(try FileManager.default.attributesOfItem(atPath: calibrated)[.size] as? Int ?? 0),
                "\(before) → \(after) bytes")
    }
}
