"""How the process takes memory from the operating system and hands it back.

glibc's malloc serves a large block (above its mmap threshold, at most 32 MiB) with a fresh
``mmap`` and unmaps it when freed, and trims the top of its heap when more than a threshold is free.
A pass over the sample allocates and frees a batch's activations and gradients, and the weight
gradients, over and over: every such block then comes back as fresh pages, each faulted in and zeroed
by the kernel again, and on a virtual machine that hands free memory back to its host, faulted in by
the host as well. ``reuse_freed_memory`` makes malloc take every block from its heap and keep what is
freed there for the next allocation (the CLI does; docs/RESULTS.md 0g).

After the last pass, those kept blocks are hundreds of MB of activations and gradients no longer
used, which count in the process's resident size; ``release_freed_memory`` (glibc ``malloc_trim(0)``)
hands them back. Both are no-ops where the C library is not glibc.

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


#: ``mallopt`` parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: The largest trim threshold ``mallopt`` takes (an int): the heap's top is not trimmed below it.
_NEVER_TRIM = 2 ** 31 - 1


def reuse_freed_memory() -> bool:
    """Serve every allocation from malloc's heap and keep freed blocks there (glibc ``mallopt``:
    no ``mmap`` per large block, no trimming of the heap's top), so that the next batch's arrays reuse
    pages already faulted in. ``release_freed_memory`` still hands the free ones back after the last pass.

    Returns:
        True when both settings took, False where the C library is not glibc or refused one.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1


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
