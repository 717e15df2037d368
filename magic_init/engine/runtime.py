"""Process-wide settings of the engine: exact float32 on CUDA (applied by every CUDA Net).

How the process takes and returns host memory (glibc's malloc) is ``magic_init.memory``'s concern.
"""
from __future__ import annotations


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
