import LanceHDF5

/// One stored weight array.
struct WeightArray {
    var shape: [Int]
    var values: [Float]
}

/// Where a model's weights are: a legacy HDF5 tree (`model_weights/<layer>` with `weight_names`,
/// Keras 2 and Keras 3's `.h5`) or a Keras 3 object tree (`layers/<key>/vars/0..`, inside
/// `.keras` archives and `.weights.h5` files).
enum WeightStore {
    case legacy(HDF5Group)
    case objectTree(HDF5Group)

    /// The arrays a legacy layer group lists in `weight_names`, in that order (trainable then
    /// non-trainable, across all layers of a nested model).
    static func legacyArrays(_ root: HDF5Group, layer: String, path: String) throws(KerasError) -> [WeightArray] {
        guard root.contains(layer) else { return [] }
        do {
            let group = try root.group(layer)
            // Layers without weights store `weight_names` as an empty numeric array.
            guard group.hasAttribute("weight_names") || group.hasAttribute("weight_names0"),
                  let names = try? group.stringArrayAttribute("weight_names") else { return [] }
            var arrays: [WeightArray] = []
            for name in names {
                let dataset = try group.dataset(name)
                arrays.append(WeightArray(shape: try dataset.shape(), values: try dataset.readFloats()))
            }
            return arrays
        } catch {
            throw .invalidWeights(path: path, layer: layer, reason: reason(error, path: path))
        }
    }

    /// The arrays of one layer of a Keras 3 object tree, found under `container` by the `name`
    /// attribute of its `vars` group; `container` is `root` or a nested model's group.
    static func objectTreeArrays(_ container: HDF5Group, layer: String, path: String) throws(KerasError) -> (arrays: [WeightArray], group: HDF5Group?) {
        do {
            guard container.contains("layers") else { return ([], nil) }
            let layers = try container.group("layers")
            for key in try layers.childNames() {
                let child = try layers.group(key)
                guard child.contains("vars") else { continue }
                let variables = try child.group("vars")
                guard (try? variables.stringAttribute("name")) == layer else { continue }
                var arrays: [WeightArray] = []
                var index = 0
                while variables.contains("\(index)") {
                    let dataset = try variables.dataset("\(index)")
                    arrays.append(WeightArray(shape: try dataset.shape(), values: try dataset.readFloats()))
                    index += 1
                }
                return (arrays, child)
            }
            return ([], nil)
        } catch {
            throw .invalidWeights(path: path, layer: layer, reason: reason(error, path: path))
        }
    }

    /// An HDF5 error's sentence without the file name it starts with (the Keras error names it).
    private static func reason(_ error: HDF5Error, path: String) -> String {
        let text = error.description
        return text.hasPrefix(path + ": ") ? String(text.dropFirst(path.count + 2)) : text
    }
}
