#!/usr/bin/env bash
# Fine-tuning benchmark in the form of the paper's Table 1 (release builds): the ImageNet MobileNetV2
# fine-tuned on Fashion-MNIST with a new 10-class head, training the last K convolutions (groups 1)
# plus the head, with full backprop, LANCE at several energies (one calibration each) and per-batch
# HOSVD. Every method uses the same seed, data subset, schedule and optimizer (SGD, lr 0.05,
# momentum 0.9, weight decay 1e-4, cosine; lance-train's defaults). Prints a Markdown report on
# stdout; progress and the tools' output go to stderr.
#
#   bash Benchmarks/finetune.sh
#
# Settings (environment variables, defaults in brackets):
#   LANCE_SHARED               models directory parent [../shared]
#   LANCE_FT_DATA              Fashion-MNIST directory [/usr/share/datasets/fashion-mnist]
#   LANCE_FT_MODEL             the model [$LANCE_SHARED/models/mobilenet_v2_imagenet.onnx]
#   LANCE_FT_INPUT_SIZE        input resolution H,W [96,96]
#   LANCE_FT_BATCH             batch size (calibration = training) [32]
#   LANCE_FT_LIMIT             training samples per epoch; also caps the test subset [4096]
#   LANCE_FT_EPOCHS            epochs [3]
#   LANCE_FT_CALIBRATION       calibration batches [100]
#   LANCE_FT_LAYERS            values of K in last:K [2 4]
#   LANCE_FT_ENERGIES          LANCE energies [0.5 0.7 0.9]
#   LANCE_FT_HOSVD_ENERGIES    per-batch HOSVD energies [0.7]
#   LANCE_FT_METHODS           which methods to run [full lance hosvd]
#   LANCE_FT_SEED              seed of calibration shuffle, head and epoch shuffles [0]
#   LANCE_FT_TRAIN_ARGS        further lance-train options for every run, e.g. --cache-features [none]
#   LANCE_FT_CONVERT_ARGS      further lance-convert options for every calibration, e.g. --flip [none]
#   LANCE_FT_BUILD             0: use the release tools already built instead of building them [1]
#   LANCE_FT_KEEP              1: keep the work directory (containers and logs) and print its path [0]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${LANCE_SHARED:-$(cd "$root/.." && pwd)/shared}"
model="${LANCE_FT_MODEL:-$shared/models/mobilenet_v2_imagenet.onnx}"
data="${LANCE_FT_DATA:-/usr/share/datasets/fashion-mnist}"
train_data="$data/train-images-idx3-ubyte.gz"
test_data="$data/t10k-images-idx3-ubyte.gz"
size="${LANCE_FT_INPUT_SIZE:-96,96}"
batch="${LANCE_FT_BATCH:-32}"
limit="${LANCE_FT_LIMIT:-4096}"
epochs="${LANCE_FT_EPOCHS:-3}"
calibration="${LANCE_FT_CALIBRATION:-100}"
layers="${LANCE_FT_LAYERS:-2 4}"
energies="${LANCE_FT_ENERGIES:-0.5 0.7 0.9}"
hosvd_energies="${LANCE_FT_HOSVD_ENERGIES:-0.7}"
methods="${LANCE_FT_METHODS:-full lance hosvd}"
seed="${LANCE_FT_SEED:-0}"
read -r -a extra <<<"${LANCE_FT_TRAIN_ARGS:-}"
read -r -a convert_extra <<<"${LANCE_FT_CONVERT_ARGS:-}"
[ -f "$model" ] || { echo "finetune.sh: $model is missing (set LANCE_SHARED)" >&2; exit 1; }
for file in "$train_data" "$test_data"; do
    [ -f "$file" ] || { echo "finetune.sh: $file is missing (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "finetune.sh: needs jq" >&2; exit 1; }

if [ "${LANCE_FT_BUILD:-1}" = 1 ]; then
    echo "== building (release)" >&2
    for product in lance-convert lance-train lance-inspect; do
        swift build -c release --package-path "$root" --product "$product" >&2
    done
fi
release="$(swift build -c release --package-path "$root" --show-bin-path)"
work="$(mktemp -d)"
if [ "${LANCE_FT_KEEP:-0}" = 1 ]; then
    echo "== work directory: $work" >&2
else
    trap 'rm -rf "$work"' EXIT
fi
# A snapshot of the tools, so that a rebuild during the run cannot change them half-way.
bin="$work/bin"
mkdir -p "$bin"
for product in lance-convert lance-train lance-inspect; do
    [ -x "$release/$product" ] || { echo "finetune.sh: $release/$product is missing (build it, or leave LANCE_FT_BUILD at 1)" >&2; exit 1; }
    cp "$release/$product" "$bin/"
done

preprocessing=(--preprocessing imagenet --resize direct --input-size "$size")
rows="$work/rows.md"
: >"$rows"
start=$(date +%s)

# One training run: $1 label, $2 method, $3 energy, $4 K, $5 container, further arguments for lance-train.
train() {
    local label="$1" method="$2" energy="$3" k="$4" container="$5"
    shift 5
    local out="$work/$label.trained.lance" log="$work/$label.log" t0 t1
    echo "== lance-train $label" >&2
    t0=$(date +%s.%N)
    if ! "$bin/lance-train" "$container" -o "$out" --method "$method" --data "$train_data" --eval-data "$test_data" \
        --classes 10 --epochs "$epochs" --limit "$limit" --seed "$seed" "$@" ${extra[@]+"${extra[@]}"} >"$log" 2>&1; then
        echo "finetune.sh: lance-train $label failed:" >&2
        tail -n 5 "$log" >&2
        echo "| $method | $energy | last $k + head | failed (see log) | | | | | | | | |" >>"$rows"
        return 0
    fi
    t1=$(date +%s.%N)
    tail -n 1 "$log" >&2
    # Metrics of every epoch from the container; ranks from the calibration record (LANCE only).
    "$bin/lance-inspect" "$out" --json >"$work/$label.json"
    jq -r --arg method "$method" --arg energy "$energy" --arg k "$k" --argjson batch "$batch" \
          --argjson headMiB "$head_mib" --argjson convFullMiB "$conv_full_mib" \
          --arg seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" '
        .container.metrics as $m
        | [$m | keys[] | select(endswith("/eval_accuracy")) | sub("/eval_accuracy$"; "")] as $epochs
        | ($epochs | max_by($m[. + "/eval_accuracy"])) as $best
        | ([$epochs[] | $m[. + "/images_per_second"]] | add / length) as $ips
        | ([$epochs[] | $m[. + "/peak_resident_mib"]] | max) as $rss
        | (if $method == "lance" then
              [.training.layers[] | select(.isHead | not) | "[" + ([.modes[].rank | tostring] | join(",")) + "]"] | join(" ")
           elif $method == "hosvd" then "per batch" else "–" end) as $ranks
        | ($m[$best + "/backward_bytes_trained_layers"] / 1048576) as $trained
        | ($trained - $headMiB) as $conv
        | "| \($method) | \(if $method == "full" then "–" else $energy end) | last \($k) + head"
          + " | \($m[$best + "/eval_accuracy"] * 1000 | round / 10) (\($best | sub("epoch "; "")))"
          + " | \($conv * 1000 | round / 1000)"
          + " | \($convFullMiB / $conv * 10 | round / 10)×"
          + " | \($trained * 1000 | round / 1000)"
          + " | \($m[$best + "/backward_bytes_other"] / 1048576 * 1000 | round / 1000)"
          + " | \(1000 * $batch / $ips * 10 | round / 10)"
          + " | \($rss | round)"
          + " | \($seconds | tonumber | round)"
          + " | \($ranks) |"' "$work/$label.json" >>"$rows"
}

for k in $layers; do
    base="$work/base.lance"
    "$bin/lance-convert" "$model" -o "$base" "${preprocessing[@]}" >/dev/null
    # Full-backprop figures of the trained layers at this shape (the head's input is never compressed).
    "$bin/lance-inspect" "$base" --json --train-layers "last:$k" --batch-size "$batch" >"$work/shapes_k$k.json"
    head_mib="$(jq '[.training.layers[] | select(.isHead) | .fullMiB] | add // 0' "$work/shapes_k$k.json")"
    conv_full_mib="$(jq '.training.convolutionFullMiB' "$work/shapes_k$k.json")"
    for method in $methods; do
        case "$method" in
        full)
            train "full_k$k" full - "$k" "$base" --train-layers "last:$k" --batch-size "$batch"
            ;;
        lance)
            for energy in $energies; do
                calibrated="$work/lance_k${k}_e$energy.lance"
                echo "== lance-convert last:$k energy $energy" >&2
                "$bin/lance-convert" "$model" -o "$calibrated" "${preprocessing[@]}" --calibration "$train_data" \
                    --energy "$energy" --train-layers "last:$k" --batch-size "$batch" --calibration-batches "$calibration" \
                    --seed "$seed" ${convert_extra[@]+"${convert_extra[@]}"} >"$work/lance_k${k}_e$energy.convert.log" 2>&1 \
                    || { tail -n 5 "$work/lance_k${k}_e$energy.convert.log" >&2; exit 1; }
                grep -E '^(totals|calibration)' "$work/lance_k${k}_e$energy.convert.log" >&2
                train "lance_k${k}_e$energy" lance "$energy" "$k" "$calibrated"
            done
            ;;
        hosvd)
            for energy in $hosvd_energies; do
                train "hosvd_k${k}_e$energy" hosvd "$energy" "$k" "$base" --train-layers "last:$k" --batch-size "$batch" \
                    --energy "$energy"
            done
            ;;
        *) echo "finetune.sh: unknown method $method" >&2; exit 64 ;;
        esac
    done
