"""Backend resolution: one `Net` interface, two implementations.

``get_net(..., backend='auto')`` builds a pycaffe net when ``import caffe`` works and the built-in
PyTorch engine otherwise; ``'caffe'`` and ``'torch'`` insist on one. Both are imported lazily, so
the package imports where only one of them is installed.
"""
from __future__ import annotations

import logging
import os
import sys

from magic_init.errors import BackendError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "caffe", "torch")

#: glog's threshold for Caffe's own log lines (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL). libcaffe reads
#: it from the environment once, when ``import caffe`` loads it: it must be set before that.
GLOG_ENV = "GLOG_minloglevel"


def set_caffe_log_level(quiet=False):
    """Steer Caffe's glog output (pycaffe backend) before caffe is imported.

    ``quiet``: errors only (GLOG_minloglevel at least 2, whatever the environment says). Otherwise
    warnings and errors (1), unless GLOG_minloglevel is set: then it is the user's choice (0 brings
    back Caffe's net-construction log, hundreds of lines per net). Returns the level in force; once
    caffe is imported a change only reaches new processes (logged at DEBUG)."""
    current = os.environ.get(GLOG_ENV, "").strip()
    try:
        level = int(current) if current else None
    except ValueError:
        level = None
    if quiet:
        level = max(level if level is not None else 0, 2)
    elif level is None:
        level = 1
    os.environ[GLOG_ENV] = str(level)
    if "caffe" in sys.modules:
        log.debug("caffe is already imported: %s=%d takes effect only in new processes", GLOG_ENV, level)
    return level


def _pycaffe_available():
    try:
        import caffe  # noqa: F401
    except Exception:  # ImportError, or a broken install raising anything else
        return False
    return True


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(name="auto"):
    """Return 'caffe' or 'torch' for a requested backend name, or raise BackendError."""
    if name not in BACKENDS:
        raise BackendError("unknown backend %r; choose one of %s" % (name, ", ".join(BACKENDS)))
    if name in ("auto", "caffe"):
        if _pycaffe_available():
            return "caffe"
        if name == "caffe":
            raise BackendError("backend 'caffe' asked for, but pycaffe does not import (import caffe failed)")
    if not _torch_available():
        raise BackendError("the built-in engine needs PyTorch 2.13.0, the CPU build without an NVIDIA GPU, else the CUDA build: bash scripts/setup.sh picks it (README.md, 'PyTorch builds')"
                           + ("" if name == "torch" else " (or install pycaffe)"))
    return "torch"


def get_net(net, weights=None, phase="test", device="cpu", backend="auto", **kwargs):
    """Build a Net on the resolved backend.

    Args:
        net: A prototxt path or a NetParameter; with ``instantiated=True`` in ``kwargs``, the
            NetParameter ``netgraph.instantiate`` returned, which both backends build as it is.
        weights: Path of a caffemodel copied in by layer name, or None (the default).
        phase: "test" (the default) or "train" (any case), or a ``caffe_pb2`` Phase value.
        device: "cpu" (the default), "cuda" or "cuda:N".
        backend: "auto" (the default), "caffe" or "torch" (``resolve_backend``).
        **kwargs: ``input_shapes``, ``level``, ``stages``, ``seed``, ``instantiated``: as the
            backends' constructors take them.

    Returns:
        A ``magic_init.engine.Net`` or a ``magic_init.backends.pycaffe.PycaffeNet``.
    """
    chosen = resolve_backend(backend)
    log.debug("backend %s (asked for %s), device %s", chosen, backend, device)
    if chosen == "caffe":
        from magic_init.backends.pycaffe import PycaffeNet
        return PycaffeNet(net, weights=weights, phase=phase, device=device, **kwargs)
    from magic_init.engine import Net
    return Net(net, weights=weights, phase=phase, device=device, **kwargs)
