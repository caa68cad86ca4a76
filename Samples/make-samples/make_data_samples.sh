#!/usr/bin/env bash
# Regenerates Samples/data (the LanceData test fixtures) with pinned Pillow, h5py and NumPy in a
# private virtual environment. Needs ../shared/data/cifar10-20 beside the project (or $LANCE_SHARED).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q pillow==13.0.0 h5py==3.16.0 numpy==2.4.6
"$venv/bin/python" "$here/make_data_samples.py"
