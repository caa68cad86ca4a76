import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceKeras
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import Testing

/// Export helpers: write a graph as `.h5` and `.keras` into a fresh folder and import the files
/// again with LANCE's own Keras importer.
enum KerasExportSupport {
    static func reimported(_ graph: Graph, format: String, in folder: URL) throws -> Graph {
        let path = folder.appendingPathComponent("exported.\(format)").path
        try KerasExporter.write(graph, to: path)
        return try KerasImporter.importModel(at: path)
    }

    /// An order-independent fingerprint of the bit patterns of every exported (non-synthesized)
    /// weight: the count and a sum of mixed bit patterns. Equal for two graphs whose weights are
    /// the same numbers, whatever their names and layouts (one pass, unlike sorting millions of
    /// values in a debug build).
    static func weightBits(_ graph: Graph) -> (count: Int, mixedSum: UInt64) {
        var count = 0
        var sum: UInt64 = 0
        for parameter in graph.parameters where !parameter.synthesized {
            parameter.tensor.withUnsafeBufferPointer { values in
                for value in values {
                    var mixed = UInt64(value.bitPattern) &+ 0x9E37_79B9_7F4A_7C15
                    mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
                    mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
                    sum &+= mixed ^ (mixed >> 31)
                }
                count += values.count
            }
        }
        return (count, sum)
    }

    static func sample(_ name: String) -> String {
        Fixtures.projectRoot.appendingPathComponent("Samples/onnx/\(name)").path
    }

    /// Runs a graph on the first `count` NCHW images of an `.npy` batch.
    static func run(_ graph: Graph, nchw path: String, count: Int) throws -> Tensor {
        try InferenceSession(graph: graph).run(NPY.read(path).tensor.slice(batch: 0..<count))
    }
}

@Suite("Keras export of the pretrained CIFAR-10 CNN",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models and ../shared/data (or $LANCE_SHARED); they are missing"))
struct KerasExportPretrainedTests {
    @Test("container → .h5 and .keras → import: the same weights bit for bit, nodes, inputs and outputs",
          arguments: ["h5", "keras"])
    func containerRoundTrip(format: String) throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let imported = try KerasImporter.importModel(at: Fixtures.model("cifar10_cnn.h5"))
        let containerPath = folder.appendingPathComponent("cifar10.lance").path
        try ContainerFile.write(Container(graph: imported, sourceSHA256: ""), to: containerPath)
        let graph = try ContainerFile.read(containerPath).graph

        let again = try KerasExportSupport.reimported(graph, format: format, in: folder)
        #expect(again.parameters.map(\.name) == graph.parameters.map(\.name))
        let before = graph.parametersByName
        for parameter in again.parameters {
            let original = try #require(before[parameter.name])
            #expect(parameter.tensor.shape == original.tensor.shape, "\(parameter.name)")
            #expect(parameter.tensor.scalars.map(\.bitPattern) == original.tensor.scalars.map(\.bitPattern), "\(parameter.name)")
            #expect(parameter.layoutChange == original.layoutChange, "\(parameter.name)")
            #expect(parameter.trainable == original.trainable, "\(parameter.name)")
        }
        // The Dense after Flatten had its rows permuted at import; the export undid it exactly.
        #expect(again.parametersByName["dense/kernel"]?.layoutChange?.permutation == [2, 0, 1, 3])
        #expect(again.nodes.map(\.name) == graph.nodes.map(\.name))
        #expect(again.nodes.map(\.operation) == graph.nodes.map(\.operation))
        #expect(again.inputs == graph.inputs)
        #expect(again.provenance.formatVersion == "Keras \(KerasExporter.kerasVersion)")

        let images = try NPY.read(Fixtures.data("cifar10-20/images_nhwc.npy")).tensor.slice(batch: 0..<4)
        let folderForInput = folder.appendingPathComponent("images.npy").path
        try NPY.write(images, to: folderForInput)
        let original = try KerasFixtures.run(graph, nhwc: folderForInput)
        let exported = try KerasFixtures.run(again, nhwc: folderForInput)
        #expect(exported == original, "same graph, same weights: identical outputs")
        let reference = try NPY.read(Fixtures.data("cifar10-20/logits_ref.npy")).tensor.slice(batch: 0..<4)
        #expect(exported.maxAbsoluteDifference(to: reference) < 1e-3)
    }
}

@Suite("Keras export of the Keras 3 fixtures")
struct KerasExportFixtureTests {
    @Test(".h5 and .keras re-import: the same weights, outputs within 1e-5 of the original and 1e-4 of Keras",
          arguments: KerasFixtures.models)
    func fixture(_ fixture: KerasFixtures.Fixture) throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let graph = try KerasImporter.importModel(at: KerasFixtures.path("\(fixture.name).keras"))
        let input = KerasFixtures.path("\(fixture.name)_input.npy")
        let original = try KerasFixtures.run(graph, nhwc: input)
        let expected = try NPY.read(KerasFixtures.path("\(fixture.name)_expected.npy")).tensor
        for format in ["h5", "keras"] {
            let again = try KerasExportSupport.reimported(graph, format: format, in: folder)
            #expect(KerasExportSupport.weightBits(again) == KerasExportSupport.weightBits(graph), "\(format)")
            #expect(try again.summary().parameterCount == fixture.count_params, "\(format)")
            let output = try KerasFixtures.run(again, nhwc: input)
            #expect(output.maxAbsoluteDifference(to: original) <= 1e-5, "\(format)")
            #expect(output.maxAbsoluteDifference(to: expected) < 1e-4, "\(format)")
        }
    }
}