done

cat <<EOF
## Fine-tuning MobileNetV2 (ImageNet) on Fashion-MNIST

Input ${size/,/×}, batch $batch, $limit training images per epoch (first $limit test images for evaluation),
$epochs epochs, SGD lr 0.05 momentum 0.9 weight decay 1e-4 cosine, new 10-class head, seed $seed, model $(basename "$model"),
$calibration calibration batches of $batch${convert_extra[@]+, further lance-convert options: ${convert_extra[*]}}${extra[@]+, further lance-train options: ${extra[*]}}. Total wall time $(( $(date +%s) - start )) s.

Activation memory per step, float32 MiB, measured by lance-train from the tensors it saves: "conv inputs"
is the paper's convention (what the trained convolutions keep for their weight gradients: the inputs
under full backprop, core plus factors under LANCE and HOSVD); "+ head" adds the classifier's input,
which every method keeps uncompressed (lance-train's "trained layers' inputs"); "other" is the rest
saved for backward (activation masks, ...). The ratio is full backprop's conv inputs over the row's.

| method | energy | trained layers | test acc. % (best epoch) | conv inputs (MiB) | vs full | + head (MiB) | other saved (MiB) | ms / step | peak RSS (MiB) | run (s) | ranks of the trained convs (modes B,C,H,W) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
cat "$rows"
