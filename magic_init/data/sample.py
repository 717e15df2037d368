"""Pick and load the sample: ``num_images`` images of a source, transformed, as float32 NCHW.

Selection: when the source holds more than ``num_images`` items, they are visited in the order of a
permutation drawn from ``numpy.random.RandomState(seed)`` (deterministic for a fixed seed); otherwise
in source order. Unreadable items are logged, skipped and counted, and the next item of the order
takes their place, so ``num_images`` are used whenever the source has that many readable ones; when it
has fewer, one warning says how many were asked for, read and skipped.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from magic_init.batch_store import DEFAULT_MEMORY_MB, BatchStore
from magic_init.data.images import UnreadableImage
from magic_init.data.sources import open_source
from magic_init.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_NUM_IMAGES = 160
#: Threads that read and resize images ahead of use (at most the CPUs), and how many items ahead.
READ_THREADS = 4
READ_AHEAD = 8


@dataclass
class Batch:
    """One batch: ``data`` (n, C, H, W) float32, ``labels`` (n,) int64 or None, item ``names``."""

    data: np.ndarray
    labels: np.ndarray | None
    names: list


@dataclass
class Sample:
    """The sample as the reader cut it into batches, plus what was skipped.

    ``batches`` is a ``magic_init.batch_store.BatchStore`` of ``{key: (n, C, H, W) float32}``
    batches (in memory up to its budget, in temporary files beyond it: memory does not grow with
    the sample); ``data`` joins them into one array on demand. ``labels`` (N,) int64 or None,
    ``names`` the items' names, ``skipped`` a list of (item name, reason), ``source_size`` the
    items in the source.
    """

    batches: BatchStore
    labels: np.ndarray | None
    names: list
    skipped: list = field(default_factory=list)
    source_size: int = 0
    key: str = "data"

    @property
    def data(self) -> np.ndarray:
        """The whole sample as one (N, C, H, W) float32 array (built from ``batches`` on each call)."""
        return np.concatenate([batch[self.key] for batch in self.batches])

    @property
    def used(self) -> int:
        return self.batches.images()


class SampleReader:
    """Iterate a source's sample in batches; ``used``/``skipped`` are filled while iterating."""

    def __init__(self, source, transform, num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0):
        self.source = source if hasattr(source, "read") else open_source(source)
        self.transform = transform
        self.num_images = int(num_images)
        self.seed = seed
        self.used = 0
        self.skipped = []
        self._shape = None

    def order(self) -> np.ndarray:
        """Visiting order of the source's items (see module docstring)."""
        n = len(self.source)
        if n <= self.num_images:
            return np.arange(n)
        return np.random.RandomState(self.seed).permutation(n)

    def batches(self, batch_size: int = 16):
        """Yield ``Batch``es of at most ``batch_size`` images until ``num_images`` are used.

        Where the source allows it (``parallel_reads``), the next few items of the order are read and
        resized on a thread pool ahead of use (``_prefetched``); the random crops and mirrors, the
        checks and the messages stay in order on this thread, so the sample is the same."""
        self.used, self.skipped, self._shape = 0, [], None
        rng = np.random.RandomState(self.seed + 1)  # crops/mirrors in TRAIN phase only
        items = []
        for index, read in self._prefetched(self.order()):
            if self.used + len(items) >= self.num_images:
                break
            item = self._load(int(index), rng, read)
            if item is not None:
                items.append(item)
            if len(items) == batch_size:
                self.used += len(items)
                yield _stack(items)
                items = []
        if items:
            self.used += len(items)
            yield _stack(items)
        self._check_and_report()

    def _read_resized(self, index):
        """``(image resized, label)`` of item ``index``, or the exception reading it raised (reported
        or raised when the item is used, not when a read ahead of use fails)."""
        try:
            image, label = self.source.read(int(index))
            return self.transform.resized(image), label
        except Exception as e:  # noqa: BLE001  (handed to _load, which skips or re-raises it in order)
            return e

    def _prefetched(self, order):
        """``(index, _read_resized(index))`` along ``order``: read on a thread pool, at most
        ``READ_AHEAD`` items ahead, where the source allows parallel reads and there are several CPUs;
        else one item at a time when asked for."""
        workers = min(READ_THREADS, os.cpu_count() or 1)
        if not getattr(self.source, "parallel_reads", False) or workers < 2:
            for index in order:
                yield index, None
            return
        order = iter(order)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = deque((index, pool.submit(self._read_resized, index)) for index in islice(order, READ_AHEAD))
            try:
                while pending:
                    index, future = pending.popleft()
                    for ahead in islice(order, 1):
                        pending.append((ahead, pool.submit(self._read_resized, ahead)))
                    yield index, future.result()
            finally:
                for _, future in pending:
                    future.cancel()

    def _load(self, index: int, rng, read=None):
        """(array, label, name) of one item, or None (logged and counted) when it cannot be read.
        ``read``: the item's ``_read_resized`` when it was read ahead."""
        name = self.source.item_name(index)
        if read is None:
            read = self._read_resized(index)
        if isinstance(read, UnreadableImage):
            log.warning("skipping %s: %s", name, read)
            self.skipped.append((name, str(read)))
            return None
        if isinstance(read, Exception):
            raise read
        image, label = read
        array = self.transform.finish(image, rng=rng, name=name)
        if self._shape is None:
            self._shape = array.shape
        elif array.shape != self._shape:
            raise DataError("%s: transformed to %s but earlier images gave %s; set a resize size or crop_size"
                            % (name, array.shape, self._shape))
        return array, label, name

    def _check_and_report(self):
        """Raise DataError when no image was read; else log one warning when fewer than ``num_images``
        were read or some were skipped."""
        if self.used == 0:
            raise DataError("%s: none of its %d images could be read" % (self.source.name, len(self.source)))
        if self.used < self.num_images:
            log.warning("%s: %d images asked for, only %d read, %d skipped as unreadable (the source has %d)",
                        self.source.name, self.num_images, self.used, len(self.skipped), len(self.source))
        elif self.skipped:
            log.warning("%s: used %d images, skipped %d unreadable", self.source.name, self.used,
                        len(self.skipped))


