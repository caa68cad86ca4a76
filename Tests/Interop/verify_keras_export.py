"""Checks exported Keras and ONNX files with Keras 3 and ONNX Runtime against lance-eval.

Run by verify_keras_export.sh (which builds the tools, prepares a virtual environment and sets
KERAS_BACKEND=jax). Arguments: BIN_DIR SHARED_DIR WORK_DIR. Prints one line per check and a
closing 'N passed, M failed' line; exits non-zero when a check fails.
"""
import os
import subprocess
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

bin_dir, shared, work = sys.argv[1:4]
results = []
conformance = os.environ.get("LANCE_ONNX_TESTDATA", "/usr/share/libonnx-testdata/data/node")


def tool(name, *arguments, expect_failure=False):
    completed = subprocess.run([os.path.join(bin_dir, name), *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not expect_failure and completed.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(arguments)} exited {completed.returncode}: {completed.stderr.strip()}")
    return completed


def check(name, condition, detail):
    results.append(bool(condition))
    print(f"{'ok  ' if condition else 'FAIL'} {name}: {detail}")


def path(name):
    return os.path.join(work, name)


def ort_outputs(model, images):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def keras_outputs(model, images_nhwc):
    return np.asarray(keras.models.load_model(model, compile=False).predict(images_nhwc, verbose=0))


def compare(name, actual, expected, tolerance=1e-4):
    same_shape = actual.shape == expected.shape
    difference = float(np.abs(actual - expected).max()) if same_shape else float("inf")
    check(name, same_shape and difference <= tolerance, f"max |Δ| {difference:.2e}" if same_shape else f"shape {actual.shape} != {expected.shape}")


print(f"Keras {keras.__version__} ({keras.backend.backend()} backend), ONNX Runtime {ort.__version__}")

# The pretrained Keras 2.9 CIFAR-10 CNN: .h5 → container → .h5, .keras and .onnx.
cifar_images = np.load(f"{shared}/data/cifar10-20/images_nhwc.npy").astype(np.float32)
cifar_reference = np.load(f"{shared}/data/cifar10-20/logits_ref.npy")
tool("lance-convert", f"{shared}/models/cifar10_cnn.h5", "-o", path("cifar.lance"))
tool("lance-eval", path("cifar.lance"), "--data", f"{shared}/data/cifar10-20/images_nhwc.npy", "--input-layout", "nhwc",
     "--dump-outputs", path("cifar_lance.npy"))
cifar_lance = np.load(path("cifar_lance.npy"))
for extension in ["h5", "keras"]:
    exported = path(f"cifar.{extension}")
    tool("lance-export", path("cifar.lance"), "-o", exported)
    outputs = keras_outputs(exported, cifar_images)
    compare(f"CIFAR-10 CNN .{extension}: Keras load_model + predict vs lance-eval on the container", outputs, cifar_lance)
    compare(f"CIFAR-10 CNN .{extension}: Keras vs the reference outputs", outputs, cifar_reference, 1e-3)
    check(f"CIFAR-10 CNN .{extension}: same top-1 as the reference", (outputs.argmax(1) == cifar_reference.argmax(1)).all(),
          f"{int((outputs.argmax(1) == cifar_reference.argmax(1)).sum())}/{len(cifar_reference)}")
tool("lance-export", path("cifar.lance"), "-o", path("cifar.onnx"))
cifar_nchw = np.ascontiguousarray(cifar_images.transpose(0, 3, 1, 2))
compare("CIFAR-10 CNN .onnx: ONNX Runtime vs lance-eval on the container", ort_outputs(path("cifar.onnx"), cifar_nchw), cifar_lance)
before = os.path.getmtime(path("cifar.keras"))
refused = tool("lance-export", path("cifar.lance"), "-o", path("cifar.keras"), expect_failure=True)
check("an existing .keras is not replaced without --force", refused.returncode == 1 and "--force" in refused.stderr
      and os.path.getmtime(path("cifar.keras")) == before, f"exit {refused.returncode}")

# External data, forced on the small model: ONNX Runtime reads OUT.onnx.data.
tool("lance-export", path("cifar.lance"), "-o", path("external.onnx"), "--external-data-threshold", "0")
proto = onnx.load(path("external.onnx"), load_external_data=False)
external = all(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
               and len(t.dims) > 0)
onnx.checker.check_model(path("external.onnx"))
check("external data: every weight in external.onnx.data", external and os.path.exists(path("external.onnx.data")),
      f"model {os.path.getsize(path('external.onnx'))} B, data {os.path.getsize(path('external.onnx.data'))} B")
compare("external data: ONNX Runtime vs lance-eval", ort_outputs(path("external.onnx"), cifar_nchw), cifar_lance)

# MobileNetV2 from ONNX with BatchNormalization: folded, other opsets, and as a Keras model.
mobilenet = f"{shared}/models/mobilenet_v2_imagenet_bn.onnx"
imagenet = np.load(f"{shared}/data/imagenet20/images.npy")[:4]
np.save(path("imagenet4.npy"), imagenet)
tool("lance-eval", mobilenet, "--data", path("imagenet4.npy"), "--dump-outputs", path("mobilenet_lance.npy"))
mobilenet_lance = np.load(path("mobilenet_lance.npy"))
tool("lance-export", mobilenet, "-o", path("folded.onnx"), "--fold-batchnorm")
folded = onnx.load(path("folded.onnx"))
batch_norms = sum(node.op_type == "BatchNormalization" for node in folded.graph.node)
check("--fold-batchnorm: no BatchNormalization left", batch_norms == 0, f"{batch_norms} left")
compare("--fold-batchnorm: ONNX Runtime on the folded model vs lance-eval with BatchNormalization", ort_outputs(path("folded.onnx"), imagenet),
        mobilenet_lance)
for opset in [11, 18]:
    exported = path(f"opset{opset}.onnx")
    tool("lance-export", mobilenet, "-o", exported, "--opset", str(opset))
    written = onnx.load(exported)
    onnx.checker.check_model(written)
    check(f"--opset {opset}: declared", written.opset_import[0].version == opset, f"opset {written.opset_import[0].version}")
    compare(f"--opset {opset}: ONNX Runtime vs lance-eval", ort_outputs(exported, imagenet), mobilenet_lance)
tool("lance-export", mobilenet, "-o", path("mobilenet.keras"))
compare("MobileNetV2 from ONNX as .keras: Keras vs lance-eval", keras_outputs(path("mobilenet.keras"), imagenet.transpose(0, 2, 3, 1)),
        mobilenet_lance)

# A model with a node Keras cannot express: nothing is written, the node is named.
dilated = f"{conformance}/test_maxpool_2d_dilations/model.onnx"
if os.path.exists(dilated):
    failed = tool("lance-export", dilated, "-o", path("dilated.keras"), expect_failure=True)
    check("unsupported node: exit 1, a table naming it, no file", failed.returncode == 1 and "op      | count | nodes" in failed.stderr
          and "MaxPool_0" in failed.stderr and not os.path.exists(path("dilated.keras")), f"exit {failed.returncode}")
else:
    print(f"skipped the unsupported-node case: {dilated} is missing (apt-get install libonnx-testdata)")

failed = results.count(False)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
