#!/usr/bin/env python3
"""Continual-learning protocol (method section 5): Split Fashion-MNIST added task by task to the
ImageNet MobileNetV2, with LANCE (orthogonal task subspaces), naive sequential fine-tuning and GPM,
all through the release command-line tools. Prints a Markdown report on stdout (the accuracy matrix,
ACC and BWT as GPM defines them, training-time memory, and how much the original ImageNet model's
outputs on ../shared/data/imagenet20 changed); the tools' output goes to stderr.

    python3 Benchmarks/continual.py [--methods lance naive gpm] [--epochs 2] [--limit 1024] ...

Protocol, the same for every method:
  1. lance-convert: the model, last:K convolutions shared (plus the head), protected bases of task 0
     (the ImageNet classifier itself) from the 20 ImageNet images of ../shared/data/imagenet20
     (their feature Gram matrices; --protect-energy); then Fashion-MNIST's preprocessing (grey to
     RGB, direct resize to 224x224, ImageNet mean/std).
  2. For t = 1..5: lance-train --add-task fmnist-t --classes 2 --select-classes 2t-2,2t-1 on the
     first --limit shuffled training images of the two classes, SGD without momentum and weight
     decay; after each task every task so far is evaluated on the first --test-limit test images of
     its classes (lance-eval --task), and task 0 on imagenet20 (lance-eval --task, raw outputs).

Only the Python standard library is needed.
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def run(tools, name, arguments):
    command = [os.path.join(tools, name)] + [str(a) for a in arguments]
    log("$", " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(command)))
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(result.stderr[-2000:])
    if result.returncode != 0:
        log(result.stdout)
        raise SystemExit(f"{name} failed with exit code {result.returncode}")
    return result.stdout


def read_npy(path):
    """A float32 little-endian C-order .npy array as (shape, flat list)."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:6] != b"\x93NUMPY":
        raise SystemExit(f"{path}: not a .npy file")
    header_length = struct.unpack("<H", data[8:10])[0] if data[6] == 1 else struct.unpack("<I", data[8:12])[0]
    start = 10 if data[6] == 1 else 12
    header = data[start:start + header_length].decode("latin1")
    if "'<f4'" not in header or "True" in header.split("fortran_order")[1][:8]:
        raise SystemExit(f"{path}: expected float32, C order")
    shape = tuple(int(v) for v in re.search(r"\(([^)]*)\)", header).group(1).split(",") if v.strip())
    count = 1
    for extent in shape:
        count *= extent
    values = struct.unpack(f"<{count}f", data[start + header_length:start + header_length + 4 * count])
    return shape, values


def accuracy(output):
    match = re.search(r"top-1 (\d+)/(\d+)", output)
    if not match:
        raise SystemExit(f"no accuracy in lance-eval's output:\n{output}")
    return 100.0 * int(match.group(1)) / int(match.group(2))


