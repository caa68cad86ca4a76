#!/usr/bin/env bash
# MobileNetV2 forward-pass throughput, LANCE against ONNX Runtime, on the same model and images.
#
#     bash Benchmarks/forward.sh
#
# Creates Benchmarks/.venv with pinned onnxruntime and numpy, builds lance-forward-bench in release
# mode (its own package, Benchmarks/.build), then for batch sizes 1 and 32 runs interleaved rounds
# (each round: one fresh process of each engine, with warm-up and timed passes; the order alternates
# between rounds: lance/ort, ort/lance, ...), and prints a Markdown table of the medians over rounds.
# Progress and every raw result line go to stderr; the report goes to stdout.
#
# Environment (all optional):
#   LANCE_SHARED          shared models and data (default: ../shared next to the project)
#   LANCE_BENCH_MODEL     ONNX model (default: $LANCE_SHARED/models/mobilenet_v2_imagenet.onnx)
#   LANCE_BENCH_DATA      float32 [N,3,224,224] .npy (default: $LANCE_SHARED/data/imagenet20/images.npy)
#   LANCE_BENCH_ROUNDS    rounds per batch size (default 7)
#   LANCE_BENCH_QUIET     a round counts as quiet when other processes used fewer cores than this
#                         while it ran (default 0.25); quiet rounds get a table of their own
#   LANCE_BENCH_SCRATCH   SwiftPM scratch path for building lance-forward-bench (default: Benchmarks/.build);
#                         give each concurrent checkout user its own so builds do not collide
#   PYTHON                interpreter used to create the virtual environment (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

shared="${LANCE_SHARED:-$(cd .. && pwd)/shared}"
model="${LANCE_BENCH_MODEL:-$shared/models/mobilenet_v2_imagenet.onnx}"
data="${LANCE_BENCH_DATA:-$shared/data/imagenet20/images.npy}"
rounds="${LANCE_BENCH_ROUNDS:-7}"
quiet="${LANCE_BENCH_QUIET:-0.25}"
# batch:warm-up:timed iterations
configs=("1:5:20" "32:2:5")

for file in "$model" "$data"; do
    if [ ! -f "$file" ]; then
        echo "forward.sh: $file is missing; put the shared models next to the project or set LANCE_SHARED," \
             "LANCE_BENCH_MODEL or LANCE_BENCH_DATA" >&2
        exit 1
    fi
done
model="$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"
data="$(cd "$(dirname "$data")" && pwd)/$(basename "$data")"

# System libraries the package links (as in Samples/demo.sh).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    packages=(pkg-config libopenblas-dev liblapacke-dev libhdf5-dev libprotobuf-c-dev)
    missing=()
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

# ONNX Runtime in a virtual environment of its own.
venv="$root/Benchmarks/.venv"
ort_version="1.32.0"
numpy_version="2.4.6"
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import numpy, onnxruntime, sys
sys.exit(0 if (onnxruntime.__version__, numpy.__version__) == ('$ort_version', '$numpy_version') else 1)" 2>/dev/null; then
    echo "== installing onnxruntime==$ort_version numpy==$numpy_version" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "onnxruntime==$ort_version" "numpy==$numpy_version" >&2
fi

echo "== building lance-forward-bench (release)" >&2
scratch="${LANCE_BENCH_SCRATCH:-$root/Benchmarks/.build}"
swift build -c release --package-path Benchmarks --scratch-path "$scratch" --product lance-forward-bench >&2
bench="$(swift build -c release --package-path Benchmarks --scratch-path "$scratch" --show-bin-path)/lance-forward-bench"

raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT
run_lance() { "$bench" "$model" "$data" "$@"; }
run_ort() { "$venv/bin/python" "$root/Benchmarks/ort_forward.py" "$model" "$data" "$@"; }
# Busy CPU time of the whole machine so far, in clock ticks (user nice system irq softirq steal).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
ticks_per_s="$(getconf CLK_TCK)"
# Runs one benchmark process and appends other_cpu=: the CPU that other processes used meanwhile,
# in cores (machine busy time minus the process's own CPU time, over its wall time).
measure() {
    local engine="$1" before after start end line
    shift
    before="$(busy_ticks)"
    start="$(date +%s.%N)"
    line="$("run_$engine" "$@")"
    end="$(date +%s.%N)"
    after="$(busy_ticks)"
    awk -v line="$line" -v busy=$((after - before)) -v hz="$ticks_per_s" -v start="$start" -v end="$end" 'BEGIN {
        match(line, /cpu_s=[0-9.]+/); own = substr(line, RSTART + 6, RLENGTH - 6)
        other = (busy / hz - own) / (end - start); if (other < 0) other = 0
        printf "%s other_cpu=%.2f\n", line, other }'
}
for config in "${configs[@]}"; do
    IFS=: read -r batch warmup iterations <<<"$config"
    echo "== batch $batch: $rounds rounds, $warmup warm-up + $iterations timed passes each" >&2
    for ((round = 1; round <= rounds; round++)); do
        if ((round % 2 == 1)); then order=(lance ort); else order=(ort lance); fi
        for engine in "${order[@]}"; do
            line="$(measure "$engine" "$batch" "$warmup" "$iterations")"
            echo "round $round: $line" >&2
            echo "$line" >>"$raw"
        done
    done
