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

    @Test("a weight whose stored element type is damaged is refused before HDF5 reads it (no gigabyte conversion buffer)")
    func damagedElementType() throws {
        // Eight bytes of a dataset header in conv_layers.h5, as one of the mutations above changes
        // them: HDF5 then sees an element several hundred megabytes wide and, unchecked, allocated
        // 3.4 GB to convert 5 of them.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: KerasFixtures.path("conv_layers.h5"))))
        #expect(Array(bytes[37619..<37627]) == [0o0, 0o4, 0o0, 0o0, 0o0, 0o0, 0o0, 0o40], "the fixture changed; find the offset again")
        bytes.replaceSubrange(37619..<37627, with: [0o335, 0o117, 0o323, 0o4, 0o330, 0o172, 0o131, 0o14])
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("damaged-type.h5").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try KerasImporter.importModel(at: path)
            Issue.record("a damaged element type was imported")
        } catch {
            #expect(error.description.hasPrefix(path + ": "), "\(error.description)")
            #expect(error.description.contains("is not an array of numbers"), "\(error.description)")
            #expect(error.description.components(separatedBy: path).count == 2, "the file is named once: \(error.description)")
        }
    }
}
