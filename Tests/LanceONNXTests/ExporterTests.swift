import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import Testing

@Suite("ONNX exporter")
struct ExporterTests {
    static func sample(_ name: String) -> String {
        Fixtures.projectRoot.appendingPathComponent("Samples/onnx/\(name)").path
    }

    /// Exports, re-imports and checks weights bit for bit, node names and operators.
    static func roundTrip(_ graph: Graph) throws -> Graph {
        let bytes = try ONNXExporter.serialize(graph)
        let again = try ONNXImporter.importModel(bytes: bytes, path: "exported.onnx")
        let before = graph.parametersByName, after = again.parametersByName
        for (name, parameter) in before {
            #expect(after[name]?.tensor == parameter.tensor, "\(name)")
        }
        #expect(again.nodes.map(\.name) == graph.nodes.map(\.name))
        #expect(again.nodes.map(\.operation) == graph.nodes.map(\.operation))
        #expect(again.inputs == graph.inputs)
        return again
    }

    @Test("round trip of the sample model: same weights bit for bit, same outputs")
    func sampleRoundTrip() throws {
        let graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        let again = try Self.roundTrip(graph)
        let input = try NPY.read(Self.sample("tiny_input.npy")).tensor
        #expect(try InferenceSession(graph: again).run(input) == InferenceSession(graph: graph).run(input))
    }

    @Test("round trip of MobileNetV2 with BatchNormalization kept",
          .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models (or $LANCE_SHARED); they are missing"))
    func mobileNetRoundTrip() throws {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet_bn.onnx"))
        let again = try Self.roundTrip(graph)
        #expect(again.nodes.filter { $0.operation.opType == "BatchNormalization" }.count == 52)
        let images = try NPY.read(Fixtures.data("imagenet20/images.npy")).tensor.slice(batch: 0..<2)
        #expect(try InferenceSession(graph: again).run(images) == InferenceSession(graph: graph).run(images))
    }

    @Test("a graph with an operator ONNX cannot express fails before writing, naming the node")
    func unsupported() throws {
        var graph = try ONNXImporter.importModel(at: Self.sample("tiny_cnn.onnx"))
        graph.nodes[2].operation = .activation(.thresholdedReLU(threshold: 0.5, negativeSlope: 0.1, maximum: 6))
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("out.onnx").path
        let error = try #require(throws: ONNXError.self) { try ONNXExporter.write(graph, to: path) }
        #expect(error.description.contains("'relu'"))
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
