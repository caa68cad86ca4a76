import Foundation
import LanceCore
import LanceKeras
import LanceTestSupport
import Testing

/// Feeds mutated copies of a Keras file to the importer: a graph or a typed error, never a crash.
@Suite("Mutated Keras files")
struct KerasMutationTests {
    @Test("100 mutated copies of a Keras .h5: a graph or a typed error naming the file")
    func mutatedCopies() throws {
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: KerasFixtures.path("conv_layers.h5"))))
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        var generator = SeededGenerator(seed: 31)
        var imported = 0, rejected = 0
        for trial in 0..<100 {
            var bytes = original
            let position = Int.random(in: 0..<bytes.count, using: &generator)
            switch trial % 3 {
            case 0: bytes[position] ^= UInt8.random(in: 1...255, using: &generator)
            case 1: bytes.removeSubrange(position...)
            default:
                for offset in 0..<min(8, bytes.count - position) { bytes[position + offset] = UInt8.random(in: 0...255, using: &generator) }
            }
            let path = folder.appendingPathComponent("mutated\(trial).h5").path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                _ = try KerasImporter.importModel(at: path)
                imported += 1
            } catch {
                rejected += 1
                #expect(error.description.hasPrefix(path + ": "), "\(error.description)")
            }
        }
        #expect(imported + rejected == 100 && rejected > 0)
    }
}
