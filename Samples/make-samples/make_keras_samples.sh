#!/usr/bin/env bash
# Regenerates Samples/keras with pinned Keras 3 (PyTorch CPU backend) in a private virtual environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-keras"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# torch==2.13.0 also matches the CPU-only build 2.13.0+cpu when the package index offers it.
"$venv/bin/pip" install -q keras==3.15.1 torch==2.13.0 numpy==2.4.6 h5py==3.16.0
export KERAS_BACKEND=torch
"$venv/bin/python" "$here/make_keras_samples.py"
