"""Checks exported ONNX files with ONNX Runtime against LANCE's own outputs and the references.

Run by verify_onnx_export.sh (which builds the tools and prepares a virtual environment).
Arguments: BIN_DIR SHARED_DIR WORK_DIR. Prints one line per check and a closing
'N passed, M failed' line; exits non-zero when a check fails.
"""
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

bin_dir, shared, work = sys.argv[1:4]
results = []


def tool(name, *arguments):
    subprocess.run([os.path.join(bin_dir, name), *arguments], check=True, stdout=subprocess.DEVNULL)


def check(name, condition, detail):
    results.append(condition)
    print(f"{'ok  ' if condition else 'FAIL'} {name}: {detail}")


def ort_outputs(path, images):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


cases = [
    ("MobileNetV2 (BatchNormalization kept)", f"{shared}/models/mobilenet_v2_imagenet_bn.onnx",
     f"{shared}/data/imagenet20/images.npy", f"{shared}/data/imagenet20/logits_ref.npy", "nchw", 1e-3),
    ("MobileNetV2 (folded)", f"{shared}/models/mobilenet_v2_imagenet.onnx",
     f"{shared}/data/imagenet20/images.npy", f"{shared}/data/imagenet20/logits_ref.npy", "nchw", 1e-3),
    ("CIFAR-10 CNN (Keras 2.9 .h5)", f"{shared}/models/cifar10_cnn.h5",
     f"{shared}/data/cifar10-20/images_nhwc.npy", f"{shared}/data/cifar10-20/logits_ref.npy", "nhwc", 1e-3),
]
for index, (name, model, data, reference, layout, reference_tolerance) in enumerate(cases):
    container = os.path.join(work, f"model{index}.lance")
    exported = os.path.join(work, f"model{index}.onnx")
    lance_outputs = os.path.join(work, f"lance{index}.npy")
    tool("lance-convert", model, "-o", container)
    tool("lance-export", container, "-o", exported, "--force")
    tool("lance-eval", container, "--data", data, "--input-layout", layout, "--dump-outputs", lance_outputs)
    onnx.checker.check_model(onnx.load(exported))
    images = np.load(data).astype(np.float32)
    if layout == "nhwc":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    runtime = ort_outputs(exported, images)
    ours = np.load(lance_outputs)
    expected = np.load(reference)
    difference = float(np.abs(runtime - ours).max())
    check(f"{name}: ONNX Runtime on the export vs lance-eval on the container", difference <= 1e-4, f"max |Δ| {difference:.2e}")
    difference = float(np.abs(runtime - expected).max())
    check(f"{name}: export vs the reference outputs", difference <= reference_tolerance, f"max |Δ| {difference:.2e}")
    same_top1 = bool((runtime.argmax(1) == expected.argmax(1)).all())
    check(f"{name}: same top-1 as the reference", same_top1, f"{int((runtime.argmax(1) == expected.argmax(1)).sum())}/{len(expected)}")

# After a short LANCE fine-tune with a new 10-class head: the export still agrees with lance-eval.
fashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
if os.path.exists(fashion):
    container = os.path.join(work, "tuned.lance")
    exported = os.path.join(work, "tuned.onnx")
    lance_outputs = os.path.join(work, "tuned.npy")
    tool("lance-convert", f"{shared}/models/mobilenet_v2_imagenet.onnx", "-o", container, "--calibration", fashion,
         "--preprocessing", "imagenet", "--resize", "direct", "--train-layers", "last:2", "--batch-size", "4",
         "--calibration-batches", "2")
    tool("lance-train", container, "--data", fashion, "--classes", "10", "--epochs", "1", "--limit", "16")
    tool("lance-export", container, "-o", exported)
    tool("lance-eval", container, "--data", f"{shared}/data/imagenet20/images.npy", "--dump-outputs", lance_outputs)
    runtime = ort_outputs(exported, np.load(f"{shared}/data/imagenet20/images.npy"))
    ours = np.load(lance_outputs)
    difference = float(np.abs(runtime - ours).max())
    check("MobileNetV2 after a LANCE fine-tune with a 10-class head: ONNX Runtime vs lance-eval",
          runtime.shape == (20, 10) and difference <= 1e-4, f"shape {runtime.shape}, max |Δ| {difference:.2e}")
else:
    print(f"skipped the fine-tuned case: {fashion} is missing (apt-get install dataset-fashion-mnist)")

failed = results.count(False)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
