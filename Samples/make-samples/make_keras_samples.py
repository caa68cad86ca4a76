"""Builds the small Keras sample models in Samples/keras and their reference outputs.

Each model is saved twice by Keras itself: as a legacy full-model HDF5 file (`model.save("x.h5")`)
and as a Keras 3 archive (`model.save("x.keras")`). Weights are deterministic (drawn from a seeded
generator and assigned explicitly, BatchNormalization statistics included), inputs are NHWC
float32, and the expected outputs come from `model.predict`. Every saved file is reloaded with
`keras.models.load_model` and must predict the same within 1e-6 before its outputs are written.
One model is also saved as weights only (legacy and Keras 3 layouts) with its JSON architecture,
and the malformed files are the error cases an importer must report precisely.

Run through make_keras_samples.sh (it creates a virtual environment with pinned versions and sets
KERAS_BACKEND).
"""
import json
import os
import shutil
import zipfile

import absl.logging
import h5py
import numpy as np

import keras
from keras import layers
from keras.src.legacy.saving import legacy_h5_format

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keras")
SEED = 20261125
TOLERANCE = 1e-6

fixtures = []


# ---------------------------------------------------------------------------------------------
# Helpers


def fill_weights(model, rng, gains=None):
    """Assigns deterministic weights to every variable; `gains` scales kernels per layer name."""
    gains = gains or {}

    def visit(layer):
        if isinstance(layer, keras.Model) and layer is not model:
            for inner in layer.layers:
                visit(inner)
            return
        gain = gains.get(layer.name, 1.0)
        for v in layer.weights:
            shape = tuple(v.shape)
            role = v.name
            depthwise = role == "depthwise_kernel" or (
                role == "kernel" and isinstance(layer, layers.DepthwiseConv2D))
            if depthwise:  # (kH, kW, C_in, multiplier): each output sees one input channel
                fan_in = shape[0] * shape[1]
                value = rng.normal(0, gain / np.sqrt(fan_in), shape)
            elif role in ("kernel", "pointwise_kernel"):
                fan_in = int(np.prod(shape[:-1]))
                value = rng.normal(0, gain / np.sqrt(fan_in), shape)
            elif role == "bias":
                value = rng.normal(0, 0.2, shape)
            elif role == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            elif role == "beta":
                value = rng.normal(0, 0.3, shape)
            elif role == "moving_mean":
                value = rng.normal(0, 0.5, shape)
            elif role == "moving_variance":
                value = rng.uniform(0.5, 2.0, shape)
            else:
                raise ValueError(f"no rule for variable {v.path}")
            v.assign(value.astype(np.float32))

    for layer in model.layers:
        visit(layer)


def layer_classes(config):
    """Layer class names from a model config, nested models included, in first-seen order."""
    seen = []

    def walk(layer_list):
        for entry in layer_list:
            if entry["class_name"] not in seen:
                seen.append(entry["class_name"])
            inner = entry.get("config", {}).get("layers")
            if isinstance(inner, list):
                walk(inner)

    walk(config["layers"])
    return seen


def check_close(reference, other, what):
    diff = float(np.max(np.abs(reference - other)))
    if diff > TOLERANCE:
        raise SystemExit(f"{what}: reloaded model differs from the original by {diff}")
    return diff


def save_model_fixture(name, model, x, what):
    """Saves `model` as .h5 and .keras, checks both reload identically, writes input and output."""
    x = x.astype(np.float32)
    y = model.predict(x, verbose=0).astype(np.float32)
    h5_path = os.path.join(OUT, f"{name}.h5")
    keras_path = os.path.join(OUT, f"{name}.keras")
    # .keras first: the legacy writer removes "optimizer" from the model's compile config in place.
    model.save(keras_path)
    model.save(h5_path)
    diffs = {}
    for path in (h5_path, keras_path):
        reloaded = keras.models.load_model(path)
        diffs[os.path.basename(path)] = check_close(
            y, reloaded.predict(x, verbose=0), os.path.basename(path))
    np.save(os.path.join(OUT, f"{name}_input.npy"), x)
    np.save(os.path.join(OUT, f"{name}_expected.npy"), y)
    fixtures.append({
        "name": name,
        "kind": "model",
        "files": [f"{name}.h5", f"{name}.keras", f"{name}_input.npy", f"{name}_expected.npy"],
        "input_shape": list(x.shape),
        "output_shape": list(y.shape),
        "layer_classes": layer_classes(model.get_config()),
        "count_params": int(model.count_params()),
        "compiled": bool(getattr(model, "compiled", False)),
        "exercises": what,
    })
    print(f"{name}: {model.count_params()} parameters, output {y.shape}, reload diff {diffs}")
    return y


