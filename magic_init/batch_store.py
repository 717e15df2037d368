"""Per-batch arrays of the sample, in memory up to a budget and in temporary files beyond it.

The passes carry the sample through the net batch by batch and keep, per batch, the blobs a later
layer still reads (``SampleRunner``). Held in memory, those grow with the sample: CaffeNet's conv1
output is 1.16 MB per image. A ``BatchStore`` keeps batches in memory while their total stays within
``memory_mb`` and writes the rest to raw files in a private temporary folder (``TMPDIR``), read
back one batch at a time, so the process's memory does not grow with the sample size. The arrays
come back bit for bit as they were stored.

A released file is not deleted but overwritten in place by a later spill (``SpillFiles``): the passes
rewrite every batch's live blobs once per layer range, and writing into pages a file already has is a
copy, while a new file's pages must each be found and zeroed by the kernel, which on a VM whose host
takes freed guest memory back (free page reporting) faults to the host page by page (docs/RESULTS.md
0i has the cost).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref

import numpy as np

#: Batches kept in memory, in MiB, before the rest go to temporary files.
DEFAULT_MEMORY_MB = 16


def batch_bytes(batch) -> int:
    """Bytes of the arrays of one ``{blob: array}`` batch."""
    return sum(int(a.nbytes) for a in batch.values())


def batch_images(batch) -> int:
    """Images in one ``{blob: array}`` batch (the length of its first array; 0 for no arrays)."""
    return len(next(iter(batch.values()))) if batch else 0


class SpillFiles:
    """Raw array files in a private temporary folder, each reused in place once released.

    ``write(array)`` returns a handle; ``read(handle)`` a fresh array equal to it bit for bit;
    ``release(handle)`` frees the file for a later ``write``, which overwrites it from its start
    without truncating it. A file's size is the largest array it held, so the folder holds at most
    (most arrays held at once) x (largest array) bytes. ``close()`` removes the folder; so does
    garbage collection or the process's exit.
    """

    def __init__(self):
        self._folder = None
        self._cleanup = None
        self._size = {}             # path -> bytes in the file
        self._free = []             # released paths

    @property
    def folder(self):
        """The folder's path (None until the first write)."""
        return self._folder

    def write(self, array):
        """Store ``array``; returns ``(path, shape, dtype)``, the handle ``read`` and ``release`` take."""
        array = np.ascontiguousarray(array)
        path = self._take(array.nbytes)
        with open(path, "r+b" if path in self._size else "wb") as f:
            if array.nbytes:
                f.write(memoryview(array.reshape(-1)).cast("B"))
        self._size[path] = max(self._size.get(path, 0), array.nbytes)
        return path, array.shape, array.dtype

    @staticmethod
    def read(handle):
        """A fresh array with the contents ``write`` stored under ``handle``."""
        path, shape, dtype = handle
        array = np.empty(shape, dtype)
        with open(path, "rb") as f:
            got = f.readinto(memoryview(array.reshape(-1)).cast("B")) if array.nbytes else 0
        if got != array.nbytes:
            raise OSError("%s: %d of %d bytes (the temporary file was changed)" % (path, got, array.nbytes))
        return array

    def release(self, handle):
        """Let a later ``write`` reuse the file of ``handle``."""
        self._free.append(handle[0])

    def _take(self, nbytes):
        """A free file: the smallest that holds ``nbytes``, else the largest (it grows), else a new one."""
        if self._free:
            fits = [p for p in self._free if self._size[p] >= nbytes]
            pick = min(fits, key=self._size.get) if fits else max(self._free, key=self._size.get)
            self._free.remove(pick)
            return pick
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="magic_init-batches-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        return os.path.join(self._folder, "a%d.bin" % len(self._size))

    def files(self):
        """How many files the folder holds (held and free)."""
        return len(self._size)

    def close(self):
        """Remove the folder and every file."""
        if self._cleanup is not None:
            self._cleanup()
        self._folder = self._cleanup = None
        self._size, self._free = {}, []


class BatchStore:
    """A list of ``{blob: float32 array}`` batches, spilled to temporary files past ``memory_mb``.

    ``store[i]`` returns batch i (read from its files when it was spilled: a fresh copy each time);
    ``store[i] = batch`` replaces it (the old files are removed); ``append(batch)`` adds one. Arrays
    put in memory are kept as given (not copied). ``close()`` removes the folder; it is also removed
    when the store is garbage-collected or the process exits.

    Args:
        memory_mb: MiB of arrays kept in memory; None keeps everything in memory.
    """

    def __init__(self, memory_mb=DEFAULT_MEMORY_MB):
        self.memory_bytes = None if memory_mb is None else int(memory_mb * 2 ** 20)
        self._items = []            # per batch: dict of arrays (in memory) or dict of file paths
        self._spilled = []
        self._images = []
        self._held = 0              # bytes in memory
        self._files = SpillFiles()

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def images(self, i=None) -> int:
        """Images in batch ``i``, or in the whole store when ``i`` is None."""
        return sum(self._images) if i is None else self._images[i]

    def spilled_count(self) -> int:
        """How many batches are in files now."""
        return sum(self._spilled)

    def append(self, batch):
        """Add ``batch`` at the end (in memory if it fits the budget, else in files)."""
        self._items.append({})
        self._spilled.append(False)
        self._images.append(0)
        self[len(self._items) - 1] = batch

    def __getitem__(self, i):
        item = self._items[i]
        if not self._spilled[i]:
            return dict(item)
        return {name: self._files.read(handle) for name, handle in item.items()}

    def __setitem__(self, i, batch):
        self._release(i)
        size = batch_bytes(batch)
        self._images[i] = batch_images(batch)
        if self.memory_bytes is None or self._held + size <= self.memory_bytes:
            self._items[i], self._spilled[i] = dict(batch), False
            self._held += size
            return
        self._items[i] = {name: self._files.write(array) for name, array in batch.items()}
        self._spilled[i] = True

    def _release(self, i):
        """Forget batch i's arrays (memory) or files."""
        item = self._items[i]
        if self._spilled[i]:
            for handle in item.values():
                self._files.release(handle)
        else:
            self._held -= batch_bytes(item) if item else 0
        self._items[i], self._spilled[i] = {}, False

    @property
    def spill_files(self):
        """The ``SpillFiles`` past-budget batches go to."""
        return self._files

    def close(self):
        """Drop every batch and remove the temporary folder."""
        self._items, self._spilled, self._images, self._held = [], [], [], 0
        self._files.close()
