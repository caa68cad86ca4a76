#!/usr/bin/env bash
# Verifies lance-export with reference runtimes: Keras 3 (JAX backend, from PyPI, pinned, in the
# virtual environment verify_onnx_export.sh uses) loads the exported .h5 and .keras files with
# keras.models.load_model, ONNX Runtime runs the exported .onnx files (BatchNormalization folded,
# other opsets, external data), and all must agree with lance-eval.
# Usage: Tests/Interop/verify_keras_export.sh [BIN_DIR]   (default: the debug build's products)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
shared="${LANCE_SHARED:-$(cd "$root/.." && pwd)/shared}"
if [ ! -d "$shared/models" ]; then
    echo "verify_keras_export: $shared/models is missing (set LANCE_SHARED)" >&2
    exit 1
fi
bin="${1:-$(swift build --package-path "$root" --show-bin-path)}"
for tool in lance-convert lance-export lance-eval; do
    [ -x "$bin/$tool" ] || swift build --package-path "$root" --product "$tool" >&2
done
venv="$root/Tests/Interop/.venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -c "import onnxruntime, onnx, numpy, keras, jax, h5py" 2>/dev/null ||
    "$venv/bin/pip" install -q --disable-pip-version-check onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 \
        keras==3.15.1 "jax[cpu]==0.10.2" h5py==3.16.0 >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
KERAS_BACKEND=jax "$venv/bin/python" "$root/Tests/Interop/verify_keras_export.py" "$bin" "$shared" "$work"
