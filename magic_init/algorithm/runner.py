"""Carry the sample through a net batch by batch, layer range by layer range.

``SampleRunner`` keeps, per batch, only the blobs that a later layer still reads (liveness
computed once from bottom/top names), as float32 copies. ``advance(end)`` restores a batch's
live blobs into ``net.blobs`` and runs ``net.forward(start=<next layer>, end=<end>)`` — so
Algorithm 1 forwards each layer once, not the whole prefix per initialized layer. The sample's
batches and their live blobs are ``BatchStore``s: in memory up to a budget, in temporary files
beyond it, so that memory does not grow with the sample size.
"""
from __future__ import annotations

import contextlib

import numpy as np

from magic_init.algorithm.description import INPUT, describe
from magic_init.batch_store import DEFAULT_MEMORY_MB, BatchStore
from magic_init.errors import DataError
from magic_init.progress import progress as progress_bar


def sample_arrays(sample, net):
    """The sample as ``{input: float32 array}`` (a dict by input name, or one array for the first input)."""
    if not isinstance(sample, dict):
        sample = {net.inputs[0]: sample}
    missing = [name for name in sample if name not in net.blobs]
    if missing:
        raise DataError("sample blob(s) %s are not in the net (inputs: %s)" % (missing, list(net.inputs)))
    sample = {name: np.asarray(a, dtype=np.float32) for name, a in sample.items()}
    if min(len(a) for a in sample.values()) == 0:
        raise DataError("the sample is empty")
    return sample


def batch_bounds(count, batch_size, block=None):
    """(first, stop) image indices of the batches: ``batch_size`` images each, none straddling a block
    of ``block`` images (the last batch of a block, and of the sample, may be shorter)."""
    size = batch_size or count
    block = block or count
    return [(i, min(i + size, start + block, count))
            for start in range(0, count, block) for i in range(start, min(start + block, count), size)]


def split_batches(sample, net, batch_size, block=None):
    """``[{input: array}]`` batches of the sample (views of ``sample_arrays``), as batch_bounds cuts them."""
    sample = sample_arrays(sample, net)
    count = min(len(a) for a in sample.values())
    return [{name: a[i:stop] for name, a in sample.items()} for i, stop in batch_bounds(count, batch_size, block)]


def load_blobs(net, blobs):
    """Write ``{name: array}`` into net.blobs, reshaping the inputs (and the net) when the batch size changes."""
    first = next(iter(blobs.values()))
    if net.blobs[next(iter(blobs))].data.shape[0] != len(first):
        for name in net.inputs:
            shape = net.blobs[name].data.shape
            net.blobs[name].reshape(*((len(first),) + tuple(shape[1:])))
        net.reshape()
    for name, array in blobs.items():
        net.blobs[name].data[...] = array


def forward_only(net):
    """``net.no_grad()`` where the backend has it (the built-in engine records no autograd graph)."""
    no_grad = getattr(net, "no_grad", None)
    return no_grad() if callable(no_grad) else contextlib.nullcontext()


def training_dropout(net, seed, active=True):
    """Dropout as in training (``net.train_dropout(seed)``) where the backend offers it and ``active``."""
    train_dropout = getattr(net, "train_dropout", None)
    return train_dropout(seed) if active and callable(train_dropout) else contextlib.nullcontext()


