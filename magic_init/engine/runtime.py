"""Process-wide settings: exact float32 on CUDA (applied by every CUDA Net), and an opt-in
malloc tuning for the CPU engine.

On glibc, tensors above the mmap threshold (at most 32 MB) are mmap'ed fresh on each
allocation and unmapped on free, so every forward pass page-faults its large blobs in again.
``keep_freed_memory()`` makes malloc serve large blocks from the heap and keep freed memory
(mallopt M_MMAP_MAX = 0, M_TRIM_THRESHOLD = huge): faster forward+backward passes (docs/RESULTS.md,
"Measurements behind design choices"). The cost: resident memory stays at its high-water mark.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Apply the malloc settings above; True where it worked (glibc), False elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("mallopt not available (%s); allocator left alone", name)
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    log.debug("malloc keeps freed memory: %s", ok)
    return ok


def exact_float32_on_cuda() -> None:
    """Make CUDA convolutions and matrix products IEEE float32, as Caffe's are.

    torch lets cuDNN convolutions use TF32 by default (a 10-bit mantissa on Ampere and later GPUs:
    ~1e-3 relative error, 100x the conformance tolerance). Process-wide, like torch's flags; set
    whenever a Net is built on a CUDA device."""
    import torch
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        cudnn_conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:                                         # torch before the fp32_precision API
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
