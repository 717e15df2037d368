"""How the process takes memory from the operating system and hands it back.

glibc's malloc keeps freed blocks for reuse; after a pass over the sample that is hundreds of MB of
activations and gradients no longer used, which count in the process's resident size and make the
next allocation (the weights' save copy) add to it. ``malloc_trim(0)`` returns them. A no-op where
the C library is not glibc.

numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every array of
4 MiB or more. With the kernel's default ``defrag=madvise`` a fault in such a region compacts memory
synchronously when no free huge page is at hand, which on a machine whose memory is fragmented by
the page cache makes the first touch of a fresh array much slower than with small pages
(docs/RESULTS.md 0b). ``use_small_pages`` turns numpy's request off for the process (the CLI does).
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


def numpy_huge_page_switch():
    """numpy's process-wide switch of its huge-page request (``switch(enabled) -> previous``), or None
    where this numpy has none."""
    try:
        from numpy._core import multiarray
    except ImportError:                   # numpy < 2
        try:
            from numpy.core import multiarray
        except ImportError:
            return None
    return getattr(multiarray, "_set_madvise_hugepage", None)


def use_small_pages() -> bool:
    """Stop numpy from asking for transparent huge pages for its large arrays (process-wide).

    Returns:
        True when numpy's request was switched off, False where this numpy has no such switch.
    """
    switch = numpy_huge_page_switch()
    if switch is None:
        return False
    switch(False)
    return True
