import LanceCore
import LanceModel
import LanceONNX
import LanceRuntime
import Testing

/// Writes small ONNX models (protobuf wire format) for tests of single importer rules.
enum ONNXModelWriter {
    enum ElementType: Int { case float = 1, int64 = 7, bool = 9 }

    static func varint(_ value: Int) -> [UInt8] {
        var remaining = UInt64(bitPattern: Int64(value))
        var bytes: [UInt8] = []
        repeat {
            let low = UInt8(remaining & 0x7f)
            remaining >>= 7
            bytes.append(remaining == 0 ? low : low | 0x80)
        } while remaining != 0
        return bytes
    }

    static func field(_ number: Int, _ payload: [UInt8]) -> [UInt8] {
        varint(number << 3 | 2) + varint(payload.count) + payload
    }

    static func field(_ number: Int, integer: Int) -> [UInt8] { varint(number << 3) + varint(integer) }

    static func field(_ number: Int, _ text: String) -> [UInt8] { field(number, Array(text.utf8)) }

    static func tensor(_ name: String, dims: [Int], int64 values: [Int]) -> [UInt8] {
        dims.flatMap { field(1, integer: $0) } + field(2, integer: ElementType.int64.rawValue) + field(8, name)
            + field(9, values.flatMap { value in withUnsafeBytes(of: Int64(value).littleEndian, Array.init) })
    }

    static func tensor(_ name: String, dims: [Int], float values: [Float]) -> [UInt8] {
        dims.flatMap { field(1, integer: $0) } + field(2, integer: ElementType.float.rawValue) + field(8, name)
            + field(9, values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init) })
    }

    static func intAttribute(_ name: String, _ value: Int) -> [UInt8] {
        field(1, name) + field(3, integer: value) + field(20, integer: 2)
    }

    static func node(_ opType: String, inputs: [String], outputs: [String], attributes: [[UInt8]] = []) -> [UInt8] {
        inputs.flatMap { field(1, $0) } + outputs.flatMap { field(2, $0) } + field(4, opType)
            + attributes.flatMap { field(5, $0) }
    }

    static func valueInfo(_ name: String, dims: [Int]) -> [UInt8] {
        let shape = dims.flatMap { field(1, field(1, integer: $0)) }
        return field(1, name) + field(2, field(1, field(1, integer: ElementType.float.rawValue) + field(2, shape)))
    }

    static func model(nodes: [[UInt8]], initializers: [[UInt8]] = [], inputs: [(String, [Int])],
                      outputs: [(String, [Int])], opset: Int = 13) -> [UInt8] {
        let graph = nodes.flatMap { field(1, $0) } + field(2, "test") + initializers.flatMap { field(5, $0) }
            + inputs.flatMap { field(11, valueInfo($0.0, dims: $0.1)) }
            + outputs.flatMap { field(12, valueInfo($0.0, dims: $0.1)) }
        return field(1, integer: 7) + field(7, graph) + field(8, field(2, integer: opset))
    }
}

/// Rules of import-time folding and of the operator forms the importer accepts, each on a model
/// of one or two nodes.
@Suite("ONNX import folding")
struct ImportFoldingTests {
    typealias Writer = ONNXModelWriter

    /// The target shape of the model's only Reshape node.
    func reshapeTarget(_ graph: Graph) -> [Int]? {
        for node in graph.nodes { if case .reshape(let shape, _) = node.operation { return shape } }
        return nil
    }

    @Test("Shape of an initializer folds to the initializer's extents")
    func shapeOfInitializer() throws {
        let bytes = Writer.model(
            nodes: [Writer.node("Shape", inputs: ["T"], outputs: ["s"]), Writer.node("Reshape", inputs: ["x", "s"], outputs: ["y"])],
            initializers: [Writer.tensor("T", dims: [2, 3], float: [0, 0, 0, 0, 0, 0])],
            inputs: [("x", [1, 6])], outputs: [("y", [2, 3])])
        let graph = try ONNXImporter.importModel(bytes: bytes, path: "shape_of_initializer.onnx")
        #expect(reshapeTarget(graph) == [2, 3])
        #expect(graph.parameters.isEmpty, "an initializer read only by Shape is not a parameter")
    }

