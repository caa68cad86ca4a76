#!/usr/bin/env bash
# Verifies lance-export with a reference runtime: ONNX Runtime (from PyPI, pinned, in a virtual
# environment) runs the exported models and must agree with lance-eval and the reference outputs.
# Usage: Tests/Interop/verify_onnx_export.sh [BIN_DIR]   (default: the debug build's products)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
shared="${LANCE_SHARED:-$(cd "$root/.." && pwd)/shared}"
if [ ! -d "$shared/models" ]; then
    echo "verify_onnx_export: $shared/models is missing (set LANCE_SHARED)" >&2
    exit 1
fi
bin="${1:-$(swift build --package-path "$root" --show-bin-path)}"
for tool in lance-convert lance-export lance-eval lance-train; do
    [ -x "$bin/$tool" ] || swift build --package-path "$root" --product "$tool" >&2
done
venv="$root/Tests/Interop/.venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -c "import onnxruntime, onnx, numpy" 2>/dev/null ||
    "$venv/bin/pip" install -q --disable-pip-version-check onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" "$root/Tests/Interop/verify_onnx_export.py" "$bin" "$shared" "$work"
