import Foundation
import LanceCore
import LanceData
import LanceKeras
import LanceModel
import LanceRuntime
import LanceTestSupport
import Testing

/// The Keras fixtures in Samples/keras (made with real Keras 3 by Samples/make-samples) and the
/// pretrained Keras 2.9 CIFAR-10 model.
enum KerasFixtures {
    static let folder = Fixtures.projectRoot.appendingPathComponent("Samples/keras")

    static func path(_ name: String) -> String { folder.appendingPathComponent(name).path }

    struct Fixture: Decodable, CustomTestStringConvertible, Sendable {
        var name: String
        var kind: String
        var files: [String]
        var count_params: Int?
        var testDescription: String { name }
    }

    struct Manifest: Decodable { var fixtures: [Fixture] }

    static let models: [Fixture] = {
        guard let data = try? Data(contentsOf: folder.appendingPathComponent("fixtures.json")),
              let manifest = try? JSONDecoder().decode(Manifest.self, from: data) else { return [] }
        return manifest.fixtures.filter { $0.kind == "model" }
    }()

    /// Runs a graph on an NHWC `.npy` batch (converted to NCHW as lance-eval does).
    static func run(_ graph: Graph, nhwc: String) throws -> Tensor {
        let input = try NPY.read(nhwc).tensor
        let nchw = Tensor(shape: [input.shape[0], input.shape[3], input.shape[1], input.shape[2]]) { out in
            let (n, h, w, c) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
            for b in 0..<n { for y in 0..<h { for x in 0..<w { for k in 0..<c {
                out[((b * c + k) * h + y) * w + x] = input.scalars[((b * h + y) * w + x) * c + k]
            } } } }
        }
        return try InferenceSession(graph: graph).run(nchw)
    }
}

@Suite("Keras importer on fixtures made with Keras 3")
struct KerasFixtureTests {
    @Test("the fixture manifest lists the models") func manifest() {
        #expect(KerasFixtures.models.map(\.name) == ["conv_layers", "pooling_layers", "flatten_dense", "reshape_flatten",
                                                    "functional_branches", "nested_model"])
    }

    @Test("legacy .h5 and .keras outputs within 1e-4 of Keras; parameters equal Keras's count",
          arguments: KerasFixtures.models)
    func fixture(_ fixture: KerasFixtures.Fixture) throws {
        let expected = try NPY.read(KerasFixtures.path("\(fixture.name)_expected.npy")).tensor
        for file in ["\(fixture.name).h5", "\(fixture.name).keras"] {
            let graph = try KerasImporter.importModel(at: KerasFixtures.path(file))
            let output = try KerasFixtures.run(graph, nhwc: KerasFixtures.path("\(fixture.name)_input.npy"))
            #expect(output.shape == expected.shape, "\(file)")
            #expect(output.maxAbsoluteDifference(to: expected) < 1e-4, "\(file)")
            #expect(try graph.summary().parameterCount == fixture.count_params, "\(file)")
        }
    }

    @Test("weights-only files (legacy and Keras 3 layouts) with the architecture JSON")
    func weightsOnly() throws {
        let expected = try NPY.read(KerasFixtures.path("weights_only_expected.npy")).tensor
        for weights in ["weights_only.weights.h5", "weights_only_legacy.h5"] {
            let graph = try KerasImporter.importModel(weightsAt: KerasFixtures.path(weights),
                                                      architectureAt: KerasFixtures.path("weights_only.json"))
            let output = try KerasFixtures.run(graph, nhwc: KerasFixtures.path("weights_only_input.npy"))
            #expect(output.maxAbsoluteDifference(to: expected) < 1e-4, "\(weights)")
        }
    }

    @Test("kernels are stored OIHW with the permutation that undoes it")
    func layoutChanges() throws {
        let graph = try KerasImporter.importModel(at: KerasFixtures.path("flatten_dense.h5"))
        for parameter in graph.parameters {
            guard let change = parameter.layoutChange else { continue }
            // Inverting the recorded change gives back the array as Keras stores it.
            let source = change.invert(parameter.tensor.scalars)
            #expect(change.apply(to: source) == parameter.tensor.scalars, "\(parameter.name)")
        }
        let dense = try #require(graph.parameters.first { $0.name == "dense/kernel" })
        #expect(dense.layoutChange?.permutation == [2, 0, 1, 3], "Dense after Flatten has its rows permuted")
        let convolution = try #require(graph.parameters.first { $0.name.hasSuffix("kernel") && $0.tensor.rank == 4 })
        #expect(convolution.layoutChange?.permutation == [3, 2, 0, 1])
    }

    @Test("malformed files: a typed error naming the file and the layer",
          arguments: [("not_hdf5.h5", "cannot open as HDF5"), ("truncated.h5", "cannot open as HDF5"),
                      ("missing_model_weights.h5", "no 'model_weights' group"),
                      ("wrong_weight_shape.h5", "layer 'conv2d': kernel has shape [3, 3, 3, 9], expected [3, 3, 3, 8]"),
                      ("unknown_layer.h5", "FancyLayer")])
    func malformed(file: String, fragment: String) throws {
        let path = KerasFixtures.path(file)
        let error = try #require(throws: KerasError.self) { try KerasImporter.importModel(at: path) }
        #expect(error.description.hasPrefix(path + ": "))
        #expect(error.description.contains(fragment), "\(error.description)")
        if file == "unknown_layer.h5" {
            guard case .unsupportedLayers(path, let layers) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(layers.map(\.className) == ["FancyLayer"] && layers.map(\.layers) == [["leaky_re_lu"]])
        }
    }
}

@Suite("Pretrained Keras 2.9 CIFAR-10 CNN against Keras",
       .enabled(if: Fixtures.sharedAvailable, "needs ../shared/models and ../shared/data (or $LANCE_SHARED); they are missing"))
struct KerasPretrainedTests {
    @Test("outputs within 1e-3 of model.predict, identical top-1 on 20 real images, 969,418 parameters")
    func cifar10() throws {
        let graph = try KerasImporter.importModel(at: Fixtures.model("cifar10_cnn.h5"))
        #expect(try graph.summary().parameterCount == 969_418)
        #expect(graph.provenance.formatVersion == "Keras 2.9.0")
        let output = try KerasFixtures.run(graph, nhwc: Fixtures.data("cifar10-20/images_nhwc.npy"))
        let reference = try NPY.read(Fixtures.data("cifar10-20/logits_ref.npy")).tensor
        let difference = output.maxAbsoluteDifference(to: reference)
        #expect(difference < 1e-3, "max |Δ| = \(difference)")
        #expect(output.argmaxPerRow() == reference.argmaxPerRow())
        let labels = try NPY.read(Fixtures.data("cifar10-20/labels.npy")).integers ?? []
        #expect(zip(output.argmaxPerRow(), labels).filter { $0 == $1 }.count == 20)
    }
}
