#!/usr/bin/env bash
# Container and calibration benchmark (release builds): MobileNetV2 conversion time without
# calibration, container read time (memory mapped, checksums verified) in float32 and float16,
# container sizes, and calibration throughput on Fashion-MNIST. Prints a Markdown report.
#
#   bash Benchmarks/container.sh
#
# Settings: LANCE_SHARED (default ../shared), LANCE_BENCH_ROUNDS (default 5),
# LANCE_BENCH_CALIBRATION_BATCHES (default 10, of 32 images at 224×224).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${LANCE_SHARED:-$(cd "$root/.." && pwd)/shared}"
model="$shared/models/mobilenet_v2_imagenet.onnx"
fashion="/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
rounds="${LANCE_BENCH_ROUNDS:-5}"
batches="${LANCE_BENCH_CALIBRATION_BATCHES:-10}"
[ -f "$model" ] || { echo "container.sh: $model is missing (set LANCE_SHARED)" >&2; exit 1; }
[ -f "$fashion" ] || { echo "container.sh: $fashion is missing (apt-get install dataset-fashion-mnist)" >&2; exit 1; }

echo "== building (release)" >&2
swift build -c release --package-path "$root/Benchmarks" --product lance-container-bench >&2
swift build -c release --package-path "$root" --product lance-convert >&2
bench="$(swift build -c release --package-path "$root/Benchmarks" --show-bin-path)/lance-container-bench"
convert="$(swift build -c release --package-path "$root" --show-bin-path)/lance-convert"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== container write/read, $rounds rounds" >&2
line="$("$bench" "$model" "$work" "$rounds")"
echo "$line" >&2

echo "== lance-convert without calibration, $rounds runs" >&2
times=()
for ((i = 0; i < rounds; i++)); do
    start=$(date +%s.%N)
    "$convert" "$model" -o "$work/plain.lance" >/dev/null
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc -l)")
done
convert_s="$(printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')"

echo "== calibration: $batches batches of 32 at 224×224, last:4" >&2
calibration="$("$convert" "$model" -o "$work/calibrated.lance" --calibration "$fashion" --preprocessing imagenet \
    --resize direct --train-layers last:4 --batch-size 32 --calibration-batches "$batches" 2>/dev/null | grep '^calibration:')"
echo "$calibration" >&2
with_bases="$(stat -c %s "$work/calibrated.lance")"
"$convert" "$work/calibrated.lance" -o "$work/calibrated-fp16.lance" --fp16 >/dev/null
with_bases_fp16="$(stat -c %s "$work/calibrated-fp16.lance")"

LINE="$line" CONVERT_S="$convert_s" CALIBRATION="$calibration" WITH_BASES="$with_bases" WITH_BASES_FP16="$with_bases_fp16" \
ROUNDS="$rounds" CORES="$(nproc)" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" python3 - <<'PY'
import os, re
fields = dict(pair.split("=") for pair in os.environ["LINE"].split()[1:])
mib = lambda b: int(b) / 1048576
weights = int(fields["weights_bytes"])
print(f"MobileNetV2 ({mib(weights):.2f} MiB of float32 weights), medians over {os.environ['ROUNDS']} rounds, "
      f"{os.environ['CORES']} cores, {os.environ['DATE']}:")
print()
print("| measurement | value |")
print("| --- | ---: |")
print(f"| `lance-convert` without calibration (process start to exit) | {float(os.environ['CONVERT_S']):.2f} s |")
print(f"| import + write in-process | {float(fields['import_write_ms']):.0f} ms |")
print(f"| read container, float32 (mapped, checksums verified) | {float(fields['read_ms']):.1f} ms |")
print(f"| read container, float16 storage | {float(fields['read_fp16_ms']):.1f} ms |")
print(f"| container size, float32 | {mib(fields['bytes']):.2f} MiB ({int(fields['bytes']) / weights:.4f}x the weights) |")
print(f"| container size, float16, all weights frozen | {mib(fields['bytes_fp16']):.2f} MiB ({int(fields['bytes_fp16']) / int(fields['bytes']):.3f}x float32) |")
print(f"| with last:4 bases, float32 | {mib(os.environ['WITH_BASES']):.2f} MiB |")
print(f"| with last:4 bases, float16 (trained layers stay float32) | {mib(os.environ['WITH_BASES_FP16']):.2f} MiB |")
m = re.search(r"\(([0-9.]+) images/s\)", os.environ["CALIBRATION"])
print(f"| calibration throughput (batch 32, 224×224, Fashion-MNIST) | {m.group(1) if m else '?'} images/s |")
PY
