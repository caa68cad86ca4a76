#!/usr/bin/env bash
# Regenerates Samples/onnx with pinned onnx and onnxruntime in a private virtual environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6
"$venv/bin/python" "$here/make_onnx_samples.py"
