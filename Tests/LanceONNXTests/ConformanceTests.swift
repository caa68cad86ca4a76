import Foundation
import LanceCore
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import Testing

/// The ONNX conformance suite's node tests (`libonnx-testdata`) for every operator LANCE imports.
///
/// A node test is selected when its model uses only operators in `ONNXImporter.supportedOperators`.
/// Every selected test must pass, or be listed in `ConformanceSuite.skipList` with its reason; a
/// listed test that starts passing fails too, so the list stays exact. `docs/operators.md` carries
/// the same list and the counts (checked by the summary test).
enum ConformanceSuite {
    /// Outputs must satisfy `|actual − expected| ≤ absoluteTolerance + relativeTolerance · |expected|`
    /// element-wise (NaN matches NaN, infinities must be equal): float32 results summed in another
    /// order than the reference's.
    static let absoluteTolerance: Float = 1e-4
    /// See `absoluteTolerance`.
    static let relativeTolerance: Float = 1e-3

    /// Selected node tests that LANCE does not pass, each with the reason (one line each).
    /// `docs/operators.md` lists the same entries; the summary test keeps the two in sync.
    static let skipList: [String: String] = [
        "test_add_uint8": "uint8 data: LANCE computes float32 only",
        "test_averagepool_1d_default": "1-D pooling: only 2-D (NCHW) pooling is supported",
        "test_averagepool_3d_default": "3-D pooling: only 2-D (NCHW) pooling is supported",
        "test_batchnorm_epsilon_training_mode": "training-mode BatchNormalization (batch statistics, running-mean/variance outputs)",
        "test_batchnorm_example_training_mode": "training-mode BatchNormalization (batch statistics, running-mean/variance outputs)",
        "test_cast_BFLOAT16_to_FLOAT": "bfloat16 input (stored as uint16): LANCE computes float32 only",
        "test_cast_DOUBLE_to_FLOAT": "double input: LANCE computes float32 only",
        "test_cast_DOUBLE_to_FLOAT16": "double input: LANCE computes float32 only",
        "test_cast_FLOAT16_to_DOUBLE": "float16 input: LANCE computes float32 only",
        "test_cast_FLOAT16_to_FLOAT": "float16 input: LANCE computes float32 only",
        "test_cast_FLOAT_to_BFLOAT16": "Cast of run-time data to bfloat16: only Cast to FLOAT runs on data",
        "test_cast_FLOAT_to_DOUBLE": "Cast of run-time data to double: only Cast to FLOAT runs on data",
        "test_cast_FLOAT_to_FLOAT16": "Cast of run-time data to float16: only Cast to FLOAT runs on data",
        "test_cast_FLOAT_to_STRING": "Cast of run-time data to string: only Cast to FLOAT runs on data",
        "test_cast_STRING_to_FLOAT": "string input: LANCE computes float32 only",
        "test_castlike_BFLOAT16_to_FLOAT_expanded": "bfloat16 input (stored as uint16): LANCE computes float32 only",
        "test_castlike_DOUBLE_to_FLOAT16_expanded": "double input: LANCE computes float32 only",
        "test_castlike_DOUBLE_to_FLOAT_expanded": "double input: LANCE computes float32 only",
        "test_castlike_FLOAT16_to_DOUBLE_expanded": "float16 input: LANCE computes float32 only",
        "test_castlike_FLOAT16_to_FLOAT_expanded": "float16 input: LANCE computes float32 only",
        "test_castlike_FLOAT_to_BFLOAT16_expanded": "Cast of run-time data to bfloat16: only Cast to FLOAT runs on data",
        "test_castlike_FLOAT_to_DOUBLE_expanded": "double input (the `like` tensor): LANCE computes float32 only",
        "test_castlike_FLOAT_to_FLOAT16_expanded": "float16 input (the `like` tensor): LANCE computes float32 only",
        "test_castlike_FLOAT_to_STRING_expanded": "string input (the `like` tensor): LANCE computes float32 only",
        "test_castlike_STRING_to_FLOAT_expanded": "string input: LANCE computes float32 only",
        "test_clip_default_int8_inbounds": "int8 data: LANCE computes float32 only",
        "test_clip_default_int8_max": "int8 data: LANCE computes float32 only",
        "test_clip_default_int8_min": "int8 data: LANCE computes float32 only",
        "test_constant": "the graph output is a Constant: LANCE folds constants and needs outputs computed from inputs",
        "test_div_uint8": "uint8 data: LANCE computes float32 only",
        "test_dropout_default_mask": "Dropout's mask output: only the first output is computed",
        "test_dropout_default_mask_ratio": "Dropout's mask output: only the first output is computed",
        "test_edge_pad": "int32 data: LANCE computes float32 only",
        "test_gather_0": "Gather on run-time data: Gather is folded on constants and shapes only",
        "test_gather_1": "Gather on run-time data: Gather is folded on constants and shapes only",
        "test_gather_2d_indices": "Gather on run-time data: Gather is folded on constants and shapes only",
        "test_gather_negative_indices": "Gather on run-time data: Gather is folded on constants and shapes only",
        "test_globalaveragepool": "opset 1 model: the importer accepts opsets 7 to 21",
        "test_globalaveragepool_precomputed": "opset 1 model: the importer accepts opsets 7 to 21",
        "test_globalmaxpool": "opset 1 model: the importer accepts opsets 7 to 21",
        "test_globalmaxpool_precomputed": "opset 1 model: the importer accepts opsets 7 to 21",
        "test_hardsigmoid": "opset 6 model: the importer accepts opsets 7 to 21",
        "test_hardsigmoid_default": "opset 6 model: the importer accepts opsets 7 to 21",
        "test_hardsigmoid_example": "opset 6 model: the importer accepts opsets 7 to 21",
        "test_identity_opt": "optional-typed input: LANCE reads tensors only",
        "test_identity_sequence": "sequence-typed input: LANCE reads tensors only",
        "test_maxpool_1d_default": "1-D pooling: only 2-D (NCHW) pooling is supported",
        "test_maxpool_2d_uint8": "uint8 data: LANCE computes float32 only",
        "test_maxpool_3d_default": "3-D pooling: only 2-D (NCHW) pooling is supported",
        "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool's Indices output: only the first output is computed",
        "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool's Indices output: only the first output is computed",
        "test_mul_uint8": "uint8 data: LANCE computes float32 only",
        "test_reflect_pad": "int32 data: LANCE computes float32 only",
        "test_shape": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_clip_end": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_clip_start": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_end_1": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_end_negative_1": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_example": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_start_1": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_start_1_end_2": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_start_1_end_negative_1": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_shape_start_negative_1": "Shape as a graph output: Shape is folded at import into integer constants",
        "test_slice": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_slice_default_axes": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_slice_default_steps": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_slice_end_out_of_bounds": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_slice_neg": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_slice_neg_steps": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_slice_negative_axes": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_slice_start_out_of_bounds": "Slice on run-time data: Slice is folded on constants and shapes only",
        "test_sub_uint8": "uint8 data: LANCE computes float32 only",
        "test_training_dropout": "training-mode Dropout (random mask): LANCE runs Dropout as identity",
        "test_training_dropout_default": "training-mode Dropout (random mask): LANCE runs Dropout as identity",
        "test_training_dropout_default_mask": "Dropout's mask output: only the first output is computed",
        "test_training_dropout_mask": "Dropout's mask output: only the first output is computed",
        "test_training_dropout_zero_ratio_mask": "Dropout's mask output: only the first output is computed",
    ]

