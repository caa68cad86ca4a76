"""Builds the small ONNX sample models in Samples/onnx and their reference outputs.

Each model exercises an import path that real exporters produce: initializers listed as graph
inputs, weights in Constant nodes, raw_data and typed (float_data) storage, float16 weights behind
a Cast, external data files with an offset, and PyTorch's Shape/Gather/Unsqueeze/Concat/Reshape
flatten. Reference outputs come from onnxruntime. The malformed models are the error cases the
importer must report precisely.

Run through make_onnx_samples.sh (it creates a virtual environment with pinned versions).
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "onnx")
rng = np.random.default_rng(20261125)


def save(model, name, check=True):
    if check:
        onnx.checker.check_model(model)
    path = os.path.join(OUT, name)
    onnx.save(model, path)
    return path


def reference(path, x, name):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.save(os.path.join(OUT, name), y.astype(np.float32))


def tiny_cnn():
    """Conv+BN+Relu+MaxPool, a PyTorch-style flatten sub-graph, Gemm from a Constant, Softmax."""
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (4,)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    shift = rng.normal(0, 0.1, 4).astype(np.float32)
    mean = rng.normal(0, 0.1, 4).astype(np.float32)
    var = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    dense = rng.normal(0, 0.2, (5, 64)).astype(np.float32)
    dense_bias = rng.normal(0, 0.1, (5,)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(w, "conv.weight"),  # raw_data
        numpy_helper.from_array(b, "conv.bias"),
        # typed storage (float_data) instead of raw_data
        helper.make_tensor("bn.scale", TensorProto.FLOAT, [4], scale.tolist()),
        helper.make_tensor("bn.bias", TensorProto.FLOAT, [4], shift.tolist()),
        helper.make_tensor("bn.mean", TensorProto.FLOAT, [4], mean.tolist()),
        helper.make_tensor("bn.var", TensorProto.FLOAT, [4], var.tolist()),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "gather.index"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "unsqueeze.axes"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"],
                         name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "gather.index"], ["batch"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "unsqueeze.axes"], ["batch1"], name="unsqueeze"),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"], name="flatten"),
        helper.make_node("Constant", [], ["fc.weight"], name="fc.weight.constant",
                         value=numpy_helper.from_array(dense, "fc.weight")),
        helper.make_node("Constant", [], ["fc.bias"], name="fc.bias.constant",
                         value=numpy_helper.from_array(dense_bias, "fc.bias")),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    # Old exporters (IR < 4) also list every initializer as a graph input.
    listed = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    graph = helper.make_graph(nodes, "tiny_cnn", [x_info] + listed,
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 5])],
                              initializer=initializers)
    model = helper.make_model(graph, producer_name="lance-samples", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = save(model, "tiny_cnn.onnx")
    x = rng.normal(0, 1, (3, 3, 8, 8)).astype(np.float32)
    np.save(os.path.join(OUT, "tiny_input.npy"), x)
    reference(path, x, "tiny_cnn_expected.npy")
    return model


def external_and_float16():
    """Conv weights in an external file (at an offset) and float16 weights behind a Cast."""
    w = rng.normal(0, 0.3, (2, 3, 3, 3)).astype(np.float32)
    w16 = rng.normal(0, 0.3, (2, 2, 1, 1)).astype(np.float16)
    external = numpy_helper.from_array(w, "conv1.weight")
    padding = b"\0" * 64
    with open(os.path.join(OUT, "external_weights.bin"), "wb") as file:
        file.write(padding + w.tobytes())
    external.ClearField("raw_data")
    external.data_location = TensorProto.EXTERNAL
    for key, value in [("location", "external_weights.bin"), ("offset", str(len(padding))),
                       ("length", str(w.nbytes))]:
        entry = external.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight"], ["a"], name="conv1", kernel_shape=[3, 3]),
        helper.make_node("Cast", ["conv2.weight.fp16"], ["conv2.weight"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Conv", ["a", "conv2.weight"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(nodes, "external_fp16",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4, 4])],
                              initializer=[external, numpy_helper.from_array(w16, "conv2.weight.fp16")])
    model = helper.make_model(graph, producer_name="lance-samples", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = save(model, "external_fp16.onnx", check=False)
    x = rng.normal(0, 1, (2, 3, 6, 6)).astype(np.float32)
    np.save(os.path.join(OUT, "external_fp16_input.npy"), x)
    reference(path, x, "external_fp16_expected.npy")


def malformed(base):
    """Models the importer must reject with a precise, typed error."""
    wrong_size = onnx.ModelProto()
    wrong_size.CopyFrom(base)
    weight = next(t for t in wrong_size.graph.initializer if t.name == "conv.weight")
    weight.raw_data = weight.raw_data[:-8]  # two floats short
    save(wrong_size, "bad_initializer_size.onnx", check=False)

    missing = onnx.ModelProto()
    missing.CopyFrom(base)
    kept = [t for t in missing.graph.initializer if t.name != "conv.bias"]
    del missing.graph.initializer[:]
    missing.graph.initializer.extend(kept)
    kept_inputs = [i for i in missing.graph.input if i.name != "conv.bias"]
    del missing.graph.input[:]
    missing.graph.input.extend(kept_inputs)
    save(missing, "missing_initializer.onnx", check=False)

    unknown = onnx.ModelProto()
    unknown.CopyFrom(base)
    for node in unknown.graph.node:
        if node.name == "relu":
            node.op_type = "Mish"
        if node.name == "pool":
            node.op_type = "LpPool"
            node.attribute.append(helper.make_attribute("p", 2))
    unknown.graph.node.insert(0, helper.make_node("FancyNorm", ["x"], ["x_unused"], name="custom",
                                                  domain="com.example"))
    unknown.opset_import.append(helper.make_opsetid("com.example", 1))
    save(unknown, "unknown_operator.onnx", check=False)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    base = tiny_cnn()
    external_and_float16()
    malformed(base)
    print("wrote", sorted(os.listdir(OUT)))
