"""Per-batch arrays of the sample, in memory up to a budget and in temporary files beyond it.

The passes carry the sample through the net batch by batch and keep, per batch, the blobs a later
layer still reads (``SampleRunner``). Held in memory, those grow with the sample: CaffeNet's conv1
output is 1.16 MB per image. A ``BatchStore`` keeps batches in memory while their total stays within
``memory_mb`` and writes the rest to ``.npy`` files in a private temporary folder (``TMPDIR``), read
back one batch at a time, so the process's memory does not grow with the sample size. The arrays
come back bit for bit as they were stored.
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
        self._folder = None
        self._cleanup = None

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
        return {name: np.load(path) for name, path in item.items()}

    def __setitem__(self, i, batch):
        self._release(i)
        size = batch_bytes(batch)
        self._images[i] = batch_images(batch)
        if self.memory_bytes is None or self._held + size <= self.memory_bytes:
            self._items[i], self._spilled[i] = dict(batch), False
            self._held += size
            return
        folder = self._ensure_folder()
        paths = {}
        for k, (name, array) in enumerate(batch.items()):
            paths[name] = os.path.join(folder, "b%d_%d.npy" % (i, k))
            np.save(paths[name], np.ascontiguousarray(array), allow_pickle=False)
        self._items[i], self._spilled[i] = paths, True

    def _release(self, i):
        """Forget batch i's arrays (memory) or files."""
        item = self._items[i]
        if self._spilled[i]:
            for path in item.values():
                os.remove(path)
        else:
            self._held -= batch_bytes(item) if item else 0
        self._items[i], self._spilled[i] = {}, False

    def _ensure_folder(self):
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="magic_init-batches-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        return self._folder

    def close(self):
        """Drop every batch and remove the temporary folder."""
        self._items, self._spilled, self._images, self._held = [], [], [], 0
        if self._cleanup is not None:
            self._cleanup()
            self._folder = self._cleanup = None