    /// The node-test folders that hold a model.
    static let allCases: [String] = {
        guard Fixtures.conformanceAvailable else { return [] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: Fixtures.conformanceRoot.path)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: ConformanceCase(name: $0).modelPath) }.sorted()
    }()

    /// The node tests whose model uses only operators the importer supports: those it imports or
    /// rejects for another reason than `.unsupportedOperators`. Where it stops before looking at
    /// the operators (an opset outside its range, no default-domain opset), the model's operator
    /// list decides.
    static let selectedCases: [ConformanceCase] = allCases.map(ConformanceCase.init).filter { testCase in
        do throws(ONNXError) {
            _ = try ONNXImporter.importModel(at: testCase.modelPath)
            return true
        } catch .unsupportedOperators {
            return false
        } catch .unsupportedOpset, .incompleteModel {
            let operators = ModelOperatorList.read(modelAt: testCase.modelPath)
            return operators.allSatisfy { ["", "ai.onnx"].contains($0.domain) && ONNXImporter.supportedOperators.contains($0.opType) }
        } catch {
            return true
        }
    }

    /// Every selected test's outcome, computed once and shared by the per-case and summary tests.
    static let outcomes: [String: ConformanceOutcome] = Dictionary(
        uniqueKeysWithValues: selectedCases.map { ($0.name, $0.run()) })
}

