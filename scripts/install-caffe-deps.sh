#!/bin/sh
# Installs pycaffe and the Python dependencies magic_init needs, from Debian's packages only.
# Run as root inside Debian bullseye (or Ubuntu 20.04 for CUDA): the chroot built by scripts/caffe-env and the
# CPU target of the Dockerfile both run this same script, so CI exercises the image's steps.
#   MAGIC_INIT_CAFFE_PACKAGE: python3-caffe (CPU, default) or python3-caffe-cuda
#   MAGIC_INIT_CAFFE_TOOLS:   caffe (CPU tools, default: upgrade_net_proto_* for the tests) or caffe-cuda
set -eu
pkg="${MAGIC_INIT_CAFFE_PACKAGE:-python3-caffe}"
tools="${MAGIC_INIT_CAFFE_TOOLS:-caffe}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# libopenblas0-pthread switches Caffe and numpy from the reference BLAS to OpenBLAS (about 9x faster).
apt-get install -y -qq --no-install-recommends \
    "$pkg" "$tools" libopenblas0-pthread \
    python3-numpy python3-protobuf python3-click python3-sklearn python3-pil python3-lmdb \
    python3-h5py python3-tqdm python3-pytest python3-setuptools python3-pip \
    ca-certificates > /dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
