#!/usr/bin/env bash
# The LANCE demo: installs the system packages, builds the tools in release mode, inspects the
# pretrained MobileNetV2, classifies 20 real ImageNet images with it, converts it to a .lance
# container calibrated on Fashion-MNIST (LANCE projection bases for the last 4 convolutions and the
# head), shows the bases and the activation memory they save, fine-tunes it on Fashion-MNIST with a
# new head, exports it to ONNX, adds a Fashion-MNIST task to the ImageNet classifier without changing
# what it does on ImageNet, and runs and exports the Keras CIFAR-10 model.
# Model and data: ../shared next to the project (or $LANCE_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${LANCE_SHARED:-$(cd .. && pwd)/shared}"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    packages=(pkg-config libopenblas-dev liblapacke-dev libhdf5-dev libprotobuf-c-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev
              dataset-fashion-mnist)
    missing=()
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

swift build -c release --product lance-inspect
swift build -c release --product lance-eval
swift build -c release --product lance-convert
swift build -c release --product lance-train
swift build -c release --product lance-export
bin="$(swift build -c release --show-bin-path)"

model="$shared/models/mobilenet_v2_imagenet.onnx"
data="$shared/data/imagenet20"
if [ ! -f "$model" ]; then
    echo "demo: $model is missing; put the shared models next to the project or set LANCE_SHARED" >&2
    exit 1
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== lance-inspect (first and last layers)"
"$bin/lance-inspect" "$model" | sed -n '1,12p'
echo "..."
"$bin/lance-inspect" "$model" | tail -n 4

echo
echo "== lance-eval on 20 ImageNet validation images"
"$bin/lance-eval" "$model" --data "$data/images.npy" --labels "$data/labels.npy" \
    --dump-outputs "$out/logits.npy" --batch-size 10

fashion=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ -f "$fashion" ]; then
    echo
    echo "== lance-convert: calibrate LANCE bases on Fashion-MNIST (8 batches of 32, grey to RGB, 224x224)"
    "$bin/lance-convert" "$model" -o "$out/mobilenet_v2.lance" --calibration "$fashion" --preprocessing imagenet \
        --resize direct --train-layers last:4 --batch-size 32 --calibration-batches 8
    echo
    echo "== lance-inspect of the container (bases of the head)"
    "$bin/lance-inspect" "$out/mobilenet_v2.lance" --bases | tail -n 6
    echo
    echo "== lance-eval on the container (still the ImageNet model)"
    "$bin/lance-eval" "$out/mobilenet_v2.lance" --data "$data/images.npy" --labels "$data/labels.npy" | tail -n 1
    echo
    echo "== lance-train: fine-tune those layers and a new 10-class head on Fashion-MNIST (LANCE, 1 epoch, 1024 images)"
    "$bin/lance-train" "$out/mobilenet_v2.lance" --data "$fashion" \
        --eval-data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --classes 10 --epochs 1 --limit 1024
    echo
    echo "== lance-export: the fine-tuned model as ONNX"
    "$bin/lance-export" "$out/mobilenet_v2.lance" -o "$out/mobilenet_v2_fashion.onnx"

    echo
    echo "== continual learning: protect the ImageNet classifier's subspace (from the 20 images), then add a task"
    "$bin/lance-convert" "$model" -o "$out/tasks0.lance" --calibration "$data/images.npy" --batch-size 20 \
        --calibration-batches 1 --train-layers last:2 --protect --protect-batches 1 --task-name imagenet | tail -n 2
    "$bin/lance-convert" "$out/tasks0.lance" -o "$out/tasks.lance" --preprocessing imagenet --resize direct
    "$bin/lance-train" "$out/tasks.lance" --add-task tshirt-trouser --classes 2 --select-classes 0,1 \
        --class-names t-shirt,trouser --data "$fashion" --limit 256 --epochs 1 --batch-size 32 2>/dev/null
    "$bin/lance-inspect" "$out/tasks.lance" --tasks
    echo "ImageNet task after adding it:"
    "$bin/lance-eval" "$out/tasks.lance" --task imagenet --data "$data/images.npy" --labels "$data/labels.npy" | tail -n 1
else
    echo "demo: $fashion is missing (apt-get install dataset-fashion-mnist); skipping calibration" >&2
fi

echo
echo "== the Keras 2.9 CIFAR-10 CNN on 20 CIFAR-10 test images (NHWC data, as Keras users have it)"
"$bin/lance-inspect" "$shared/models/cifar10_cnn.h5" | tail -n 1
"$bin/lance-eval" "$shared/models/cifar10_cnn.h5" --data "$shared/data/cifar10-20/images_nhwc.npy" \
    --input-layout nhwc --labels "$shared/data/cifar10-20/labels.npy"
"$bin/lance-export" "$shared/models/cifar10_cnn.h5" -o "$out/cifar10_cnn.keras"
