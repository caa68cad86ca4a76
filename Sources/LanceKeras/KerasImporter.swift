import Foundation
import LanceCore
import LanceHDF5
import LanceModel
import ZIPFoundation

/// Imports Keras models into the NCHW `Graph`: legacy full-model HDF5 (`model.save("m.h5")`, Keras 2
/// and 3), weights-only HDF5 with a JSON architecture (`model.to_json()`), and Keras 3 `.keras`
/// archives. The graph takes NCHW input (`lance-eval --input-layout nhwc` converts Keras-layout
/// data) and computes the same function as the Keras model.
public enum KerasImporter {
    /// Imports a `.h5` full model or a `.keras` archive.
    ///
    /// - Throws: `KerasError` naming the file and the layer at fault; unsupported layer
    ///   classes are all listed at once (`.unsupportedLayers`).
    public static func importModel(at path: String) throws(KerasError) -> Graph {
        if path.lowercased().hasSuffix(".keras") { return try importArchive(at: path) }
        let file = try open(path)
        let root = file.root
        guard root.hasAttribute("model_config") else {
            throw .invalidArchitecture(path: path, reason: "the file has no 'model_config' attribute; it holds weights only — give the architecture JSON too")
        }
        let config = try stringAttribute(root, "model_config", path: path)
        let version = (try? root.stringAttribute("keras_version")) ?? "unknown"
        guard root.contains("model_weights") else {
            throw .invalidWeights(path: path, layer: "model_weights", reason: "the file has no 'model_weights' group")
        }
        let weights: HDF5Group
        do { weights = try root.group("model_weights") } catch { throw .unreadableFile(path: path, reason: error.description) }
        return try build(configJSON: config, path: path, kerasVersion: version, store: .legacy(weights), format: "keras-h5")
    }

    /// Imports weights-only HDF5 (legacy `save_weights` layout or Keras 3 `.weights.h5`) together
    /// with the architecture JSON written by `model.to_json()`.
    public static func importModel(weightsAt path: String, architectureAt architecturePath: String) throws(KerasError) -> Graph {
        let json: String
        do {
            json = try String(contentsOfFile: architecturePath, encoding: .utf8)
        } catch {
            throw .unreadableFile(path: architecturePath, reason: "cannot read the architecture JSON")
        }
        let file = try open(path)
        let root = file.root
        let store: WeightStore
        if root.hasAttribute("layer_names") || root.hasAttribute("layer_names0") {
            store = .legacy(root)
        } else if root.contains("model_weights") {
            do { store = .legacy(try root.group("model_weights")) } catch { throw .unreadableFile(path: path, reason: error.description) }
        } else if root.contains("layers") || root.contains("vars") {
            store = .objectTree(root)
        } else {
            throw .invalidWeights(path: path, layer: "model_weights", reason: "the file holds neither legacy nor Keras 3 weights")
        }
        let version = (try? root.stringAttribute("keras_version")) ?? (store.isObjectTree ? "3" : "unknown")
        return try build(configJSON: json, path: path, kerasVersion: version, store: store, format: "keras-weights-h5")
    }

    private static func importArchive(at path: String) throws(KerasError) -> Graph {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lance-keras-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let config: String, weightsPath: String, version: String
        do {
            let archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
            guard let configEntry = archive["config.json"], let weightsEntry = archive["model.weights.h5"] else {
                throw KerasError.unreadableFile(path: path, reason: "the archive lacks config.json or model.weights.h5; it is not a Keras 3 .keras file")
            }
            var configData = Data()
            _ = try archive.extract(configEntry) { configData.append($0) }
            config = String(decoding: configData, as: UTF8.self)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let weightsURL = folder.appendingPathComponent("model.weights.h5")
            _ = try archive.extract(weightsEntry, to: weightsURL)
            weightsPath = weightsURL.path
            var metadata = Data()
            if let entry = archive["metadata.json"] { _ = try archive.extract(entry) { metadata.append($0) } }
            version = (try? JSONDecoder().decode(JSONValue.self, from: metadata))?["keras_version"]?.string ?? "3"
        } catch let error as KerasError {
            throw error
        } catch {
            throw .unreadableFile(path: path, reason: "not a readable .keras (zip) archive: \(error)")
        }
        let file = try open(weightsPath, reportAs: path)
        return try build(configJSON: config, path: path, kerasVersion: version, store: .objectTree(file.root), format: "keras")
    }

    private static func open(_ path: String, reportAs shownPath: String? = nil) throws(KerasError) -> HDF5File {
        do {
            return try HDF5File(path: path)
        } catch {
            let shown = shownPath ?? path
            if case .cannotOpen(_, let reason) = error { throw .unreadableFile(path: shown, reason: "cannot open as HDF5 (\(reason))") }
            throw .unreadableFile(path: shown, reason: error.description)
        }
    }

    private static func stringAttribute(_ group: HDF5Group, _ name: String, path: String) throws(KerasError) -> String {
        do { return try group.stringAttribute(name) } catch { throw .unreadableFile(path: path, reason: error.description) }
    }

    private static func build(configJSON: String, path: String, kerasVersion: String, store: WeightStore,
                              format: String) throws(KerasError) -> Graph {
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(configJSON.utf8)), json.object != nil else {
            throw .invalidArchitecture(path: path, reason: "the model config is not valid JSON")
        }
        let model = try LayerSpec(json: json, path: path)
        try checkSupported(model, path: path)
        let major = Int(kerasVersion.prefix { $0.isNumber }) ?? 3
        var builder = KerasGraphBuilder(path: path, kerasMajorVersion: major, store: store)
        try builder.distributeLegacyWeights(of: model)
        var graph = try builder.build(model: model)
        graph.provenance = Provenance(sourceFormat: format, producer: "Keras \(kerasVersion)", formatVersion: "Keras \(kerasVersion)",
                                      details: [("input_layout", "NHWC (the graph takes NCHW)")])
        do {
            _ = try graph.inferShapes(inputShapes: graph.inputShapes(batchSize: 1))
        } catch {
            throw .invalidArchitecture(path: path, reason: error.description)
        }
        return graph
    }

    private static func checkSupported(_ model: LayerSpec, path: String) throws(KerasError) {
        var table: [String: UnsupportedLayer] = [:]
        var order: [String] = []
        func visit(_ layer: LayerSpec) {
            if !KerasGraphBuilder.supportedClasses.contains(layer.className) {
                if table[layer.className] == nil {
                    order.append(layer.className)
                    table[layer.className] = UnsupportedLayer(className: layer.className, layers: [], reason: "not implemented")
                }
                table[layer.className]?.layers.append(layer.name)
            }
            layer.sublayers?.forEach(visit)
        }
        model.sublayers?.forEach(visit)
        if !order.isEmpty { throw .unsupportedLayers(path: path, layers: order.compactMap { table[$0] }) }
    }
}

extension WeightStore {
    var isObjectTree: Bool {
        if case .objectTree = self { return true }
        return false
    }
}
