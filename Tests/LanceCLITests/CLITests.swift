import Foundation
import LanceCore
import LanceData
import LanceTestSupport
import Testing

/// Runs a built tool from the products folder and returns its exit status and output.
func runTool(_ name: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var executable = products.appendingPathComponent(name)
    if !FileManager.default.fileExists(atPath: executable.path) {
        // Under `swift test` the runner lives in a bundle inside the products folder.
        executable = products.deletingLastPathComponent().appendingPathComponent(name)
        if !FileManager.default.fileExists(atPath: executable.path) {
            executable = Fixtures.projectRoot.appendingPathComponent(".build/debug/\(name)")
        }
    }
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

@Suite("lance-inspect and lance-eval")
struct CLITests {
    @Test("usage errors exit 64")
    func usageError() throws {
        let result = try runTool("lance-eval", ["model.onnx"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("--data"))
    }
}

@Suite("lance-inspect and lance-eval on sample models")
struct SampleCLITests {
    static func sample(_ name: String) -> String {
        Fixtures.projectRoot.appendingPathComponent("Samples/onnx/\(name)").path
    }

    @Test("inspect prints the layer table and totals")
    func inspectText() throws {
        let result = try runTool("lance-inspect", [Self.sample("tiny_cnn.onnx"), "--batch-size", "4"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("format    onnx, opset 13, producer lance-samples"))
        #expect(result.stdout.contains("inputs    x [batch, 3, 8, 8]"))
        #expect(result.stdout.contains("0  conv     Conv                [4, 4, 8, 8]     112  27,648"))
        #expect(result.stdout.contains("totals    7 layers, 453 parameters"))
    }

    @Test("inspect --json carries the same data")
    func inspectJSON() throws {
        let result = try runTool("lance-inspect", [Self.sample("tiny_cnn.onnx"), "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["totalParameters"] as? Int == 453)
        #expect(object["formatVersion"] as? String == "opset 13")
        let layers = try #require(object["layers"] as? [[String: Any]])
        #expect(layers.count == 7)
        #expect(layers.first?["op"] as? String == "Conv")
        #expect(layers.first?["macs"] as? Int == 6_912)
        #expect(layers.first?["outputShape"] as? [Int] == [1, 4, 8, 8])
    }

    @Test("unsupported operators: a table on stderr and exit 1")
    func inspectUnsupported() throws {
        let result = try runTool("lance-inspect", [Self.sample("unknown_operator.onnx")])
        #expect(result.status == 1)
        #expect(result.stderr.contains("op                    | count | nodes  | reason"))
        #expect(result.stderr.contains("LpPool                | 1     | pool   | not implemented"))
    }

    @Test("malformed files exit 1 with one sentence naming the file")
    func malformed() throws {
        for (file, fragment) in [("bad_initializer_size.onnx", "tensor 'conv.weight'"),
                                 ("missing_initializer.onnx", "node 'conv' (Conv)"),
                                 ("tiny_input.npy", "not an ONNX model")] {
            // tiny_input.npy given as a model: the wrong format is detected by extension first.
            let path = Self.sample(file)
            let result = try runTool("lance-inspect", [path])
            #expect(result.status == 1, "\(file)")
            if file.hasSuffix(".onnx") {
                #expect(result.stderr.contains(path) && result.stderr.contains(fragment), "\(result.stderr)")
            } else {
                #expect(result.stderr.contains("unknown model format"), "\(result.stderr)")
            }
        }
    }

    @Test("eval writes outputs that equal onnxruntime's and reports top-1")
    func evalOutputs() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let labels = folder.appendingPathComponent("labels.npy").path
        let expected = try NPY.read(Self.sample("tiny_cnn_expected.npy")).tensor
        try NPY.write(Tensor(shape: [3], scalars: expected.argmaxPerRow().map(Float.init)), to: labels)
        let outputs = folder.appendingPathComponent("out.npy").path
        let result = try runTool("lance-eval", [Self.sample("tiny_cnn.onnx"), "--data", Self.sample("tiny_input.npy"),
                                                "--labels", labels, "--dump-outputs", outputs, "--batch-size", "2"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("top-1 3/3 (100.00%)"))
        let written = try NPY.read(outputs).tensor
        #expect(written.isClose(to: expected, absolute: 1e-5, relative: 1e-4))
        // --limit takes the first samples of an array too.
        let limited = try runTool("lance-eval", [Self.sample("tiny_cnn.onnx"), "--data", Self.sample("tiny_input.npy"),
                                                 "--labels", labels, "--dump-outputs", outputs, "--limit", "2"])
        #expect(limited.status == 0, "\(limited.stderr)")
        #expect(limited.stdout.contains("top-1 2/2"), "\(limited.stdout)")
        #expect(try NPY.read(outputs).tensor.shape == [2, expected.shape[1]])
    }

    @Test("eval rejects data of the wrong shape and leaves no output file")
    func evalWrongShape() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let data = folder.appendingPathComponent("data.npy").path
        try NPY.write(Tensor(shape: [2, 3, 9, 9]), to: data)
        let outputs = folder.appendingPathComponent("out.npy").path
        let result = try runTool("lance-eval", [Self.sample("tiny_cnn.onnx"), "--data", data, "--dump-outputs", outputs])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(data): samples have shape [3, 9, 9], but model input 'x' expects [batch, 3, 8, 8]"))
        #expect(!FileManager.default.fileExists(atPath: outputs))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["data.npy"])
    }
}

@Suite("lance-inspect and lance-eval on Keras files")
struct KerasCLITests {
    static func sample(_ name: String) -> String {
        Fixtures.projectRoot.appendingPathComponent("Samples/keras/\(name)").path
    }

    @Test("eval --input-layout nhwc on a .keras archive equals Keras's predictions")
    func evalNHWC() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let outputs = folder.appendingPathComponent("out.npy").path
        let result = try runTool("lance-eval", [Self.sample("functional_branches.keras"), "--data",
                                                Self.sample("functional_branches_input.npy"), "--input-layout", "nhwc",
                                                "--dump-outputs", outputs])
        #expect(result.status == 0, "\(result.stderr)")
        let expected = try NPY.read(Self.sample("functional_branches_expected.npy")).tensor
        #expect(try NPY.read(outputs).tensor.isClose(to: expected, absolute: 1e-5, relative: 1e-4))
    }

    @Test("inspect shows Keras's parameter count")
    func inspectCount() throws {
        let result = try runTool("lance-inspect", [Self.sample("conv_layers.h5")])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("format    keras-h5, Keras 3.15.1"))
        #expect(result.stdout.contains("totals    29 layers, 1,829 parameters"))
    }

    @Test("malformed Keras files: one error line, no HDF5 dump, exit 1")
    func malformedQuiet() throws {
        for file in ["not_hdf5.h5", "truncated.h5", "missing_model_weights.h5", "wrong_weight_shape.h5"] {
            let result = try runTool("lance-inspect", [Self.sample(file)])
            #expect(result.status == 1, "\(file)")
            #expect(!result.stderr.contains("HDF5-DIAG"), "\(file): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(file): \(result.stderr)")
        }
        let unknown = try runTool("lance-inspect", [Self.sample("unknown_layer.h5")])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("FancyLayer | 1     | leaky_re_lu | not implemented"))
    }
}

@Suite("lance-convert and containers",
       .enabled(if: Fixtures.sharedAvailable && Fixtures.fashionMNISTAvailable,
                "needs ../shared/models (or $LANCE_SHARED) and Fashion-MNIST (apt-get install dataset-fashion-mnist)"))
struct ConvertCLITests {
    static let model = Fixtures.model("mobilenet_v2_imagenet.onnx")
    static let fashion = Fixtures.fashionMNISTRoot.appendingPathComponent("train-images-idx3-ubyte.gz").path

    @Test("convert without calibration, then add bases to the container; eval and inspect read it")
    func convertThenCalibrate() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let plain = folder.appendingPathComponent("plain.lance").path
        let calibrated = folder.appendingPathComponent("calibrated.lance").path
        var result = try runTool("lance-convert", [Self.model, "-o", plain])
        #expect(result.status == 0, "\(result.stderr)")
        result = try runTool("lance-inspect", [plain, "--train-layers", "last:2", "--batch-size", "128", "--input-size", "224,224", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let training = try #require(json["training"] as? [String: Any])
        #expect(abs((training["convolutionFullMiB"] as? Double ?? 0) - 30.63) < 0.005)
        result = try runTool("lance-convert", [plain, "-o", calibrated, "--calibration", Self.fashion, "--preprocessing", "imagenet",
                                              "--resize", "direct", "--train-layers", "last:2",
                                              "--batch-size", "4", "--calibration-batches", "2"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("calibration: 2 batches of 4"))
        result = try runTool("lance-inspect", [calibrated, "--bases"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("calibration  ε 0.7, 2 batches of 4, plain-sum, layers last:2"))
        #expect(result.stdout.contains("bases of /classifier/classifier.1/Gemm"))
        // The container still runs the model.
        let logits = folder.appendingPathComponent("logits.npy").path
        result = try runTool("lance-eval", [calibrated, "--data", Fixtures.data("imagenet20/images.npy"), "--labels",
                                            Fixtures.data("imagenet20/labels.npy"), "--dump-outputs", logits])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("top-1 18/20"))
        let reference = try NPY.read(Fixtures.data("imagenet20/logits_ref.npy")).tensor
        #expect(try NPY.read(logits).tensor.maxAbsoluteDifference(to: reference) < 1e-3)
    }

    @Test("eval reads IDX data with the container's preprocessing and labels")
    func evalDataSource() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let container = folder.appendingPathComponent("small.lance").path
        var result = try runTool("lance-convert", [Self.model, "-o", container, "--preprocessing", "imagenet", "--resize", "direct",
                                                   "--input-size", "64,64"])
        #expect(result.status == 0, "\(result.stderr)")
        let test = Fixtures.fashionMNISTRoot.appendingPathComponent("t10k-images-idx3-ubyte.gz").path
        result = try runTool("lance-eval", [container, "--data", test, "--limit", "24", "--batch-size", "8"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("24 samples in"))
        #expect(result.stdout.contains("outputs [24, 1000]"))
        #expect(result.stdout.contains("top-1 "), "Fashion-MNIST's labels are read with the images")
    }

    @Test("peak memory of calibration does not grow with the number of batches")
    func boundedMemory() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        func peak(batches: Int) throws -> Double {
            let result = try runTool("lance-convert", [Self.model, "-o", folder.appendingPathComponent("c\(batches).lance").path,
                                                       "--calibration", Self.fashion, "--preprocessing", "imagenet", "--resize", "direct",
                                                       "--input-size", "96,96", "--batch-size", "16", "--calibration-batches", "\(batches)"])
            #expect(result.status == 0, "\(result.stderr)")
            let line = result.stdout.split(separator: "\n").first { $0.contains("peak resident memory") } ?? ""
            return Double(line.split(separator: " ").dropLast().last ?? "") ?? .infinity
        }
        let few = try peak(batches: 2), many = try peak(batches: 12)
        #expect(many < few * 1.1 + 20, "2 batches: \(few) MiB, 12 batches: \(many) MiB")
    }

    @Test("bad inputs: unknown calibration file, unsupported layer selection, non-.lance output, an undecodable calibration image")
    func errors() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("out.lance").path
        var result = try runTool("lance-convert", [Self.model, "-o", output, "--calibration", "/nonexistent/data.npy"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/data.npy"))
        result = try runTool("lance-convert", [Self.model, "-o", output, "--calibration", Self.fashion, "--train-layers", "no_such_node"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("no node named 'no_such_node'"))
        result = try runTool("lance-convert", [Self.model, "-o", folder.appendingPathComponent("out.onnx").path])
        #expect(result.status == 64)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty, "no output is left behind")

        // A calibration image that cannot be decoded, met while a batch is read slice by slice.
        let images = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: images) }
        let data = images.appendingPathComponent("images")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: Fixtures.sampleData("images")), to: data)
        try Data("not a PNG".utf8).write(to: data.appendingPathComponent("cat/b.png"))
        result = try runTool("lance-convert", [Self.model, "-o", output, "--calibration", data.path, "--preprocessing", "imagenet",
                                               "--input-size", "64,64", "--resize", "direct", "--batch-size", "7", "--calibration-batches", "1"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("cat/b.png"), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty, "no output is left behind")
    }
}
