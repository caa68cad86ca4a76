/// A reference to one output tensor of one call of a layer: `[layer, node, tensor]` in Keras.
struct TensorReference: Hashable {
    var layer: String
    var node: Int
    var tensor: Int
}

/// One layer of a Keras architecture, parsed from the model config JSON (Keras 2 and 3 forms).
final class LayerSpec {
    let className: String
    let name: String
    let config: [String: JSONValue]
    /// Per call of the layer, the tensors it was called on.
    let calls: [[TensorReference]]
    /// For a nested model: its layers.
    let sublayers: [LayerSpec]?
    /// For a nested functional model: its input and output tensors.
    let inputs: [TensorReference]
    let outputs: [TensorReference]

    var isContainer: Bool { sublayers != nil }
    var isSequential: Bool { className == "Sequential" }

    init(json: JSONValue, path: String) throws(KerasError) {
        guard let className = json["class_name"]?.string else {
            throw .invalidArchitecture(path: path, reason: "a layer entry has no class_name")
        }
        let config = json["config"]?.object ?? [:]
        self.className = className
        self.config = config
        self.name = json["name"]?.string ?? config["name"]?.string ?? className
        var calls: [[TensorReference]] = []
        if let nodes = json["inbound_nodes"]?.array {
            for node in nodes {
                var references: [TensorReference] = []
                Self.collectReferences(node, into: &references)
                calls.append(references)
            }
        }
        self.calls = calls
        if ["Sequential", "Functional", "Model"].contains(className) {
            guard let layers = config["layers"]?.array else {
                throw .invalidArchitecture(path: path, reason: "model '\(name)' has no layer list")
            }
            var parsed: [LayerSpec] = []
            for layer in layers { parsed.append(try LayerSpec(json: layer, path: path)) }
            sublayers = parsed
            inputs = Self.references(config["input_layers"])
            outputs = Self.references(config["output_layers"])
        } else {
            sublayers = nil
            inputs = []
            outputs = []
        }
    }

    /// Finds the tensor references in a Keras 2 node (`[[name, node, tensor, kwargs], ...]`) or a
    /// Keras 3 node (`{"args": [...], "kwargs": {...}}` holding `__keras_tensor__` entries).
    private static func collectReferences(_ value: JSONValue, into references: inout [TensorReference]) {
        if let object = value.object {
            if object["class_name"]?.string == "__keras_tensor__",
               let history = object["config"]?["keras_history"]?.array,
               let reference = reference(history) {
                references.append(reference)
            } else if let arguments = object["args"] {
                collectReferences(arguments, into: &references)
            }
        } else if let list = value.array {
            if let reference = reference(list) {
                references.append(reference)
            } else {
                for item in list { collectReferences(item, into: &references) }
            }
        }
    }

    /// `[name, node, tensor, ...]` as a reference.
    private static func reference(_ list: [JSONValue]) -> TensorReference? {
        guard list.count >= 3, let layer = list[0].string, let node = list[1].integer, let tensor = list[2].integer else {
            return nil
        }
        return TensorReference(layer: layer, node: node, tensor: tensor)
    }

    /// `input_layers`/`output_layers`: a list of triples, or a single flat triple.
    private static func references(_ value: JSONValue?) -> [TensorReference] {
        guard let list = value?.array else { return [] }
        if let single = reference(list) { return [single] }
        return list.compactMap { $0.array.flatMap(reference) }
    }

    // MARK: - Config accessors

    func int(_ key: String) -> Int? { config[key]?.integer }

    func float(_ key: String) -> Float? { config[key]?.double.map { Float($0) } }

    func bool(_ key: String, default fallback: Bool) -> Bool { config[key]?.bool ?? fallback }

    func string(_ key: String) -> String? { config[key]?.string }

    /// An integer pair such as `kernel_size` (given as one number or a list of two).
    func pair(_ key: String) -> [Int]? {
        if let single = int(key) { return [single, single] }
        guard let list = config[key]?.array else { return nil }
        let values = list.compactMap(\.integer)
        return values.count == list.count ? values : nil
    }

    /// A list of integers or nulls (`batch_shape`, `target_shape`).
    func shape(_ key: String) -> [Int?]? {
        config[key]?.array?.map(\.integer)
    }
}
