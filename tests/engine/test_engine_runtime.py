"""engine.runtime: process-wide settings, each checked in a child process (they are global)."""
from __future__ import annotations

import subprocess
import sys


def test_exact_float32_on_cuda_turns_tf32_off_for_convolutions_and_matmuls():
    code = ("import torch; from magic_init.engine.runtime import exact_float32_on_cuda; "
            "print(torch.backends.cudnn.conv.fp32_precision); exact_float32_on_cuda(); "
            "print(torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["tf32", "ieee", "ieee"]      # torch's default lets cuDNN use TF32