@Suite("Keras export of models imported from ONNX")
struct KerasExportFromONNXTests {
    @Test("MobileNetV2 (Conv, BatchNormalization, Clip(0, 6), Add, ReduceMean, Gemm) exports, and re-imports with the same outputs",
          .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models and ../shared/data (or $LANCE_SHARED); they are missing"))
    func mobileNet() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet_bn.onnx"))
        let again = try KerasExportSupport.reimported(graph, format: "keras", in: folder)
        #expect(KerasExportSupport.weightBits(again) == KerasExportSupport.weightBits(graph))
        #expect(try again.summary().parameterCount == graph.summary().parameterCount)
        #expect(again.nodes.filter { $0.operation.opType == "BatchNormalization" }.count == 52)
        // Stride-2 convolutions with symmetric padding become ZeroPadding2D + 'valid'.
        #expect(again.nodes.contains { $0.operation.opType == "Pad" })
        let images = try NPY.read(Fixtures.data("imagenet20/images.npy")).tensor.slice(batch: 0..<1)
        let difference = try InferenceSession(graph: again).run(images).maxAbsoluteDifference(to: InferenceSession(graph: graph).run(images))
        #expect(difference <= 1e-4, "max |Δ| = \(difference)")
    }

    @Test("the ONNX sample CNN: Reshape-flatten before Gemm becomes Flatten + Dense with rows in Keras order")
    func tinyCNN() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let graph = try ONNXImporter.importModel(at: KerasExportSupport.sample("tiny_cnn.onnx"))
        let input = try NPY.read(KerasExportSupport.sample("tiny_input.npy")).tensor
        for format in ["h5", "keras"] {
            let again = try KerasExportSupport.reimported(graph, format: format, in: folder)
            let dense = try #require(again.parameters.first { $0.name.hasSuffix("/kernel") && $0.tensor.rank == 2 })
            #expect(dense.layoutChange?.permutation == [2, 0, 1, 3], "the importer permutes the rows back")
            let difference = try InferenceSession(graph: again).run(input).maxAbsoluteDifference(to: InferenceSession(graph: graph).run(input))
            #expect(difference <= 1e-6, "\(format): max |Δ| = \(difference)")
        }
    }

    @Test("nodes Keras cannot express fail before anything is written, all listed with op, node and reason")
    func unsupported() throws {
        var graph = try ONNXImporter.importModel(at: KerasExportSupport.sample("tiny_cnn.onnx"))
        let relu = try #require(graph.nodes.firstIndex { $0.name == "relu" })
        graph.nodes[relu].operation = .activation(.clip(minimum: -1, maximum: 1))
        let pool = try #require(graph.nodes.firstIndex { $0.name == "pool" })
        guard case .maxPool(var pooling) = graph.nodes[pool].operation else { throw CancellationError() }
        pooling.window.dilations = [2, 2]
        pooling.window.kernelSize = [1, 1]
        graph.nodes[pool].operation = .maxPool(pooling)
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        for format in ["h5", "keras"] {
            let path = folder.appendingPathComponent("out.\(format)").path
            let error = try #require(throws: KerasError.self) { try KerasExporter.write(graph, to: path) }
            guard case .unexportableNodes(path, let nodes) = error else {
                Issue.record("unexpected error \(error)")
                continue
            }
            #expect(nodes.map(\.node) == ["relu", "pool"])
            #expect(nodes.map(\.opType) == ["Clip", "MaxPool"])
            #expect(error.description.hasPrefix("\(path): 2 nodes cannot be expressed as Keras layers (Clip, MaxPool); nothing was written"))
            let table = try #require(error.nodeTable)
            #expect(table.hasPrefix("op      | count | nodes | reason"))
            #expect(table.contains("Clip    | 1     | relu  | Clip(-1.0, 1.0): Keras's ReLU clips from 0 only"))
            #expect(table.contains("MaxPool | 1     | pool  | dilated pooling has no Keras layer"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty, "no file, not even a temporary one")
        }
    }

    @Test("an ONNX conformance model with a dilated MaxPool fails naming the node; nothing is written",
          .enabled(if: Fixtures.conformanceAvailable, "needs the ONNX conformance suite (apt-get install libonnx-testdata)"))
    func conformanceModel() throws {
        let model = Fixtures.conformanceRoot.appendingPathComponent("test_maxpool_2d_dilations/model.onnx").path
        let graph = try ONNXImporter.importModel(at: model)
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("out.keras").path
        let error = try #require(throws: KerasError.self) { try KerasExporter.write(graph, to: path) }
        #expect(error == .unexportableNodes(path: path, nodes: [UnexportableNode(opType: "MaxPool", node: "MaxPool_0",
                                                                                reason: "dilated pooling has no Keras layer")]))
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(throws: KerasError.self) { try KerasExporter.checkExportable(graph) }
    }

    @Test("an output name without .h5 or .keras is refused")
    func unknownFormat() throws {
        let graph = try ONNXImporter.importModel(at: KerasExportSupport.sample("tiny_cnn.onnx"))
        #expect(throws: KerasError.unknownFormat(path: "/tmp/model.pb")) { try KerasExporter.write(graph, to: "/tmp/model.pb") }
    }
}
