"""Backend resolution: one `Net` interface, two implementations.

``get_net(..., backend='auto')`` builds a pycaffe net when ``import caffe`` works and the built-in
PyTorch engine otherwise; ``'caffe'`` and ``'torch'`` insist on one. Both are imported lazily, so
the package imports where only one of them is installed.
"""
from __future__ import annotations

import logging

from magic_init.errors import BackendError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "caffe", "torch")


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
    """Build a Net on the resolved backend. ``net``: prototxt path or NetParameter."""
    chosen = resolve_backend(backend)
    log.debug("backend %s (asked for %s), device %s", chosen, backend, device)
    if chosen == "caffe":
        from magic_init.backends.pycaffe import PycaffeNet
        return PycaffeNet(net, weights=weights, phase=phase, device=device, **kwargs)
    from magic_init.engine import Net
    return Net(net, weights=weights, phase=phase, device=device, **kwargs)
