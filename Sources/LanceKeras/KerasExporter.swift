import Foundation
import LanceHDF5
import LanceModel
import ZIPFoundation

/// What `KerasExporter.write` wrote.
public struct KerasExportSummary: Sendable, Equatable {
    /// The model's layers (input layers included).
    public var layers: Int
    /// The weight arrays of all layers.
    public var weights: Int
}

/// Writes a `Graph` as a Keras 3 model: a legacy full-model `.h5` (`model.save("m.h5")`'s
/// layout) or a `.keras` archive, both loadable with `keras.models.load_model`.
///
/// The model is a Functional model over channels-last (NHWC) inputs, as Keras computes: every
/// layout change the Keras importer applies is inverted (convolution kernels back to HWIO,
/// depthwise kernels to `(kH, kW, C, multiplier)`, the rows of a Dense kernel that reads a
/// flattened image back to (H, W, C) order), so importing an exported file gives the same weights
/// bit for bit. Graphs imported from ONNX export too where every node has a Keras layer that
/// LANCE's importer reads back (Conv → Conv2D / DepthwiseConv2D, explicit padding → `same` or
/// ZeroPadding2D, Clip(0, 6) → ReLU(max_value=6), ReduceMean over H and W →
/// GlobalAveragePooling2D, Gemm → Dense, ...); otherwise export fails before anything is written,
/// listing every node that cannot be expressed. Image-shaped outputs are returned channels-last.
public enum KerasExporter {
    /// The Keras version recorded in the files (`keras_version`): the files follow Keras 3's
    /// layout, and LANCE's importer reads Keras 3 semantics (for example `hard_sigmoid`) from it.
    public static let kerasVersion = "3.0.0"

    /// Checks that every node of `graph` has a Keras form, without writing anything.
    ///
    /// - Throws: `KerasError.unexportableNodes` listing every node without one, or
    ///   `.unexportableGraph` when the graph has no concrete input shape.
    public static func checkExportable(_ graph: Graph, path: String = "model.keras") throws(KerasError) {
        var translator = try KerasModelTranslator(graph: graph, path: path)
        _ = try translator.translate()
    }

    /// Writes `graph` to `path` as a legacy `.h5` full model or a `.keras` archive (chosen by the
    /// extension), atomically: a temporary file in the same folder, then a rename. An existing
    /// file is replaced.
    ///
    /// - Throws: `KerasError.unknownFormat` for another extension;
    ///   `.unexportableNodes` / `.unexportableGraph` before anything is written;
    ///   `.unwritableOutput` when the file cannot be written.
    @discardableResult
    public static func write(_ graph: Graph, to path: String) throws(KerasError) -> KerasExportSummary {
        let lowercased = path.lowercased()
        guard lowercased.hasSuffix(".h5") || lowercased.hasSuffix(".keras") else { throw .unknownFormat(path: path) }
        var translator = try KerasModelTranslator(graph: graph, path: path)
        let model = try translator.translate()
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        defer { try? FileManager.default.removeItem(at: temporary) }
        if lowercased.hasSuffix(".h5") {
            try writeLegacyHDF5(model, to: temporary.path, reportedAs: path)
        } else {
            try writeArchive(model, to: temporary, reportedAs: path)
        }
        guard rename(temporary.path, path) == 0 else {
            throw .unwritableOutput(path: path, reason: String(cString: strerror(errno)))
        }
        return KerasExportSummary(layers: model.layers.count, weights: model.layers.reduce(0) { $0 + $1.weights.count })
    }

    // MARK: - Files

    /// `model.save("m.h5")`'s layout: root attributes `model_config`, `keras_version`, `backend`;
    /// `model_weights` with `layer_names` (in `model.layers` order, which Keras matches weights
    /// by) and per layer a group `<layer>` listing `weight_names` `<layer>/<variable>`.
    static func writeLegacyHDF5(_ model: KerasModelDescription, to path: String, reportedAs shownPath: String) throws(KerasError) {
        do {
            let file = try HDF5File.create(path: path)
            let root = file.root
            try root.setStringAttribute("backend", "tensorflow")
            try root.setStringAttribute("keras_version", kerasVersion)
            try root.setStringAttribute("model_config", modelConfig(model, archive: false).text)
            let weights = try root.createGroup("model_weights")
            try setChunkedStrings(weights, "layer_names", model.layers.map(\.name))
            try weights.setStringAttribute("backend", "tensorflow")
            try weights.setStringAttribute("keras_version", kerasVersion)
            for layer in model.layers.sorted(by: { $0.name < $1.name }) {
                let group = try weights.createGroup(layer.name)
                try setChunkedStrings(group, "weight_names", layer.weights.map { "\(layer.name)/\($0.variable)" })
                for weight in layer.weights {
                    try group.createDataset("\(layer.name)/\(weight.variable)", shape: weight.shape, values: weight.values)
                }
            }
            let topLevel = try weights.createGroup("top_level_model_weights")
            try topLevel.setStringArrayAttribute("weight_names", [])
            try file.flush()
        } catch {
            throw .unwritableOutput(path: shownPath, reason: error.description)
        }
    }

    /// Keras splits string-list attributes above 64 KiB into `name0`, `name1`, ...; a
    /// variable-length string takes 16 bytes of the object header, so lists are split every 4000.
    static func setChunkedStrings(_ group: HDF5Group, _ name: String, _ values: [String]) throws(HDF5Error) {
        let chunk = 4000
        guard values.count > chunk else { return try group.setStringArrayAttribute(name, values) }
        for (index, start) in stride(from: 0, to: values.count, by: chunk).enumerated() {
            try group.setStringArrayAttribute("\(name)\(index)", Array(values[start..<min(start + chunk, values.count)]))
        }
    }

