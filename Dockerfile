# magic_init with real Caffe (pycaffe) as its backend.
#
#   docker build -t magic_init:cuda .                          # CUDA Caffe (Ubuntu 20.04, python3-caffe-cuda)
#   docker build --build-arg VARIANT=cpu -t magic_init:cpu .   # CPU Caffe (Debian bullseye, python3-caffe)
#   sudo scripts/docker-build.sh                              # the CPU variant with buildah: no daemon, no registry
#   docker run --gpus all --user "$(id -u):$(id -g)" -v "$PWD:/work" magic_init:cuda \
#       model.prototxt out.caffemodel --data list.txt --init kmeans --backend caffe --device cuda
#
# Both variants run scripts/install-caffe-deps.sh, the same script scripts/caffe-env runs to build
# the real-Caffe chroot that CI tests with, so the CPU path is exercised by CI. See README.md,
# "Docker", for what was and was not verified about the CUDA image.
ARG VARIANT=cuda

# Ubuntu 20.04's multiverse ships Caffe built with CUDA (caffe-cuda, python3-caffe-cuda).
FROM ubuntu:20.04 AS cuda-base
ENV MAGIC_INIT_CAFFE_PACKAGE=python3-caffe-cuda \
    MAGIC_INIT_CAFFE_TOOLS=caffe-cuda

FROM debian:bullseye-slim AS cpu-base
ENV MAGIC_INIT_CAFFE_PACKAGE=python3-caffe \
    MAGIC_INIT_CAFFE_TOOLS=caffe

# hadolint ignore=DL3006
FROM ${VARIANT}-base AS image
ENV DEBIAN_FRONTEND=noninteractive \
    GLOG_minloglevel=2
COPY scripts/install-caffe-deps.sh /tmp/install-caffe-deps.sh
RUN sh /tmp/install-caffe-deps.sh && rm /tmp/install-caffe-deps.sh
# The image's Python (3.8/3.9, old setuptools) cannot build from pyproject.toml offline: run the
# checkout in place, as scripts/caffe-env does in its chroot.
COPY . /opt/magic_init
# MPLCONFIGDIR: run as the caller (--user), HOME is / and not writable; pycaffe imports matplotlib.
ENV PYTHONPATH=/opt/magic_init \
    MPLCONFIGDIR=/tmp/matplotlib
RUN printf '#!/bin/sh\nexec python3 -m magic_init "$@"\n' >/usr/local/bin/magic_init \
    && chmod 755 /usr/local/bin/magic_init
WORKDIR /work
ENTRYPOINT ["magic_init"]
CMD ["--help"]
