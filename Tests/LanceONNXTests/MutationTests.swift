import Foundation
import LanceCore
import LanceModel
import LanceONNX
import LanceRuntime
import LanceTestSupport
import Testing

/// Feeds mutated copies of the real MobileNetV2 file to the importer (and, when a copy still
/// imports, to the executor): every outcome must be a result or a typed error, never a crash.
@Suite("Mutated model files",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models (or $LANCE_SHARED); they are missing"))
struct MutationTests {
    enum Mutation: CaseIterable { case flipByte, overwriteRun, truncate, insertBytes, deleteBytes }

    /// Mutates bytes, aiming most edits at the graph structure (nodes, attributes, shapes, value
    /// names) rather than at weight values, where any bytes are valid.
    static func mutate(_ bytes: [UInt8], structure: [Range<Int>], generator: inout SeededGenerator) -> ([UInt8], String) {
        var copy = bytes
        let region = structure.randomElement(using: &generator) ?? 0..<bytes.count
        let position = Int.random(in: region, using: &generator)
        let mutation = Mutation.allCases.randomElement(using: &generator) ?? .flipByte
        switch mutation {
        case .flipByte:
            copy[position] ^= UInt8.random(in: 1...255, using: &generator)
        case .overwriteRun:
            for offset in 0..<min(8, copy.count - position) { copy[position + offset] = UInt8.random(in: 0...255, using: &generator) }
        case .truncate:
            copy.removeSubrange(position...)
        case .insertBytes:
            copy.insert(contentsOf: (0..<Int.random(in: 1...4, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }, at: position)
        case .deleteBytes:
            copy.removeSubrange(position..<min(copy.count, position + Int.random(in: 1...4, using: &generator)))
        }
        return (copy, "\(mutation) at \(position)")
    }

    @Test("200 mutated copies of MobileNetV2: a graph or a typed error, never a crash")
    func mutatedCopies() throws {
        let path = Fixtures.model("mobilenet_v2_imagenet_bn.onnx")
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        // The node list sits before the weights and the inputs/outputs after them; half of the
        // edits land in those regions, half anywhere.
        let structure = [0..<60_000, (original.count - 4_000)..<original.count, 0..<original.count]
        var generator = SeededGenerator(seed: 2026)
        var imported = 0, rejected = 0, ran = 0
        var kinds: [String: Int] = [:]
        let input = Tensor.random(shape: [1, 3, 224, 224], seed: 5)
        for _ in 0..<200 {
            let (bytes, what) = Self.mutate(original, structure: structure, generator: &generator)
            do {
                let graph = try ONNXImporter.importModel(bytes: bytes, path: "mutated.onnx")
                imported += 1
                do {
                    let output = try InferenceSession(graph: graph).run(input)
                    #expect(output.count > 0, "\(what)")
                    ran += 1
                } catch {
                    #expect(!error.description.isEmpty, "\(what)")
                }
            } catch {
                rejected += 1
                #expect(error.description.hasPrefix("mutated.onnx: "), "\(what): \(error)")
                kinds[Mirror(reflecting: error).children.first?.label ?? "\(error)", default: 0] += 1
            }
        }
        #expect(imported + rejected == 200)
        #expect(rejected > 0, "mutations of the structure must be detected")
        print("mutated copies: \(imported) imported (\(ran) ran), \(rejected) rejected: "
              + kinds.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
    }
}