# ---------------------------------------------------------------------------------------------
# Models


def conv_layers():
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED + 1)
    model = keras.Sequential([
        keras.Input((17, 17, 3)),
        # Odd input, stride 2, 'same': 17 -> 9.
        layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", use_bias=True),
        # Dilated valid convolution without bias: 9 -> 5.
        layers.Conv2D(8, 3, padding="valid", dilation_rate=2, use_bias=False, activation=None),
        layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
        # Even kernel with 'same': the extra padding pixel goes at the bottom/right.
        layers.SeparableConv2D(8, 2, padding="same"),
        layers.BatchNormalization(scale=False, epsilon=1e-2),
        layers.ReLU(max_value=6.0),
        layers.Conv2D(8, 1),
        layers.BatchNormalization(center=False, epsilon=1e-4),
        layers.ReLU(negative_slope=0.1, threshold=0.5),
        layers.Conv2D(8, 1),
        layers.LeakyReLU(negative_slope=0.2),
        layers.Conv2D(8, 1),
        layers.Activation("relu"),
        layers.Conv2D(8, 1, name="pre_relu6"),
        layers.Activation("relu6"),
        layers.Conv2D(8, 1),
        layers.Activation("sigmoid"),
        layers.Conv2D(8, 1, name="pre_hard_sigmoid"),
        layers.Activation("hard_sigmoid"),
        layers.Conv2D(8, 1, name="pre_swish"),
        layers.Activation("swish"),
        layers.Conv2D(8, 1),
        layers.Activation("linear"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(5, activation="softmax"),
    ], name="conv_layers")
    # Larger gains push the inputs of ReLU(max_value=6), relu6, hard_sigmoid and swish across their
    # kinks, and spread the two samples' outputs apart.
    fill_weights(model, rng, gains={"separable_conv2d": 2.0, "pre_relu6": 5.0,
                                   "pre_hard_sigmoid": 12.0, "pre_swish": 6.0, "dense": 1.5})
    # The second sample is shifted and scaled so the two rows of the output differ clearly.
    x = rng.normal(0, 1, (2, 17, 17, 3)) * np.array([1.0, 1.8]).reshape(2, 1, 1, 1)
    x[1] += 0.5
    save_model_fixture("conv_layers", model, x,
                       "Conv2D (stride 2 'same' on odd input, dilation 2 'valid' without bias, 1x1), "
                       "DepthwiseConv2D (depth_multiplier 2), SeparableConv2D (even kernel 'same', "
                       "asymmetric padding), BatchNormalization (scale=False; center=False; "
                       "non-default epsilon), ReLU (max_value; negative_slope and threshold), "
                       "LeakyReLU, Activation relu/relu6/sigmoid/hard_sigmoid/swish/linear, "
                       "GlobalAveragePooling2D, Dense with softmax")


def pooling_layers():
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED + 2)
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        layers.Rescaling(scale=1.0 / 255, offset=-0.5),  # [0, 255] -> [-0.5, 0.5]
        layers.ZeroPadding2D(((1, 2), (0, 1))),  # 10x10 -> 13x11
        layers.MaxPooling2D(2, padding="same"),  # -> 7x6; 'same' padding never wins the max
        layers.AveragePooling2D(2, strides=1, padding="same"),  # padding excluded from the mean
        layers.AveragePooling2D(3, strides=2, padding="valid"),  # -> 3x2
        layers.Conv2D(6, 3, padding="same", activation="relu"),
        layers.GlobalMaxPooling2D(),
        layers.Dropout(0.3),
        layers.Dense(4),
    ], name="pooling_layers")
    fill_weights(model, rng, gains={"conv2d": 4.0})
    x = rng.uniform(0, 255, (2, 10, 10, 3))
    save_model_fixture("pooling_layers", model, x,
                       "Rescaling(1/255, -0.5) on inputs in [0, 255], ZeroPadding2D ((1,2),(0,1)), "
                       "MaxPooling2D 2 'same' on an odd size with negative values (padding must not "
                       "win the max), AveragePooling2D 2 stride 1 'same' (padding not counted) and 3 "
                       "stride 2 'valid', Conv2D, GlobalMaxPooling2D, Dropout (identity at "
                       "inference), Dense")


