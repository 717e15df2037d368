"""Hand memory the process freed back to the operating system.

glibc's malloc keeps freed blocks for reuse; after a pass over the sample that is hundreds of MB of
activations and gradients no longer used, which count in the process's resident size and make the
next allocation (the weights' save copy) add to it. ``malloc_trim(0)`` returns them. A no-op where
the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``).

    Returns:
        True when memory was released, False when nothing was or the C library has no malloc_trim.
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
