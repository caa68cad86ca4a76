import Foundation
import LanceHDF5
import LanceTestSupport
import Testing

@Suite("HDF5 writer")
struct HDF5WritingTests {
    @Test("groups, float32 datasets and string attributes read back as written")
    func roundTrip() throws {
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("written.h5").path
        let values: [Float] = [0, -1.5, .pi, .leastNonzeroMagnitude, .greatestFiniteMagnitude, -0.0]
        do {
            let file = try HDF5File.create(path: path)
            let root = file.root
            try root.setStringAttribute("model_config", "{\"class_name\": \"Functional\", \"ü\": 1}")
            try root.setStringArrayAttribute("layer_names", ["input", "conv2d", "dense"])
            let weights = try root.createGroup("model_weights/conv2d")
            try weights.setStringArrayAttribute("weight_names", [])
            try weights.createDataset("conv2d/kernel", shape: [3, 2], values: values)
            try root.createDataset("scalar", shape: [], values: [7])
            try file.flush()
        }
        let file = try HDF5File(path: path)
        #expect(try file.root.stringAttribute("model_config") == "{\"class_name\": \"Functional\", \"ü\": 1}")
        #expect(try file.root.stringArrayAttribute("layer_names") == ["input", "conv2d", "dense"])
        let group = try file.root.group("model_weights/conv2d")
        #expect(try group.stringArrayAttribute("weight_names") == [])
        let dataset = try group.dataset("conv2d/kernel")
        #expect(try dataset.shape() == [3, 2])
        #expect(try dataset.readFloats().map(\.bitPattern) == values.map(\.bitPattern))
        #expect(try file.root.dataset("scalar").readFloats() == [7])
        #expect(try file.root.childNames() == ["model_weights", "scalar"])
    }

    @Test("writing errors are typed and name the file and the object")
    func errors() throws {
        #expect(throws: HDF5Error.cannotCreate(path: "/nonexistent-folder/x.h5", reason: "the folder /nonexistent-folder does not exist")) {
            try HDF5File.create(path: "/nonexistent-folder/x.h5")
        }
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("errors.h5").path
        let file = try HDF5File.create(path: path)
        _ = try file.root.createGroup("layers")
        let duplicate = try #require(throws: HDF5Error.self) { try file.root.createGroup("layers") }
        #expect(duplicate.description.hasPrefix("\(path): writing '/layers' failed"))
        let mismatch = try #require(throws: HDF5Error.self) { try file.root.createDataset("kernel", shape: [2, 2], values: [1, 2, 3]) }
        #expect(mismatch == .writeFailed(path: path, object: "/kernel", reason: "3 values do not fill the shape [2, 2]"))
    }
}
