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


def split_batches(sample, net, batch_size):
    """``[{input: array}]`` batches of the sample (a dict by input name, or one array for the first input)."""
    if not isinstance(sample, dict):
        sample = {net.inputs[0]: sample}
    missing = [name for name in sample if name not in net.blobs]
    if missing:
        raise DataError("sample blob(s) %s are not in the net (inputs: %s)" % (missing, list(net.inputs)))
    count = min(len(a) for a in sample.values())
    if count == 0:
        raise DataError("the sample is empty")
    size = batch_size or count
    return [{name: np.asarray(a[i:i + size], dtype=np.float32) for name, a in sample.items()}
            for i in range(0, count, size)]


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
        self.batches = split_batches(sample, net, batch_size)
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
        """Forward every batch through layers (position, end]; call ``on_batch(i)`` while its blobs are set."""
        names = self.net.layer_names
        if end <= self.position:
            return
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