/// One node test: a folder with `model.onnx` and `test_data_set_*/{input,output}_*.pb`.
struct ConformanceCase: Sendable, Hashable, CustomTestStringConvertible {
    /// The folder name, e.g. `test_conv_with_strides_padding`.
    let name: String

    var testDescription: String { name }
    var folder: URL { Fixtures.conformanceRoot.appendingPathComponent(name) }
    var modelPath: String { folder.appendingPathComponent("model.onnx").path }

    /// The data-set folders, in order.
    func dataSets() throws -> [URL] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasPrefix("test_data_set_") }.sorted()
            .map { folder.appendingPathComponent($0) }
    }

    /// Imports the model, runs it on every data set and compares every output.
    func run() -> ConformanceOutcome {
        do {
            let dataSets = try dataSets()
            guard !dataSets.isEmpty else { return .failed("no test_data_set_* folder") }
            for dataSet in dataSets {
                if case .failed(let reason) = try run(dataSet) {
                    return .failed("\(dataSet.lastPathComponent): \(reason)")
                }
            }
            return .passed
        } catch {
            return .failed("\(error)")
        }
    }

    private func run(_ dataSet: URL) throws -> ConformanceOutcome {
        let inputs = try tensors(in: dataSet, prefix: "input_")
        let expectedOutputs = try tensors(in: dataSet, prefix: "output_")
        let graph: Graph
        switch importBindingConstantInputs(inputs) {
        case .success(let imported): graph = imported
        case .failure(let error): return .failed("import: \(error.description)")
        }
        var feeds: [String: Tensor] = [:]
        for input in graph.inputs {
            guard let data = inputs.first(where: { $0.name == input.name }) else {
                return .failed("no test data for graph input '\(input.name)'")
            }
            guard let tensor = data.tensor else { return .failed("graph input '\(input.name)' is \(data.elementType)") }
            feeds[input.name] = tensor
        }
        let results: [String: Tensor]
        do {
            results = try InferenceSession(graph: graph).run(feeds)
        } catch {
            return .failed("run: \(error)")
        }
        for expected in expectedOutputs {
            guard let actual = results[expected.name] else { return .failed("output '\(expected.name)' is not computed") }
            guard let wanted = expected.tensor else {
                return .failed("output '\(expected.name)' is \(expected.elementType); LANCE computes float32")
            }
            guard actual.shape == wanted.shape else {
                return .failed("output '\(expected.name)' has shape \(actual.shape), expected \(wanted.shape)")
            }
            guard actual.isClose(to: wanted, absolute: ConformanceSuite.absoluteTolerance,
                                 relative: ConformanceSuite.relativeTolerance) else {
                return .failed("output '\(expected.name)' differs: max |Δ| = \(actual.maxAbsoluteDifference(to: wanted))")
            }
        }
        return .passed
    }

    /// Imports the model with this data set's integer inputs bound as constants; float inputs the
    /// importer needs as constants (Clip's bounds, Pad's value, ...) are bound too and the import
    /// retried.
    private func importBindingConstantInputs(_ inputs: [ONNXTensor]) -> Result<Graph, ONNXError> {
        // LANCE feeds only float32 data, so an integer input can only be a hyperparameter.
        var constants = Dictionary(inputs.filter { $0.integers != nil }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        while true {
            do {
                return .success(try ONNXImporter.importModel(at: modelPath, constantInputs: constants))
            } catch .nonConstantInput(let path, let node, let opType, let input) {
                guard constants[input] == nil, let value = inputs.first(where: { $0.name == input }) else {
                    return .failure(.nonConstantInput(path: path, node: node, opType: opType, input: input))
                }
                constants[input] = value
            } catch {
                return .failure(error)
            }
        }
    }

    /// `prefix0.pb`, `prefix1.pb`, ... in index order.
    private func tensors(in dataSet: URL, prefix: String) throws -> [ONNXTensor] {
        var result: [ONNXTensor] = []
        while case let file = dataSet.appendingPathComponent("\(prefix)\(result.count).pb"),
              FileManager.default.fileExists(atPath: file.path) {
            result.append(try readONNXTensorFile(at: file.path))
        }
        return result
    }
}

/// What running one node test gave.
enum ConformanceOutcome: Sendable, Equatable {
    case passed
    case failed(String)

    var failure: String? {
        if case .failed(let reason) = self { return reason }
        return nil
    }
}

@Suite("ONNX conformance suite (node tests of supported operators)",
       .enabled(if: Fixtures.conformanceAvailable,
                "the ONNX conformance suite is not installed (apt-get install libonnx-testdata, or set $LANCE_ONNX_TESTDATA)"))