def flatten_dense():
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED + 3)
    model = keras.Sequential([
        keras.Input((6, 5, 3)),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.Flatten(),
        layers.Dense(8, activation="relu"),
        layers.Dense(3),
    ], name="flatten_dense")
    fill_weights(model, rng)
    # Compiled with a built optimizer so the .h5 also carries training_config and optimizer_weights,
    # which an importer must skip.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss=keras.losses.MeanSquaredError())
    model.optimizer.build(model.trainable_variables)
    x = rng.normal(0, 1, (2, 6, 5, 3))
    save_model_fixture("flatten_dense", model, x,
                       "Conv2D -> Flatten -> Dense on a non-square 6x5 map: Flatten is in (H, W, C) "
                       "order, so an NCHW runtime must permute the first Dense kernel's rows; the "
                       "model is compiled, so the .h5 has training_config and optimizer_weights")


def reshape_flatten():
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED + 4)
    model = keras.Sequential([
        keras.Input((6, 5, 3)),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.Reshape((3, 10, 4)),  # reinterprets the (H, W, C) buffer as another image
        layers.Conv2D(2, 3, padding="same"),
        layers.Flatten(),
        layers.Dense(3),
    ], name="reshape_flatten")
    fill_weights(model, rng)
    x = rng.normal(0, 1, (2, 6, 5, 3))
    save_model_fixture("reshape_flatten", model, x,
                       "Reshape of an NHWC feature map to another image shape (row-major over "
                       "H, W, C), a convolution on the reshaped map, then Flatten -> Dense")


def functional_branches():
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED + 5)
    inputs = keras.Input((8, 8, 3), name="image")
    a = layers.Conv2D(6, 3, padding="same", activation="relu", name="branch_a")(inputs)
    b = layers.Conv2D(6, 3, padding="same", name="branch_b")(inputs)
    added = layers.Add(name="add")([a, b])
    gate_logits = layers.Conv2D(6, 1, name="gate_conv")(inputs)
    gate = layers.Activation("hard_sigmoid", name="gate")(gate_logits)
    gated = layers.Multiply(name="multiply")([added, gate])
    merged = layers.Concatenate(axis=-1, name="concat")([gated, a])
    y = layers.Conv2D(4, 1, activation="relu", name="mix")(merged)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    outputs = layers.Dense(3, name="logits")(y)
    model = keras.Model(inputs, outputs, name="functional_branches")
    fill_weights(model, rng, gains={"gate_conv": 1.5})
    x = rng.normal(0, 1, (2, 8, 8, 3))
    save_model_fixture("functional_branches", model, x,
                       "Functional graph: two branches from one input merged by Add, a "
                       "hard_sigmoid gate applied with Multiply, Concatenate on the channel axis "
                       "reusing branch_a (one tensor feeding two layers)")


def nested_model():
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED + 6)
    block = keras.Sequential([
        keras.Input((8, 8, 4)),
        layers.Conv2D(5, 3, padding="same", use_bias=False),
        layers.BatchNormalization(epsilon=1e-3),
        layers.ReLU(),
        layers.Conv2D(5, 1),
    ], name="block")
    inputs = keras.Input((8, 8, 3), name="image")
    shared = layers.Conv2D(4, 3, padding="same", name="shared_conv")
    first = shared(inputs)
    other = layers.Conv2D(3, 1, name="pre")(inputs)
    second = shared(other)  # the same layer instance (same weights) applied a second time
    s = layers.Add(name="add")([first, second])
    y = block(s)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    outputs = layers.Dense(3, name="logits")(y)
    model = keras.Model(inputs, outputs, name="nested_model")
    fill_weights(model, rng)
    x = rng.normal(0, 1, (2, 8, 8, 3))
    save_model_fixture("nested_model", model, x,
                       "Functional model holding a Sequential sub-model ('block': Conv2D without "
                       "bias, BatchNormalization, ReLU, Conv2D) as one layer, whose legacy .h5 group "
                       "lists all trainable weights of the block before its BN moving statistics, "
                       "and one Conv2D instance ('shared_conv') applied to two tensors (two "
                       "inbound nodes, one weight set)")


