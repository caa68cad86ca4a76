import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import Testing

/// The committed sample models (Samples/onnx, made by Samples/make-samples) against onnxruntime,
/// and the importer's errors on malformed files.
@Suite("ONNX importer")
struct ImporterTests {
    static func sample(_ name: String) -> String {
        Fixtures.projectRoot.appendingPathComponent("Samples/onnx/\(name)").path
    }

    @Test("initializers listed as inputs, typed and raw data, Constant weights and a shape sub-graph")
    func tinyCNN() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        #expect(graph.inputs.map(\.name) == ["x"], "initializers listed as graph inputs are parameters, not inputs")
        #expect(graph.nodes.map(\.operation.opType) == ["Conv", "BatchNormalization", "Relu", "MaxPool", "Reshape", "Gemm", "Softmax"])
        if case .reshape(let shape, _) = graph.nodes[4].operation {
            #expect(shape == [0, -1], "the batch entry of the folded shape stays symbolic")
        } else {
            Issue.record("node 4 is not a Reshape")
        }
        #expect(graph.parametersByName["fc.weight"]?.tensor.shape == [5, 64], "Constant-node weights become parameters")
        #expect(graph.parametersByName["bn.mean"]?.trainable == false)
        let input = try NPY.read(Self.sample("tiny_input.npy")).tensor
        let expected = try NPY.read(Self.sample("tiny_cnn_expected.npy")).tensor
        let output = try InferenceSession(graph: graph).run(input)
        #expect(output.isClose(to: expected, absolute: 1e-5, relative: 1e-4))
        // The symbolic batch axis: one sample at a time gives the same rows.
        let single = try InferenceSession(graph: graph).run(input.slice(batch: 1..<2))
        #expect(single.isClose(to: expected.slice(batch: 1..<2), absolute: 1e-5, relative: 1e-4))
    }

    @Test("external data at an offset and float16 weights behind a Cast")
    func externalDataAndFloat16() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("external_fp16.onnx"))
        #expect(graph.parametersByName["conv1.weight"]?.tensor.shape == [2, 3, 3, 3])
        let input = try NPY.read(Self.sample("external_fp16_input.npy")).tensor
        let expected = try NPY.read(Self.sample("external_fp16_expected.npy")).tensor
        let output = try InferenceSession(graph: graph).run(input)
        #expect(output.isClose(to: expected, absolute: 1e-5, relative: 1e-4))
    }

    @Test("an initializer of the wrong size names the tensor")
    func wrongInitializerSize() {
        let path = Self.sample("bad_initializer_size.onnx")
        #expect(throws: ONNXError.invalidTensor(path: path, tensor: "conv.weight",
                                                      reason: "raw_data holds 424 bytes but [4, 3, 3, 3] of FLOAT needs 432")) {
            try ONNXImporter.importModel(at: path)
        }
    }

    @Test("a missing initializer names the node and the value")
    func missingInitializer() throws {
        let path = Self.sample("missing_initializer.onnx")
        let error = try #require(throws: ONNXError.self) { try ONNXImporter.importModel(at: path) }
        guard case .invalidNode(path, "conv", "Conv", let reason) = error else {
            Issue.record("unexpected error \(error)")
            return
        }
        #expect(reason.contains("'conv.bias'"))
        #expect(error.description.hasPrefix(path))
    }

    @Test("unknown operators are listed all at once as a table")
    func unknownOperators() throws {
        let path = Self.sample("unknown_operator.onnx")
        let error = try #require(throws: ONNXError.self) { try ONNXImporter.importModel(at: path) }
        guard case .unsupportedOperators(path, let operators) = error else {
            Issue.record("unexpected error \(error)")
            return
        }
        #expect(operators.map(\.opType) == ["com.example.FancyNorm", "Mish", "LpPool"])
        #expect(operators.map(\.nodes) == [["custom"], ["relu"], ["pool"]])
        let table = try #require(error.operatorTable)
        #expect(table.hasPrefix("op "))
        #expect(table.contains("Mish ") && table.contains("| relu "))
    }

    @Test("a truncated model file and random bytes are reported, not crashed on")
    func truncatedAndRandom() throws {
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.sample("tiny_cnn.onnx"))))
        for length in [0, 1, 17, original.count / 2, original.count - 3] {
            do {
                _ = try ONNXImporter.importModel(bytes: Array(original.prefix(length)), path: "cut.onnx")
                Issue.record("a model cut to \(length) bytes was accepted")
            } catch {
                #expect(error.description.hasPrefix("cut.onnx: "))
            }
        }
        var generator = SeededGenerator(seed: 7)
        for trial in 0..<20 {
            let noise = (0..<(64 + trial * 100)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(throws: ONNXError.self) { try ONNXImporter.importModel(bytes: noise, path: "noise.onnx") }
        }
    }

    @Test("a missing file, a folder and a file that is not a model are reported with their path")
    func unreadableFiles() throws {
        #expect(throws: ONNXError.unreadableFile(path: "/nonexistent/model.onnx", reason: "no such file")) {
            try ONNXImporter.importModel(at: "/nonexistent/model.onnx")
        }
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        do {
            _ = try ONNXImporter.importModel(at: folder.path)
            Issue.record("a folder was imported")
        } catch {
            guard case .unreadableFile(let path, _) = error else { Issue.record("\(error)"); return }
            #expect(path == folder.path)
        }
        // Bytes that are not a protobuf message (a wire type 7 tag), read through the file's mapping.
        let garbage = folder.appendingPathComponent("garbage.onnx")
        try Data([0x0F, 0xFF, 0xFF, 0xFF]).write(to: garbage)
        #expect(throws: ONNXError.notAnONNXModel(path: garbage.path)) { try ONNXImporter.importModel(at: garbage.path) }
    }

    @Test("input data of the wrong shape is rejected before computing")
    func wrongInputShape() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        #expect(throws: ModelError.inputShapeMismatch(input: "x", expected: "[batch, 3, 8, 8]", actual: [2, 3, 9, 8])) {
            try InferenceSession(graph: graph).run(Tensor(shape: [2, 3, 9, 8]))
        }
        #expect(throws: ModelError.inputShapeMismatch(input: "x", expected: "[batch, 3, 8, 8]", actual: [3, 8, 8])) {
            try InferenceSession(graph: graph).run(Tensor(shape: [3, 8, 8]))
        }
    }
}
