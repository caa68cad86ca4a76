import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import Testing

@Suite("ONNX export options: BatchNormalization folding, opset, external data")
struct ExporterOptionsTests {
    static func sample(_ name: String) -> String { ExporterTests.sample(name) }

    static func reimport(_ exported: ONNXExport) throws -> Graph {
        try ONNXImporter.importModel(bytes: exported.model, path: "exported.onnx")
    }

    @Test("--fold-batchnorm folds the sample's Conv → BatchNormalization: same outputs, Conv keeps its names")
    func foldSample() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        let exported = try ONNXExporter.export(graph, options: ONNXExportOptions(foldBatchNormalization: true))
        #expect(exported.foldedBatchNormalizations == ["bn"])
        let folded = try Self.reimport(exported)
        #expect(!folded.nodes.contains { $0.operation.opType == "BatchNormalization" })
        let convolution = try #require(folded.nodes.first { $0.name == "conv" })
        #expect(convolution.inputs[1] == graph.nodes.first { $0.name == "conv" }?.inputs[1], "the kernel keeps its name")
        #expect(convolution.output == graph.nodes.first { $0.name == "bn" }?.output, "the Conv takes over the BatchNormalization's output")
        #expect(folded.parameters.map(\.name) == graph.parameters.map(\.name).filter { !$0.hasPrefix("bn.") },
                "the Conv has a bias, so all four BatchNormalization parameters are gone")
        // Against the reference runtime's outputs of the unfolded model.
        let input = try NPY.read(Self.sample("tiny_input.npy")).tensor
        let expected = try NPY.read(Self.sample("tiny_cnn_expected.npy")).tensor
        #expect(try InferenceSession(graph: folded).run(input).isClose(to: expected, absolute: 1e-5, relative: 1e-4))
        let kept = try Self.reimport(ONNXExporter.export(graph, options: ONNXExportOptions()))
        #expect(kept.nodes.map(\.operation) == graph.nodes.map(\.operation), "without the option BatchNormalization stays")
    }

    @Test("an InferenceSession runs Conv → BatchNormalization folded, unless the Conv's output is also read elsewhere")
    func sessionFolds() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        let input = try NPY.read(Self.sample("tiny_input.npy")).tensor
        let expected = try NPY.read(Self.sample("tiny_cnn_expected.npy")).tensor
        let session = InferenceSession(graph: graph)
        #expect(!session.graph.nodes.contains { $0.operation.opType == "BatchNormalization" })
        #expect(try session.run(input).isClose(to: expected, absolute: 1e-5, relative: 1e-4))
        // The Conv's own output asked for as well: nothing to fold, the same logits.
        var both = graph
        let convolution = try #require(graph.nodes.first { $0.name == "conv" })
        both.outputs.append(ValueInfo(name: convolution.output, dimensions: nil))
        let unfolded = InferenceSession(graph: both)
        #expect(unfolded.graph.nodes.contains { $0.operation.opType == "BatchNormalization" })
        let outputs = try unfolded.run([graph.inputs[0].name: input])
        #expect(try #require(outputs[graph.outputs[0].name]).isClose(to: expected, absolute: 1e-5, relative: 1e-4))
    }

    @Test("--fold-batchnorm on MobileNetV2: all 52 BatchNormalization folded, logits within 1e-3 of ONNX Runtime's",
          .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models and ../shared/data (or $LANCE_SHARED); they are missing"))
    func foldMobileNet() throws {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet_bn.onnx"))
        let exported = try ONNXExporter.export(graph, options: ONNXExportOptions(foldBatchNormalization: true))
        #expect(exported.foldedBatchNormalizations.count == 52)
        let folded = try Self.reimport(exported)
        #expect(folded.nodes.count == graph.nodes.count - 52)
        // Each folded BatchNormalization's scale, mean and variance are gone; its bias is the Conv's bias now.
        let channels = graph.nodes.filter { $0.operation.opType == "BatchNormalization" }
            .reduce(0) { $0 + (graph.parametersByName[$1.inputs[1]]?.tensor.count ?? 0) }
        #expect(try folded.summary().parameterCount == graph.summary().parameterCount - 3 * channels)
        // Against ONNX Runtime's logits of the unfolded model.
        let images = try NPY.read(Fixtures.data("imagenet20/images.npy")).tensor.slice(batch: 0..<2)
        let reference = try NPY.read(Fixtures.data("imagenet20/logits_ref.npy")).tensor.slice(batch: 0..<2)
        let difference = try InferenceSession(graph: folded).run(images).maxAbsoluteDifference(to: reference)
        #expect(difference <= 1e-3, "max |Δ| = \(difference)")
    }

    @Test("a BatchNormalization that does not directly follow a Conv or Gemm stays")
    func foldOnlyAfterConvolution() throws {
        var graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        // A ReLU between the Conv and the BatchNormalization.
        let bn = try #require(graph.nodes.firstIndex { $0.name == "bn" })
        let convOutput = graph.nodes[bn].inputs[0]
        graph.nodes.insert(Node(name: "relu_before_bn", operation: .activation(.relu), inputs: [convOutput], output: "relu_before_bn"), at: bn)
        graph.nodes[bn + 1].inputs[0] = "relu_before_bn"
        _ = try graph.inferShapes(inputShapes: graph.inputShapes(batchSize: 1))
        let exported = try ONNXExporter.export(graph, options: ONNXExportOptions(foldBatchNormalization: true))
        #expect(exported.foldedBatchNormalizations.isEmpty)
        #expect(try Self.reimport(exported).nodes.contains { $0.operation.opType == "BatchNormalization" })
    }

    @Test("--opset: written as asked and read back the same; 13 by default")
    func opsets() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        #expect(try ONNXExporter.export(graph, options: ONNXExportOptions()).opset == 13)
        for opset in [11, 12, 13, 17, 18, 21] {
            let exported = try ONNXExporter.export(graph, options: ONNXExportOptions(opset: opset))
            #expect(exported.opset == opset)
            let again = try Self.reimport(exported)
            #expect(again.provenance.formatVersion.contains("\(opset)"), "opset \(opset): \(again.provenance.formatVersion)")
            // Before opset 13 Softmax flattens to 2-D at its axis: the same here, where the axis is the last.
            let expected = graph.nodes.map { node -> Operator in
                if case .softmax(let axis, _) = node.operation, opset < 13 { return .softmax(axis: axis, coercedTo2D: true) }
                return node.operation
            }
            #expect(again.nodes.map(\.operation) == expected, "opset \(opset)")
        }
    }

    @Test("--opset 11 and 18 on MobileNetV2: ReduceMean's axes as attribute and as input, same graph",
          .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models (or $LANCE_SHARED); they are missing"))
    func opsetsMobileNet() throws {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        for opset in [11, 18] {
            let again = try Self.reimport(ONNXExporter.export(graph, options: ONNXExportOptions(opset: opset)))
            #expect(again.nodes.map(\.operation) == graph.nodes.map(\.operation), "opset \(opset)")
        }
    }

    @Test("opsets that cannot express the graph are refused, naming the nodes")
    func opsetRefusals() throws {
        var graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        #expect(throws: ONNXError.unexportableOpset(path: "model.onnx", opset: 10, nodes: [])) {
            try ONNXExporter.export(graph, options: ONNXExportOptions(opset: 10))
        }
        let tooHigh = try #require(throws: ONNXError.self) { try ONNXExporter.export(graph, options: ONNXExportOptions(opset: 22)) }
        #expect(tooHigh.description == "model.onnx: opset 22 is not supported; LANCE writes opsets 11 to 21")
        let relu = try #require(graph.nodes.firstIndex { $0.name == "relu" })
        graph.nodes[relu].operation = .activation(.hardSwish)
        #expect(try ONNXExporter.export(graph, options: ONNXExportOptions()).opset == 14)
        let error = try #require(throws: ONNXError.self) { try ONNXExporter.export(graph, options: ONNXExportOptions(opset: 13)) }
        #expect(error.description == "model.onnx: opset 13 cannot express 1 node: 'relu' (HardSwish needs opset 14 or later)")
        // A Softmax coerced to 2-D (opset < 13) over a non-last axis and a HardSwish: no single opset.
        let pool = try #require(graph.nodes.firstIndex { $0.name == "pool" })
        graph.nodes.insert(Node(name: "coerced", operation: .softmax(axis: 1, coercedTo2D: true), inputs: [graph.nodes[pool].output],
                                output: "coerced_output"), at: pool + 1)
        graph.outputs.append(ValueInfo(name: "coerced_output", dimensions: nil))
        let conflict = try #require(throws: ONNXError.self) { try ONNXExporter.export(graph, options: ONNXExportOptions()) }
        #expect(conflict.description.hasPrefix("model.onnx: no single opset expresses these 2 nodes together: "))
        #expect(conflict.description.contains("'relu' (HardSwish needs opset 14 or later)"))
        #expect(conflict.description.contains("'coerced' (Softmax coerced to 2-D needs an opset before 13)"))
    }

    @Test("a dilated AveragePool is written with opset 19")
    func dilatedAveragePool() throws {
        var graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        let pool = try #require(graph.nodes.firstIndex { $0.name == "pool" })
        guard case .maxPool(var pooling) = graph.nodes[pool].operation else { throw CancellationError() }
        pooling.window.dilations = [2, 2]
        pooling.window.kernelSize = [1, 1]
        graph.nodes[pool].operation = .averagePool(pooling, countIncludePad: false)
        let exported = try ONNXExporter.export(graph, options: ONNXExportOptions())
        #expect(exported.opset == 19)
        #expect(try Self.reimport(exported).nodes.map(\.operation) == graph.nodes.map(\.operation))
    }

    @Test("external data: past the threshold every weight goes to OUT.onnx.data and reads back bit for bit")
    func externalData() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("tiny.onnx").path
        let inline = try ONNXExporter.export(graph, options: ONNXExportOptions(), path: path)
        #expect(inline.externalData == nil && inline.externalDataLocation == nil)
        let exported = try ONNXExporter.write(graph, to: path, options: ONNXExportOptions(externalDataThreshold: 0))
        #expect(exported.externalDataLocation == "tiny.onnx.data")
        let weightBytes = graph.parameters.reduce(0) { $0 + $1.tensor.count * 4 }
        #expect(exported.externalData?.count == weightBytes)
        #expect(try FileManager.default.attributesOfItem(atPath: path + ".data")[.size] as? Int == weightBytes)
        // The model alone, away from its data file, cannot be read: the weights are not inside it.
        let elsewhere = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: elsewhere) }
        let alone = try #require(throws: ONNXError.self) {
            try ONNXImporter.importModel(bytes: exported.model, path: elsewhere.appendingPathComponent("tiny.onnx").path)
        }
        #expect(alone.description.contains("tiny.onnx.data"), "\(alone)")
        let again = try ONNXImporter.importModel(at: path)
        for parameter in graph.parameters {
            #expect(again.parametersByName[parameter.name]?.tensor.scalars.map(\.bitPattern) == parameter.tensor.scalars.map(\.bitPattern),
                    "\(parameter.name)")
        }
        let input = try NPY.read(Self.sample("tiny_input.npy")).tensor
        #expect(try InferenceSession(graph: again).run(input) == InferenceSession(graph: graph).run(input))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["tiny.onnx", "tiny.onnx.data"],
                "no temporary files are left")
    }
}
