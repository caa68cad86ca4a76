import LanceCore
import LanceData
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import Testing

/// MobileNetV2 (ONNX, with BatchNormalization folded and kept) against onnxruntime's logits on
/// 20 real ImageNet validation images.
@Suite("Pretrained MobileNetV2 against onnxruntime",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models and ../shared/data (or $LANCE_SHARED); they are missing"))
struct ReferenceModelTests {
    static let images = try? NPY.read(Fixtures.data("imagenet20/images.npy")).tensor
    static let reference = try? NPY.read(Fixtures.data("imagenet20/logits_ref.npy")).tensor

    @Test("logits within 1e-3 and identical top-1 at batch sizes 1, 7 and 20",
          arguments: ["mobilenet_v2_imagenet.onnx", "mobilenet_v2_imagenet_bn.onnx"])
    func logitsMatchReference(model: String) throws {
        let images = try #require(Self.images), reference = try #require(Self.reference)
        let graph = try ONNXImporter.importModel(at: Fixtures.model(model))
        let session = InferenceSession(graph: graph)
        for batchSize in [1, 7, 20] {
            let logits = try session.run(images, batchSize: batchSize)
            #expect(logits.shape == [20, 1000])
            let difference = logits.maxAbsoluteDifference(to: reference)
            #expect(difference < 1e-3, "batch \(batchSize): max |Δ| = \(difference)")
            #expect(logits.argmaxPerRow() == reference.argmaxPerRow(), "batch \(batchSize)")
        }
    }

    @Test("large batches run in micro-batches with bit-identical results")
    func microBatches() throws {
        let images = try #require(Self.images)
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet.onnx"))
        let session = InferenceSession(graph: graph)
        // The largest activation is [96, 112, 112] floats = 4.8 MB per sample: 3 samples per 16 MiB.
        #expect(session.microBatchSize == 3)
        let whole = try session.run(images.slice(batch: 0..<8))
        let one = try session.run(images.slice(batch: 0..<8), batchSize: 1)
        #expect(whole == one)
    }

    @Test("the importer keeps names, opset, symbolic batch and parameter count")
    func importedStructure() throws {
        let graph = try ONNXImporter.importModel(at: Fixtures.model("mobilenet_v2_imagenet_bn.onnx"))
        #expect(graph.inputs.map(\.name) == ["input"])
        #expect(graph.inputs[0].dimensions == [.symbolic("N"), .fixed(3), .fixed(224), .fixed(224)])
        #expect(graph.outputs.map(\.name) == ["logits"])
        #expect(graph.provenance.formatVersion == "opset 13")
        let counts = Dictionary(graph.nodes.map { ($0.operation.opType, 1) }, uniquingKeysWith: +)
        #expect(counts["Conv"] == 52 && counts["BatchNormalization"] == 52 && counts["Clip"] == 35 && counts["Add"] == 10)
        #expect(counts["Constant"] == nil, "Constant nodes are folded into Clip bounds")
        // torchvision MobileNetV2: 3,504,872 parameters including BN running statistics.
        let summary = try graph.summary(batchSize: 1)
        #expect(summary.parameterCount == 3_504_872 + 2 * 17_056)
        #expect(summary.multiplyAccumulates > 300_000_000 && summary.multiplyAccumulates < 302_000_000)
        let statistics = graph.parameters.filter { !$0.trainable }
        #expect(statistics.count == 104, "running mean and variance of 52 BN layers are not trainable")
    }
}
