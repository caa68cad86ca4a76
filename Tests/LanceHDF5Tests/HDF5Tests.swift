import Foundation
import LanceHDF5
import LanceTestSupport
import Testing

@Suite("HDF5 reader on a real Keras 2.9 file",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models (or $LANCE_SHARED); they are missing"))
struct HDF5KerasFileTests {
    let file: HDF5File

    init() throws { file = try HDF5File(path: Fixtures.model("cifar10_cnn.h5")) }

    @Test("root attributes: Keras version and the model_config JSON")
    func rootAttributes() throws {
        #expect(try file.root.stringAttribute("keras_version") == "2.9.0")
        let config = try file.root.stringAttribute("model_config")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])
        #expect(json["class_name"] as? String == "Sequential")
        #expect(file.root.attributeNames().contains("model_config"))
    }

    @Test("layer_names, weight_names and a kernel dataset")
    func weights() throws {
        let weights = try file.root.group("model_weights")
        let layers = try weights.stringArrayAttribute("layer_names")
        #expect(layers.count >= 20)
        // Keras 2.9 also writes an empty `top_level_model_weights` group.
        #expect(try weights.childNames() == (layers + ["top_level_model_weights"]).sorted())
        let firstConv = try #require(layers.first { $0.hasPrefix("conv2d") })
        let group = try weights.group(firstConv)
        let names = try group.stringArrayAttribute("weight_names")
        #expect(names.count == 2 && names[0].hasSuffix("kernel:0"))
        let kernel = try group.dataset(names[0])
        #expect(try kernel.shape() == [3, 3, 3, 64])
        let values = try kernel.readFloats()
        #expect(values.count == 1_728 && values.contains { $0 != 0 })
        #expect(kernel.isFloatingPoint())
    }

    @Test("missing objects and wrong kinds are typed errors naming the path")
    func errors() throws {
        #expect(throws: HDF5Error.missingObject(path: file.path, object: "/no/such/group")) {
            try file.root.group("no/such/group")
        }
        #expect(throws: HDF5Error.wrongType(path: file.path, object: "/model_weights", expected: "a dataset")) {
            try file.root.dataset("model_weights")
        }
        #expect(throws: HDF5Error.missingObject(path: file.path, object: "/@missing_attribute")) {
            try file.root.stringAttribute("missing_attribute")
        }
    }
}

@Suite("HDF5 reader on bad files")
struct HDF5BadFileTests {
    @Test("a missing file and a non-HDF5 file")
    func notHDF5() throws {
        #expect(throws: HDF5Error.cannotOpen(path: "/nonexistent.h5", reason: "no such file")) {
            try HDF5File(path: "/nonexistent.h5")
        }
        let folder = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("noise.h5").path
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: path))
        #expect(throws: HDF5Error.cannotOpen(path: path, reason: "not an HDF5 file, or truncated")) {
            try HDF5File(path: path)
        }
    }
}