done

# The report: medians over rounds of each round's images/s.
command="bash Benchmarks/forward.sh"
for variable in LANCE_SHARED LANCE_BENCH_MODEL LANCE_BENCH_DATA LANCE_BENCH_ROUNDS LANCE_BENCH_QUIET LANCE_BENCH_SCRATCH; do
    if [ -n "${!variable:-}" ]; then command="$variable=${!variable} $command"; fi
done
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || true)"
RAW="$raw" QUIET="$quiet" ROOT="$root" MODEL="$model" DATA="$data" ROUNDS="$rounds" COMMAND="$command" \
CPU="${cpu:-unknown}" CORES="$(nproc)" DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
SWIFT_VERSION="$(swift --version 2>/dev/null | head -n 1)" \
"$venv/bin/python" - <<'PY'
import os, statistics

results = {}  # (engine, batch) -> [fields of each round]
for line in open(os.environ["RAW"]):
    engine, *pairs = line.split()
    fields = dict(pair.split("=", 1) for pair in pairs)
    results.setdefault((engine, int(fields["batch"])), []).append(fields)

def rel(path):
    return os.path.relpath(path, os.environ["ROOT"])

def ips(engine, batch):
    return [float(f["images_per_s"]) for f in results[(engine, batch)]]

def other(engine, batch):
    values = [float(f["other_cpu"]) for f in results[(engine, batch)]]
    return f"{statistics.median(values):.2f} (max {max(values):.2f})"

import onnxruntime
batches = sorted({batch for _, batch in results})
print(f"MobileNetV2 forward throughput, median over {os.environ['ROUNDS']} rounds of each round's images/s:")
print()
print("| batch | LANCE images/s | ONNX Runtime images/s | ratio LANCE/ORT |")
print("| ---: | ---: | ---: | ---: |")
for batch in batches:
    lance, ort = statistics.median(ips("lance", batch)), statistics.median(ips("onnxruntime", batch))
    print(f"| {batch} | {lance:.1f} | {ort:.1f} | {lance / ort:.2f} |")
quiet = float(os.environ["QUIET"])
def quiet_ips(engine, batch):
    return [float(f["images_per_s"]) for f in results[(engine, batch)] if float(f["other_cpu"]) < quiet]
def cell(values):
    return f"{statistics.median(values):.1f} ({len(values)})" if values else "- (0)"
print()
print(f"Quiet rounds only (other processes used < {quiet:g} cores while the round ran): median images/s"
      " (number of rounds):")
print()
print("| batch | LANCE images/s | ONNX Runtime images/s | ratio LANCE/ORT |")
print("| ---: | ---: | ---: | ---: |")
for batch in batches:
    lance, ort = quiet_ips("lance", batch), quiet_ips("onnxruntime", batch)
    ratio = f"{statistics.median(lance) / statistics.median(ort):.2f}" if lance and ort else "-"
    print(f"| {batch} | {cell(lance)} | {cell(ort)} | {ratio} |")
print()
print("Per-round images/s (min / median / max over rounds), median time of one pass of the batch, and the CPU")
print("used by other processes while each round ran (median and max over rounds, in cores):")
print()
print("| batch | engine | min | median | max | median ms per pass | warm-up + timed passes | other processes' CPU (cores) |")
print("| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |")
for batch in batches:
    for engine, label in (("lance", "LANCE"), ("onnxruntime", "ONNX Runtime")):
        values = ips(engine, batch)
        ms = statistics.median(float(f["median_ms"]) for f in results[(engine, batch)])
        first = results[(engine, batch)][0]
        print(f"| {batch} | {label} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f}"
              f" | {ms:.1f} | {first['warmup']} + {first['iterations']} | {other(engine, batch)} |")
threads = {engine: results[(engine, batches[0])][0]["threads"] for engine in ("lance", "onnxruntime")}
blas_core = results[("lance", batches[0])][0].get("blas_core", "unknown")
print()
print(f"- machine: {os.environ['CORES']} cores (nproc), {os.environ['CPU']}")
print(f"- date: {os.environ['DATE']}")
print(f"- model: {rel(os.environ['MODEL'])}; inputs: {rel(os.environ['DATA'])}")
print(f"- rounds: {os.environ['ROUNDS']} per batch size, one fresh process per engine per round, order alternating")
print(f"- LANCE: {os.environ['SWIFT_VERSION']}, release build, OpenBLAS kernels {blas_core}, kernel threads {threads['lance']}, "
      "OpenBLAS single-threaded inside the pass (LANCE splits the work over the cores itself)")
print(f"- ONNX Runtime {onnxruntime.__version__}, CPUExecutionProvider, intra-op threads {threads['onnxruntime']}")
print(f"- command: `{os.environ['COMMAND']}`")
PY