class SampleRunner:
    """Per-batch live blobs of the sample, advanced through the net in layer ranges.

    Args:
        net: the net (either backend).
        sample: a float32 NCHW array for the net's first input, ``{input blob: array}``, or a
            ``BatchStore`` of such batches (then ``batch_size`` is the store's own cut).
        batch_size: images per batch (None: the whole sample in one batch).
        progress: progress bars for the passes' long loops (``bar(iterable, desc)``).
        memory_mb: MiB of live blobs kept in memory; the rest goes to temporary files
            (``BatchStore``); None keeps all in memory.
    """

    def __init__(self, net, sample, batch_size=None, progress=False, memory_mb=DEFAULT_MEMORY_MB):
        self.net = net
        self.batch_size = batch_size
        if isinstance(sample, BatchStore):
            self.batches = sample
        else:
            self.batches = BatchStore(memory_mb=None)      # views of the caller's arrays: no copy
            for batch in split_batches(sample, net, batch_size):
                self.batches.append(batch)
        if not len(self.batches):
            raise DataError("the sample is empty")
        self.description = describe(net)
        self.used = self.description.last_use()
        self.position = -1
        self.cache = BatchStore(memory_mb)    # batch i's live blobs once advanced (else its inputs)
        self._pending = {}                    # blob -> maps to apply when a batch is read (map_cached)
        self.progress = progress
        self.pass_label = "forward+backward"

    def bar(self, iterable, desc, total=None):
        """``iterable`` with a progress bar when this runner's ``progress`` is on (else unchanged)."""
        return progress_bar(iterable, total=total, desc=desc, enabled=self.progress)

    def __len__(self):
        return len(self.batches)

    def images(self):
        """Images in the sample."""
        return self.batches.images()

    def batch_images(self):
        """Images per batch, in order."""
        return [self.batches.images(i) for i in range(len(self))]

    def live(self, i):
        """Batch i's live blobs at the current position (its inputs before the first advance), with
        the maps ``map_cached`` asked for applied."""
        batch = self.cache[i] if i < len(self.cache) else self.batches[i]
        for blob, functions in self._pending.items():
            if blob in batch:
                for function in functions:
                    batch[blob] = function(batch[blob])
        return batch

    def live_batches(self):
        """Every batch's live blobs in order, read one batch at a time."""
        return (self.live(i) for i in range(len(self)))

    def advance(self, end, on_batch=None):
        """Forward every batch through layers (position, end]; call ``on_batch(i)`` while its blobs are set.

        The range is cut after every Dropout layer, so that each Dropout layer runs over all batches in
        a row: with one serial generator for all Dropout layers (Caffe's), image n gets the same mask
        whatever the batch size (a range with two of them would interleave their draws batch by batch)."""
        if end <= self.position or (on_batch is None and self._inputs_only(end)):
            return                    # (the blobs of input layers are the stored sample: no copy of it)
        noise = self.description.noise_layers()
        for stop in [i for i in noise if self.position < i < end] + [end]:
            self._advance_to(stop, on_batch if stop == end else None)

    def _inputs_only(self, end):
        """Whether nothing was stored yet and the layers up to ``end`` (inclusive) are all net inputs."""
        return not len(self.cache) and all(op.rule == INPUT for op in self.description.ops[:end + 1])

    def _advance_to(self, end, on_batch):
        names = self.net.layer_names
        keep = self.description.live_after(end, self.used)
        for i in range(len(self)):
            load_blobs(self.net, self.live(i))
            with forward_only(self.net):
                self.net.forward(start=names[self.position + 1], end=names[end])
            if on_batch is not None:
                on_batch(i)
            live = {name: np.array(self.net.blobs[name].data, dtype=np.float32) for name in keep}
            if i < len(self.cache):
                self.cache[i] = live
            else:
                self.cache.append(live)
        self._pending = {}                    # applied to what the forward read: the new blobs have them
        self.position = end

    def map_cached(self, blob, function):
        """Replace every batch's cached ``blob`` by ``function(array)`` (no-op where it is not live).

        Applied when a batch is read (``live``), not by rewriting the cache: the next ``advance``
        forwards the mapped blobs and stores what follows from them."""
        self._pending.setdefault(blob, []).append(function)

    def full_passes(self):
        """Iterate over batches with only the inputs loaded into the net (for full forward/backward passes).

        The progress bar, if any, is labelled ``pass_label`` (set by the pass that asks)."""
        for batch in self.bar(self.batches, self.pass_label, total=len(self)):
            load_blobs(self.net, batch)
            yield batch

    def blocks(self, block, images=None):
        """The sample's batches grouped into blocks of ``block`` images: yields, per block, the list of
        its batches, not loaded (``load_blobs``). Batches never straddle a block and blocks are fixed by
        image index, whatever ``batch_size`` is, so that a statistic gathered per block (an accumulated
        weight gradient, masks drawn from a generator seeded per block) does not depend on it. One
        block's batches are read at a time. ``images``: only the sample's first that many images."""
        bounds = batch_bounds(self._count(images), self.batch_size, block)
        reader = _ImageRanges(self.batches)
        grouped = []
        for first, stop in bounds:
            if first % block == 0 and grouped:
                yield grouped
                grouped = []
            grouped.append(reader.images(first, stop))
        if grouped:
            yield grouped

    def block_count(self, block, images=None):
        """How many blocks ``blocks(block, images)`` yields."""
        return -(-self._count(images) // block)

    def _count(self, images):
        """``images`` capped at the sample's size (None: the whole sample)."""
        return self.images() if images is None else max(1, min(int(images), self.images()))

    def close(self):
        """Remove the live blobs' temporary files (also done when the runner is collected)."""
        self.cache.close()


class _ImageRanges:
    """Images [first, stop) of a BatchStore as one ``{blob: array}`` batch, reading each stored batch
    once while the ranges asked for move forward."""

    def __init__(self, store):
        self.store = store
        self.starts = np.cumsum([0] + [store.images(i) for i in range(len(store))])
        self._index, self._batch = -1, None

    def _stored(self, i):
        if i != self._index:
            self._index, self._batch = i, self.store[i]
        return self._batch

    def images(self, first, stop):
        pieces = []
        for i in range(int(np.searchsorted(self.starts, first, side="right")) - 1, len(self.store)):
            begin, end = self.starts[i], self.starts[i + 1]
            if begin >= stop:
                break
            batch = self._stored(i)
            pieces.append({name: a[max(first, begin) - begin:min(stop, end) - begin] for name, a in batch.items()})
        if len(pieces) == 1:
            return pieces[0]
        return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