    @Test("Slice with a negative step clamps a start before the first element to 0")
    func sliceNegativeStep() throws {
        let bytes = Writer.model(
            nodes: [Writer.node("Slice", inputs: ["c", "starts", "ends", "axes", "steps"], outputs: ["s"]),
                    Writer.node("Reshape", inputs: ["x", "s"], outputs: ["y"])],
            initializers: [Writer.tensor("c", dims: [3], int64: [6, 1, 1]), Writer.tensor("starts", dims: [1], int64: [-100]),
                           Writer.tensor("ends", dims: [1], int64: [-1000]), Writer.tensor("axes", dims: [1], int64: [0]),
                           Writer.tensor("steps", dims: [1], int64: [-1])],
            inputs: [("x", [1, 6])], outputs: [("y", [6])])
        let graph = try ONNXImporter.importModel(bytes: bytes, path: "slice_negative_step.onnx")
        #expect(reshapeTarget(graph) == [6], "starts=-100 with step -1 starts at element 0 and takes it")
    }

    @Test("Cast to BOOL maps every non-zero value to true")
    func castToBool() throws {
        let bytes = Writer.model(
            nodes: [Writer.node("Cast", inputs: ["f"], outputs: ["b"], attributes: [Writer.intAttribute("to", Writer.ElementType.bool.rawValue)]),
                    Writer.node("Cast", inputs: ["b"], outputs: ["i"], attributes: [Writer.intAttribute("to", Writer.ElementType.int64.rawValue)]),
                    Writer.node("Add", inputs: ["i", "k"], outputs: ["s"]),
                    Writer.node("Reshape", inputs: ["x", "s"], outputs: ["y"])],
            initializers: [Writer.tensor("f", dims: [2], float: [0.5, 0]), Writer.tensor("k", dims: [2], int64: [1, 2])],
            inputs: [("x", [1, 4])], outputs: [("y", [2, 2])])
        let graph = try ONNXImporter.importModel(bytes: bytes, path: "cast_to_bool.onnx")
        #expect(reshapeTarget(graph) == [2, 2], "Cast(0.5 → BOOL) is true")
    }

    @Test("Pad with fewer pads than two per listed axis is rejected, not crashed on")
    func padWithShortPads() {
        let bytes = Writer.model(
            nodes: [Writer.node("Pad", inputs: ["x", "pads", "", "axes"], outputs: ["y"])],
            initializers: [Writer.tensor("pads", dims: [1], int64: [1]), Writer.tensor("axes", dims: [1], int64: [1])],
            inputs: [("x", [1, 4])], outputs: [("y", [1, 5])], opset: 18)
        #expect(throws: ONNXError.invalidNode(path: "pad.onnx", node: "Pad_0", opType: "Pad",
                                                    reason: "pads needs 2 entries per axis in 'axes' (2), got 1")) {
            try ONNXImporter.importModel(bytes: bytes, path: "pad.onnx")
        }
    }

    @Test("Cast to FLOAT of run-time data is an identity; other targets are rejected")
    func castOfRunTimeData() throws {
        func model(to target: Int) -> [UInt8] {
            Writer.model(nodes: [Writer.node("Cast", inputs: ["x"], outputs: ["y"], attributes: [Writer.intAttribute("to", target)])],
                         inputs: [("x", [1, 3])], outputs: [("y", [1, 3])])
        }
        let graph = try ONNXImporter.importModel(bytes: model(to: Writer.ElementType.float.rawValue), path: "cast.onnx")
        let x = Tensor(shape: [1, 3], scalars: [-1.5, 0, 2.25])
        #expect(try InferenceSession(graph: graph).run(x) == x)
        #expect(throws: ONNXError.self) {
            try ONNXImporter.importModel(bytes: model(to: Writer.ElementType.int64.rawValue), path: "cast.onnx")
        }
    }

    @Test("Dropout in training mode is rejected unless its ratio is 0")
    func trainingDropout() throws {
        func model(ratio: Float) -> [UInt8] {
            Writer.model(nodes: [Writer.node("Dropout", inputs: ["x", "ratio", "training"], outputs: ["y"])],
                         initializers: [Writer.tensor("ratio", dims: [], float: [ratio]), Self.trainingTrue],
                         inputs: [("x", [1, 3])], outputs: [("y", [1, 3])])
        }
        #expect(throws: ONNXError.self) {
            try ONNXImporter.importModel(bytes: model(ratio: 0.5), path: "dropout.onnx")
        }
        let graph = try ONNXImporter.importModel(bytes: model(ratio: 0), path: "dropout.onnx")
        let x = Tensor(shape: [1, 3], scalars: [1, 2, 3])
        #expect(try InferenceSession(graph: graph).run(x) == x)
    }

    /// A scalar BOOL initializer `training` set to true.
    static let trainingTrue = Writer.field(2, integer: Writer.ElementType.bool.rawValue) + Writer.field(8, "training")
        + Writer.field(9, [1])
}
