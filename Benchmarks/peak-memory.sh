#!/usr/bin/env bash
# Peak resident memory of lance-train, LANCE against full backprop, interleaved (release builds).
# MobileNetV2 at 224×224, batch 32, the last 2 convolutions plus a new 2-class head, one epoch on
# the Fashion-MNIST samples of classes 0 and 1 (640 of them, 20 steps), no evaluation. Prints one
# line per run and the medians:
#
#   bash Benchmarks/peak-memory.sh [ROUNDS]        # ROUNDS defaults to 5
#
# Settings: LANCE_SHARED (models directory parent [../shared]), LANCE_PEAK_DATA (training data
# [/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz]), LANCE_PEAK_LAYERS [2],
# LANCE_PEAK_BUILD=0 (use the release tools already built).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${LANCE_SHARED:-$(cd "$root/.." && pwd)/shared}"
model="$shared/models/mobilenet_v2_imagenet.onnx"
data="${LANCE_PEAK_DATA:-/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz}"
layers="${LANCE_PEAK_LAYERS:-2}"
rounds="${1:-5}"
[ -f "$model" ] || { echo "peak-memory.sh: $model is missing (set LANCE_SHARED)" >&2; exit 1; }
[ -f "$data" ] || { echo "peak-memory.sh: $data is missing (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
if [ "${LANCE_PEAK_BUILD:-1}" = 1 ]; then
    for product in lance-convert lance-train; do swift build -c release --package-path "$root" --product "$product" >&2; done
fi
release="$(swift build -c release --package-path "$root" --show-bin-path)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$release/lance-convert" "$release/lance-train" "$work/"
common=(--preprocessing imagenet --resize direct)
"$work/lance-convert" "$model" -o "$work/lance.lance" "${common[@]}" --calibration "$data" --batch-size 32 \
    --calibration-batches 10 --train-layers "last:$layers" >&2
"$work/lance-convert" "$model" -o "$work/plain.lance" "${common[@]}" >&2

peaks() { grep -o 'peak resident memory [0-9.]*' | grep -o '[0-9.]*$'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: > "$work/lance.txt"; : > "$work/full.txt"
for round in $(seq "$rounds"); do
    for method in lance full; do
        if [ "$method" = lance ]; then container="$work/lance.lance"; extra=(); else
            container="$work/plain.lance"; extra=(--train-layers "last:$layers" --batch-size 32); fi
        log="$("$work/lance-train" "$container" -o "$work/out.lance" --method "$method" "${extra[@]}" --data "$data" \
            --select-classes 0,1 --classes 2 --epochs 1 --limit 640 2>&1)"
        peak="$(peaks <<<"$log")"
        held="$(grep -o 'held for backward [0-9.]* MiB' <<<"$log" | tail -1 | grep -o '[0-9.]*')"
        speed="$(grep -o '[0-9.]* images/s' <<<"$log" | tail -1)"
        echo "round $round $method: peak $peak MiB, $held MiB trained layers' inputs held, $speed"
        echo "$peak" >> "$work/$method.txt"
    done
done
lance="$(median < "$work/lance.txt")"; full="$(median < "$work/full.txt")"
echo "median peak: lance $lance MiB, full $full MiB, difference $(awk -v a="$full" -v b="$lance" 'BEGIN { printf "%.1f", a - b }') MiB"