def weights_only():
    """One model saved as JSON architecture plus weights, in the legacy and Keras 3 layouts."""
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED + 7)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Conv2D(4, 3, padding="same"),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(3),
    ], name="weights_only")
    fill_weights(model, rng)
    x = rng.normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    y = model.predict(x, verbose=0).astype(np.float32)

    json_path = os.path.join(OUT, "weights_only.json")
    with open(json_path, "w") as f:
        f.write(model.to_json(indent=1))
        f.write("\n")
    # Keras 3 layout: object-path tree (layers/<snake_case class>/vars/0, ...).
    model.save_weights(os.path.join(OUT, "weights_only.weights.h5"))
    # Legacy layout (what Keras 2 `save_weights("w.h5")` wrote): layer_names/weight_names at the root.
    with h5py.File(os.path.join(OUT, "weights_only_legacy.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)

    with open(json_path) as f:
        architecture = f.read()
    for weights_file in ("weights_only.weights.h5", "weights_only_legacy.h5"):
        keras.backend.clear_session()
        rebuilt = keras.models.model_from_json(architecture)
        rebuilt.load_weights(os.path.join(OUT, weights_file))
        diff = check_close(y, rebuilt.predict(x, verbose=0), weights_file)
        print(f"weights_only: {weights_file} reload diff {diff}")
    np.save(os.path.join(OUT, "weights_only_input.npy"), x)
    np.save(os.path.join(OUT, "weights_only_expected.npy"), y)
    fixtures.append({
        "name": "weights_only",
        "kind": "weights_only",
        "files": ["weights_only.json", "weights_only.weights.h5", "weights_only_legacy.h5",
                  "weights_only_input.npy", "weights_only_expected.npy"],
        "layouts": {
            "weights_only.json": "model.to_json(): Keras 3 serialization (module, class_name, "
                                 "config, registered_name, build_config)",
            "weights_only.weights.h5": "Keras 3 model.save_weights: layers/<snake_case class "
                                       "name + ordinal>/vars/<i>, trainable then non-trainable",
            "weights_only_legacy.h5": "legacy save_weights_to_hdf5_group written at the file "
                                      "root: attributes layer_names, backend, keras_version; "
                                      "one group per layer with weight_names",
        },
        "input_shape": list(x.shape),
        "output_shape": list(y.shape),
        "layer_classes": layer_classes(model.get_config()),
        "count_params": int(model.count_params()),
        "exercises": "weights separate from the architecture; both weight layouts",
    })


# ---------------------------------------------------------------------------------------------
# Malformed files, derived from conv_layers.h5


def keras_load_error(path):
    keras.backend.clear_session()
    try:
        keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure is what we want to record
        return type(e).__name__
    raise SystemExit(f"{os.path.basename(path)} unexpectedly loaded in Keras")


def malformed():
    rng = np.random.default_rng(SEED + 8)
    source = os.path.join(OUT, "conv_layers.h5")
    with open(source, "rb") as f:
        data = f.read()
    cases = []

    path = os.path.join(OUT, "not_hdf5.h5")
    with open(path, "wb") as f:
        f.write(rng.integers(0, 256, 1024, dtype=np.uint8).tobytes())
    cases.append(("not_hdf5", "1024 random bytes, no HDF5 signature"))

    path = os.path.join(OUT, "truncated.h5")
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    cases.append(("truncated", f"the first {len(data) // 2} of {len(data)} bytes of conv_layers.h5"))

    path = os.path.join(OUT, "missing_model_weights.h5")
    with h5py.File(source, "r") as src, h5py.File(path, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key in src:
            if key != "model_weights":
                src.copy(src[key], dst, name=key)
    cases.append(("missing_model_weights",
                  "conv_layers.h5 copied with its root attributes but without the model_weights group"))

    path = os.path.join(OUT, "wrong_weight_shape.h5")
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights"]["conv2d"]
        name = group.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else str(name)
        expected = group[name].shape
        shape = expected[:-1] + (expected[-1] + 1,)
        del group[name]
        group.create_dataset(name, data=rng.normal(0, 0.1, shape).astype(np.float32))
    cases.append(("wrong_weight_shape",
                  f"conv_layers.h5 with model_weights/conv2d/{name} replaced by a {shape} array "
                  f"(the layer expects {expected})"))

    path = os.path.join(OUT, "unknown_layer.h5")
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as f:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        target = next(l for l in config["config"]["layers"] if l["class_name"] == "LeakyReLU")
        target["class_name"] = "FancyLayer"
        f.attrs["model_config"] = json.dumps(config).encode("utf8")
    cases.append(("unknown_layer",
                  f"conv_layers.h5 with model_config's layer '{target['config']['name']}' "
                  "renamed to class FancyLayer (its weights are untouched)"))

    for name, what in cases:
        fixtures.append({
            "name": name,
            "kind": "malformed",
            "files": [f"{name}.h5"],
            "derived_from": "conv_layers",
            "keras_load_error": keras_load_error(os.path.join(OUT, f"{name}.h5")),
            "exercises": what,
        })
        print(f"{name}: Keras refuses it ({fixtures[-1]['keras_load_error']})")


# ---------------------------------------------------------------------------------------------
# Structure summaries (printed, for the importer's author)


def attribute_type(obj, name):
    attr = h5py.h5a.open(obj.id, name.encode())
    kind = attr.get_type()
    if isinstance(kind, h5py.h5t.TypeStringID):
        length = "variable-length" if kind.is_variable_str() else f"fixed-length {kind.get_size()}"
        charset = "UTF-8" if kind.get_cset() == h5py.h5t.CSET_UTF8 else "ASCII"
        return f"{length} {charset} string, shape {attr.shape}"
    return f"{type(kind).__name__}, shape {attr.shape}"


def describe_h5(name):
    print(f"--- {name}")
    with h5py.File(os.path.join(OUT, name), "r") as f:
        for key in f.attrs:
            value = f.attrs[key]
            text = value.decode() if isinstance(value, bytes) else str(value)
            print(f"  attr {key}: {attribute_type(f, key)}: {text[:70]}")
        print(f"  groups: {list(f.keys())}")
        if "model_weights" in f:
            weights = f["model_weights"]
            for key in weights.attrs:
                print(f"  model_weights attr {key}: {attribute_type(weights, key)}: "
                      f"{list(weights.attrs[key]) if key == 'layer_names' else weights.attrs[key]}")
        else:
            weights = f  # legacy weights-only file: the layer groups are at the root
        for layer in weights:
            group = weights[layer]
            names = list(group.attrs.get("weight_names", []))
            kind = attribute_type(group, "weight_names") if "weight_names" in group.attrs else "-"
            print(f"  {layer}: weight_names ({kind}) {names}")
            for n in names:
                n = n.decode() if isinstance(n, bytes) else n
                print(f"      {n}: {group[n].shape} {group[n].dtype}")


def describe_keras(name):
    print(f"--- {name}")
    with zipfile.ZipFile(os.path.join(OUT, name)) as z:
        print(f"  members: {z.namelist()}")
        with z.open("model.weights.h5") as member:
            with h5py.File(member, "r") as f:
                f.visititems(lambda n, o: print(f"      {n}: {o.shape} {o.dtype}")
                             if isinstance(o, h5py.Dataset) else None)


def main():
    os.makedirs(OUT, exist_ok=True)
    absl.logging.set_verbosity(absl.logging.ERROR)  # silences the "HDF5 is legacy" warnings
    keras.utils.set_random_seed(SEED)
    conv_layers()
    pooling_layers()
    flatten_dense()
    reshape_flatten()
    functional_branches()
    nested_model()
    weights_only()
    malformed()
    manifest = {
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "backend_version": __import__(keras.backend.backend()).__version__,
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
        "image_data_format": keras.backend.image_data_format(),
        "tolerance": TOLERANCE,
        "fixtures": fixtures,
    }
    with open(os.path.join(OUT, "fixtures.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    describe_h5("conv_layers.h5")
    describe_h5("nested_model.h5")
    describe_h5("weights_only_legacy.h5")
    describe_keras("nested_model.keras")


if __name__ == "__main__":
    main()
