"""Carry the sample through a net batch by batch, layer range by layer range.

``SampleRunner`` keeps, per batch, only the blobs that a later layer still reads (liveness
computed once from bottom/top names), as float32 copies. ``advance(end)`` restores a batch's
live blobs into ``net.blobs`` and runs ``net.forward(start=<next layer>, end=<end>)`` — so
Algorithm 1 forwards each layer once, not the whole prefix per initialized layer.
"""
from __future__ import annotations

import contextlib

import numpy as np

from magic_init.algorithm import netinfo
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

    ``progress`` (bool) asks the passes for progress bars; ``bar(iterable, desc)`` draws one then."""

    def __init__(self, net, sample, batch_size=None, progress=False):
        self.net = net
        self.sample = sample_arrays(sample, net)
        self.batch_size = batch_size
        self.batches = split_batches(self.sample, net, batch_size)
        self.used = netinfo.last_use(net)
        self.position = -1
        self.cache = [dict(batch) for batch in self.batches]
        self.progress = progress
        self.pass_label = "forward+backward"

    def bar(self, iterable, desc, total=None):
        """``iterable`` with a progress bar when this runner's ``progress`` is on (else unchanged)."""
        return progress_bar(iterable, total=total, desc=desc, enabled=self.progress)

    def __len__(self):
        return len(self.batches)

    def advance(self, end, on_batch=None):
        """Forward every batch through layers (position, end]; call ``on_batch(i)`` while its blobs are set.

        The range is cut after every Dropout layer, so that each Dropout layer runs over all batches in
        a row: with one serial generator for all Dropout layers (Caffe's), image n gets the same mask
        whatever the batch size (a range with two of them would interleave their draws batch by batch)."""
        if end <= self.position:
            return
        for stop in [i for i in range(self.position + 1, end) if self.net.layer_types[i] == "Dropout"] + [end]:
            self._advance_to(stop, on_batch if stop == end else None)

    def _advance_to(self, end, on_batch):
        names = self.net.layer_names
        keep = netinfo.live_after(self.net, end, self.used)
        for i, live in enumerate(self.cache):
            load_blobs(self.net, live)
            with forward_only(self.net):
                self.net.forward(start=names[self.position + 1], end=names[end])
            if on_batch is not None:
                on_batch(i)
            self.cache[i] = {name: np.array(self.net.blobs[name].data, dtype=np.float32) for name in keep}
        self.position = end

    def map_cached(self, blob, function):
        """Replace every batch's cached ``blob`` by ``function(array)`` (no-op where it is not live)."""
        for live in self.cache:
            if blob in live:
                live[blob] = function(live[blob])

    def full_passes(self):
        """Iterate over batches with only the inputs loaded into the net (for full forward/backward passes).

        The progress bar, if any, is labelled ``pass_label`` (set by the pass that asks)."""
        for batch in self.bar(self.batches, self.pass_label):
            load_blobs(self.net, batch)
            yield batch

    def blocks(self, block):
        """The sample's batches grouped into blocks of ``block`` images: a list (one entry per block)
        of lists of batches, not loaded (``load_blobs``). Batches never straddle a block and blocks are
        fixed by image index, whatever ``batch_size`` is, so that a statistic gathered per block (an
        accumulated weight gradient, masks drawn from a generator seeded per block) does not depend on it."""
        grouped, first = [], 0
        for batch in split_batches(self.sample, self.net, self.batch_size, block):
            if first % block == 0:
                grouped.append([])
            grouped[-1].append(batch)
            first += len(next(iter(batch.values())))
        return grouped