def load_sample(source, transform, num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0,
                batch_size: int = 64, progress: bool = False, key: str = "data",
                memory_mb=DEFAULT_MEMORY_MB) -> Sample:
    """Read the sample batch by batch into a ``BatchStore``, under a progress bar (one step per
    batch) when ``progress``.

    Args:
        source: a source object or spec (``open_source``).
        transform: the ``Transform`` applied to every image.
        num_images: images wanted (see the module docstring for which).
        seed: seed of the visiting order (and of TRAIN-phase crops and mirrors).
        batch_size: images per stored batch.
        progress: a progress bar over the batches read.
        key: the name the images are stored under in each batch (the net's input blob).
        memory_mb: MiB of images kept in memory, the rest in temporary files; None: all in memory.

    Returns:
        a ``Sample``.
    """
    from magic_init.progress import progress as progress_bar

    reader = SampleReader(source, transform, num_images, seed)
    expected = -(-min(reader.num_images, len(reader.source)) // batch_size)
    store, labels, names = BatchStore(memory_mb), [], []
    for batch in progress_bar(reader.batches(batch_size), total=expected, desc="loading sample",
                              enabled=progress, unit="batch"):
        store.append({key: batch.data})
        labels.append(batch.labels)
        names.extend(batch.names)
    joined = None if any(lab is None for lab in labels) else np.concatenate(labels)
    return Sample(store, joined, names, skipped=reader.skipped, source_size=len(reader.source), key=key)


def _stack(items) -> Batch:
    arrays, labels, names = zip(*items)
    return Batch(np.stack(arrays), _labels_or_none(labels), list(names))


def _labels_or_none(labels):
    """Labels as int64, or None when any item has none (a list line without a label)."""
    if any(label is None for label in labels):
        return None
    return np.asarray(labels, dtype=np.int64)