    /// Keras 3's `.keras` zip: `metadata.json`, `config.json` and `model.weights.h5`, whose
    /// `layers/<key>/vars/<i>` groups are keyed by the layer class in snake case, numbered in
    /// `model.layers` order (`conv2d`, `conv2d_1`, ...), as Keras looks them up.
    static func writeArchive(_ model: KerasModelDescription, to url: URL, reportedAs shownPath: String) throws(KerasError) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lance-keras-export-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let weightsURL = folder.appendingPathComponent("model.weights.h5")
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw .unwritableOutput(path: shownPath, reason: "cannot create a temporary folder: \(error.localizedDescription)")
        }
        do {
            let file = try HDF5File.create(path: weightsURL.path)
            let root = file.root
            var used: [String: Int] = [:]
            for layer in model.layers {
                let base = snakeCase(layer.className)
                let key: String
                if let count = used[base] {
                    key = "\(base)_\(count + 1)"
                    used[base] = count + 1
                } else {
                    key = base
                    used[base] = 0
                }
                let variables = try root.createGroup("layers/\(key)/vars")
                try variables.setStringAttribute("name", layer.name)
                for (index, weight) in layer.weights.enumerated() {
                    try variables.createDataset("\(index)", shape: weight.shape, values: weight.values)
                }
            }
            try root.createGroup("vars").setStringAttribute("name", model.name)
            try file.flush()
        } catch {
            throw .unwritableOutput(path: shownPath, reason: error.description)
        }
        let dateFormatter = DateFormatter()
        dateFormatter.locale = Locale(identifier: "en_US_POSIX")
        dateFormatter.dateFormat = "yyyy-MM-dd@HH:mm:ss"
        let metadata = OrderedJSON.object([("keras_version", .string(kerasVersion)), ("date_saved", .string(dateFormatter.string(from: Date())))])
        do {
            try? FileManager.default.removeItem(at: url)
            let archive = try Archive(url: url, accessMode: .create)
            for (name, text) in [("metadata.json", metadata.text), ("config.json", modelConfig(model, archive: true).text)] {
                let data = Data(text.utf8)
                try archive.addEntry(with: name, type: .file, uncompressedSize: Int64(data.count), compressionMethod: .deflate) { position, size in
                    data.subdata(in: Int(position)..<(Int(position) + size))
                }
            }
            // Stored, not compressed: Keras reads the weights by seeking inside the entry.
            try archive.addEntry(with: "model.weights.h5", fileURL: weightsURL, compressionMethod: .none)
        } catch {
            throw .unwritableOutput(path: shownPath, reason: "writing the zip archive failed: \(error)")
        }
    }

    /// Keras's `naming.to_snake_case`.
    static func snakeCase(_ name: String) -> String {
        var text = name.replacingOccurrences(of: "\\W+", with: "", options: .regularExpression)
        text = text.replacingOccurrences(of: "(.)([A-Z][a-z]+)", with: "$1_$2", options: .regularExpression)
        text = text.replacingOccurrences(of: "([a-z])([A-Z])", with: "$1_$2", options: .regularExpression)
        return text.lowercased()
    }

    // MARK: - Configuration

    /// The model's configuration JSON: `.keras` archives carry `module` / `registered_name`
    /// entries, legacy `.h5` files do not (as Keras 3 writes them).
    static func modelConfig(_ model: KerasModelDescription, archive: Bool) -> OrderedJSON {
        func tensor(_ reference: KerasTensorReference) -> OrderedJSON {
            .object([("class_name", .string("__keras_tensor__")),
                     ("config", .object([("shape", .batchShape(reference.shape)), ("dtype", .string("float32")),
                                         ("keras_history", .array([.string(reference.layer), .integer(reference.call), .integer(0)]))]))])
        }
        func references(_ tensors: [KerasTensorReference]) -> OrderedJSON {
            let triples = tensors.map { OrderedJSON.array([.string($0.layer), .integer($0.call), .integer(0)]) }
            return triples.count == 1 ? triples[0] : .array(triples)
        }
        let layers = model.layers.map { layer -> OrderedJSON in
            var config: [(String, OrderedJSON)]
            let inbound: OrderedJSON
            if layer.className == "InputLayer" {
                config = [("batch_shape", layer.config.first { $0.0 == "batch_shape" }?.1 ?? .null), ("dtype", .string("float32"))]
                    + layer.config.filter { $0.0 != "batch_shape" } + [("name", .string(layer.name))]
                inbound = .array([])
            } else {
                config = [("name", .string(layer.name)), ("trainable", .bool(layer.trainable)), ("dtype", .string("float32"))] + layer.config
                inbound = .array(layer.calls.map { inputs in
                    let argument: OrderedJSON = layer.takesList ? .array(inputs.map(tensor)) : tensor(inputs[0])
                    return .object([("args", .array([argument])), ("kwargs", .object([]))])
                })
            }
            var entry: [(String, OrderedJSON)] = archive ? [("module", .string("keras.layers"))] : []
            entry += [("class_name", .string(layer.className)), ("config", .object(config))]
            if archive { entry.append(("registered_name", .null)) }
            entry += [("name", .string(layer.name)), ("inbound_nodes", inbound)]
            return .object(entry)
        }
        let config: OrderedJSON = .object([("name", .string(model.name)), ("trainable", .bool(true)), ("layers", .array(layers)),
                                           ("input_layers", references(model.inputs)), ("output_layers", references(model.outputs))])
        if archive {
            return .object([("module", .string("keras.src.models.functional")), ("class_name", .string("Functional")),
                            ("config", config), ("registered_name", .string("Functional"))])
        }
        return .object([("class_name", .string("Functional")), ("config", config)])
    }
}