def compare_reference(reference, outputs):
    """Max |Δ|, and top-1 agreement where the reference's top-2 margin exceeds 0.5."""
    (rows, classes), ref = reference
    _, out = outputs
    max_delta = max(abs(a - b) for a, b in zip(ref, out))
    confident = same = same_all = 0
    for row in range(rows):
        r = ref[row * classes:(row + 1) * classes]
        o = out[row * classes:(row + 1) * classes]
        ordered = sorted(r, reverse=True)
        top_ref = r.index(ordered[0])
        top_out = o.index(max(o))
        same_all += top_ref == top_out
        if ordered[0] - ordered[1] > 0.5:
            confident += 1
            same += top_ref == top_out
    return max_delta, same, confident, same_all, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["lance", "naive", "gpm"], choices=["lance", "naive", "gpm"])
    parser.add_argument("--tasks", type=int, default=5, help="Split Fashion-MNIST tasks of two classes [5]")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=1024, help="training images per task and epoch [1024]")
    parser.add_argument("--test-limit", type=int, default=1000, help="test images per task [1000]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--layers", default="last:2", help="shared layers [last:2]")
    parser.add_argument("--protect-energy", type=float, default=0.97)
    parser.add_argument("--energy", type=float, default=0.95, help="LANCE batch and position modes [0.95]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", default=os.environ.get("LANCE_SHARED", os.path.join(os.path.dirname(ROOT), "shared")))
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--no-build", action="store_true", help="use the release tools already built")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    model = os.path.join(args.shared, "models", "mobilenet_v2_imagenet.onnx")
    images = os.path.join(args.shared, "data", "imagenet20", "images.npy")
    reference_path = os.path.join(args.shared, "data", "imagenet20", "logits_ref.npy")
    train = os.path.join(args.data, "train-images-idx3-ubyte.gz")
    test = os.path.join(args.data, "t10k-images-idx3-ubyte.gz")
    for path in (model, images, reference_path, train, test):
        if not os.path.exists(path):
            raise SystemExit(f"continual.py: {path} is missing (set --shared, or apt-get install dataset-fashion-mnist)")
    if not args.no_build:
        for product in ("lance-convert", "lance-train", "lance-eval", "lance-inspect"):
            subprocess.run(["swift", "build", "-c", "release", "--package-path", ROOT, "--product", product],
                           check=True, stdout=sys.stderr)
    tools = subprocess.run(["swift", "build", "-c", "release", "--package-path", ROOT, "--show-bin-path"],
                           check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    work = tempfile.mkdtemp(prefix="lance-continual-")
    log("== work directory:", work)
    reference = read_npy(reference_path)
    started = time.time()

    base0 = os.path.join(work, "base0.lance")
    base = os.path.join(work, "base.lance")
    run(tools, "lance-convert", [model, "-o", base0, "--calibration", images, "--batch-size", 20, "--calibration-batches", 1,
                                 "--train-layers", args.layers, "--protect", "--protect-batches", 1,
                                 "--protect-energy", args.protect_energy, "--task-name", "imagenet"])
    run(tools, "lance-convert", [base0, "-o", base, "--preprocessing", "imagenet", "--resize", "direct"])
    base_outputs = os.path.join(work, "base-imagenet.npy")
    run(tools, "lance-eval", [base, "--data", images, "--dump-outputs", base_outputs])
    base_delta = compare_reference(reference, read_npy(base_outputs))
    task0 = json.loads(run(tools, "lance-inspect", [base, "--tasks", "--json"]))

    results = {}
    for method in args.methods:
        container = os.path.join(work, f"{method}.lance")
        current = base
        matrix = []
        imagenet = []
        memory = []
        seconds = 0.0
        for task in range(1, args.tasks + 1):
            classes = f"{2 * task - 2},{2 * task - 1}"
            begin = time.time()
            run(tools, "lance-train", [current, "-o", container, "--add-task", f"fmnist-{task}", "--method", method,
                                       "--classes", 2, "--select-classes", classes, "--data", train, "--limit", args.limit,
                                       "--batch-size", args.batch_size, "--epochs", args.epochs, "--lr", args.lr,
                                       "--energy", args.energy, "--seed", args.seed + task])
            seconds += time.time() - begin
            current = container
            row = []
            for earlier in range(1, task + 1):
                output = run(tools, "lance-eval", [container, "--task", f"fmnist-{earlier}", "--data", test,
                                                   "--select-classes", f"{2 * earlier - 2},{2 * earlier - 1}",
                                                   "--limit", args.test_limit, "--batch-size", 100])
                row.append(accuracy(output))
            matrix.append(row)
            outputs = os.path.join(work, f"{method}-{task}-imagenet.npy")
            run(tools, "lance-eval", [container, "--task", "imagenet", "--data", images, "--dump-outputs", outputs])
            imagenet.append(compare_reference(reference, read_npy(outputs)))
            report = json.loads(run(tools, "lance-inspect", [container, "--tasks", "--json"]))
            metrics = report["tasks"][-1]["metrics"]
            memory.append(metrics)
            log(f"== {method} after task {task}: accuracies {row}")
        results[method] = {"matrix": matrix, "imagenet": imagenet, "memory": memory, "seconds": seconds,
                           "room": json.loads(run(tools, "lance-inspect", [container, "--tasks", "--json"]))["layers"]}

    # Report.
    tasks = args.tasks
    print(f"Protocol: `python3 Benchmarks/continual.py {' '.join(sys.argv[1:])}` "
          f"({time.time() - started:.0f} s of wall time). Shared layers {args.layers} of MobileNetV2 at 224x224, "
          f"{args.limit} training images per task, {args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr} "
          f"without momentum or weight decay, protect energy {args.protect_energy}, LANCE mode energy {args.energy}, "
          f"{args.test_limit} test images per task.\n")
    print("Task 0 (ImageNet, imagenet20) protected directions per shared layer: "
          + ", ".join(f"`{layer['layer']}` {layer['protected']}/{layer['features']}" for layer in task0["layers"]) + "\n")
    print("| method | ACC % | BWT (points) | imagenet20: top-1 unchanged where margin > 0.5 | imagenet20: top-1 unchanged (all) | imagenet20: max abs change of the logits | held for backward, trained layers (MiB) | projection matrices (MiB) | total (MiB) | peak RSS (MiB) | training time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for method, result in results.items():
        final = result["matrix"][-1]
        acc = sum(final) / len(final)
        bwt = sum(final[i] - result["matrix"][i][i] for i in range(tasks - 1)) / max(tasks - 1, 1)
        delta, same, confident, same_all, rows = result["imagenet"][-1]
        held = max(m["backward_bytes_trained_layers"] for m in result["memory"]) / 2**20
        projection = max(m["projection_bytes"] for m in result["memory"]) / 2**20
        peak = max(m["peak_resident_mib"] for m in result["memory"])
        summary[method] = held + projection
        print(f"| {method} | {acc:.2f} | {bwt:+.2f} | {same}/{confident} | {same_all}/{rows} | {delta:.2e} | {held:.3f} | "
              f"{projection:.3f} | {held + projection:.3f} | {peak:.0f} | {result['seconds']:.0f} |")
    if "lance" in summary and "gpm" in summary:
        print(f"\nTraining-time memory (activations held plus projection matrices): GPM / LANCE = "
              f"{summary['gpm'] / max(summary['lance'], 1e-12):.1f}x.")
    print(f"\nThe untouched container against `logits_ref.npy`: max abs difference {base_delta[0]:.2e}, "
          f"top-1 equal on {base_delta[3]}/{base_delta[4]}.")
    for method, result in results.items():
        print(f"\n**{method}**: test accuracy (%) of task i (columns) after learning task t (rows)\n")
        print("| after task | " + " | ".join(f"fmnist-{i}" for i in range(1, tasks + 1)) + " |")
        print("| --- |" + " --- |" * tasks)
        for t, row in enumerate(result["matrix"], start=1):
            cells = [f"{v:.1f}" for v in row] + [""] * (tasks - len(row))
            print(f"| {t} | " + " | ".join(cells) + " |")
        changes = ", ".join(f"{d:.1e}" for d, *_ in result["imagenet"])
        print(f"\nimagenet20 max abs logit change after each task: {changes}")
        room = ", ".join(f"`{layer['layer']}` {layer['protected']}/{layer['features']}" for layer in result["room"])
        print(f"Protected directions at the end: {room}")
    if not args.keep:
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