struct ConformanceTests {
    @Test("node test passes, or fails as its skip-list entry says", arguments: ConformanceSuite.selectedCases)
    func nodeTest(_ testCase: ConformanceCase) throws {
        let outcome = try #require(ConformanceSuite.outcomes[testCase.name])
        if let reason = ConformanceSuite.skipList[testCase.name] {
            #expect(outcome != .passed, "\(testCase.name) passes but is in the skip list (\(reason)); remove it there and in docs/operators.md")
        } else {
            #expect(outcome == .passed, "\(testCase.name): \(outcome.failure ?? "")")
        }
    }

    @Test("summary: counts, the skip list names only selected tests, docs/operators.md agrees")
    func summary() throws {
        let selected = ConformanceSuite.selectedCases.map(\.name)
        let skipped = selected.filter { ConformanceSuite.skipList[$0] != nil }
        let passed = selected.filter { ConformanceSuite.skipList[$0] == nil && ConformanceSuite.outcomes[$0] == .passed }
        let counts = "\(passed.count) passed, \(skipped.count) skipped, \(selected.count) selected"
        print("ONNX conformance suite: \(counts) of \(ConformanceSuite.allCases.count) node tests "
              + "(|actual − expected| ≤ \(ConformanceSuite.absoluteTolerance) + \(ConformanceSuite.relativeTolerance)·|expected|)")
        #expect(!selected.isEmpty, "no node test selected under \(Fixtures.conformanceRoot.path)")
        let stale = Set(ConformanceSuite.skipList.keys).subtracting(selected).sorted()
        #expect(stale.isEmpty, "skip-list entries that are not selected node tests: \(stale)")

        let docsPath = Fixtures.projectRoot.appendingPathComponent("docs/operators.md").path
        let docs = try String(contentsOfFile: docsPath, encoding: .utf8)
        let statesCounts = docs.contains(counts)
        #expect(statesCounts, "docs/operators.md does not state the counts '\(counts)'")
        let expectedRows = ConformanceSuite.skipList.keys.sorted().map { "| `\($0)` | \(ConformanceSuite.skipList[$0] ?? "") |" }
        let documentedRows = docs.split(separator: "\n").map(String.init).filter { $0.hasPrefix("| `test_") }
        let undocumented = expectedRows.filter { !documentedRows.contains($0) }
        let unlisted = documentedRows.filter { !expectedRows.contains($0) }
        #expect(undocumented.isEmpty, "skip-list rows missing from docs/operators.md or worded differently there: \(undocumented)")
        #expect(unlisted.isEmpty, "docs/operators.md lists skipped tests that the skip list does not: \(unlisted)")
    }
}

/// The operators of a model's graph, read from the protobuf wire format (ModelProto.graph = 7,
/// GraphProto.node = 1, NodeProto.op_type = 4 and domain = 7) without importing it.
enum ModelOperatorList {
    static func read(modelAt path: String) -> [(domain: String, opType: String)] {
        guard let model = FileManager.default.contents(atPath: path) else { return [] }
        var operators: [(domain: String, opType: String)] = []
        for graph in fields([UInt8](model)[...], number: 7) {
            for node in fields(graph, number: 1) {
                let text = { (number: Int) in fields(node, number: number).last.map { String(decoding: $0, as: UTF8.self) } ?? "" }
                operators.append((domain: text(7), opType: text(4)))
            }
        }
        return operators
    }

    /// The payloads of the length-delimited fields with the given number; stops at malformed bytes.
    private static func fields(_ message: ArraySlice<UInt8>, number: Int) -> [ArraySlice<UInt8>] {
        var payloads: [ArraySlice<UInt8>] = []
        var position = message.startIndex
        func varint() -> Int? {
            var value = 0, shift = 0
            while position < message.endIndex, shift < 64 {
                let byte = message[position]
                position += 1
                value |= Int(byte & 0x7f) << shift
                if byte < 0x80 { return value }
                shift += 7
            }
            return nil
        }
        while position < message.endIndex, let key = varint() {
            switch key & 7 {
            case 0: guard varint() != nil else { return payloads }
            case 1: position += 8
            case 5: position += 4
            case 2:
                guard let length = varint(), length >= 0, length <= message.endIndex - position else { return payloads }
                if key >> 3 == number { payloads.append(message[position..<(position + length)]) }
                position += length
            default: return payloads
            }
        }
        return payloads
    }
}
