"""``LayerGraph``: the engine's running core, a list of layers over named blobs with pycaffe's
``caffe.Net`` vocabulary (forward, backward, blobs, params). ``magic_init.engine.Net`` builds one
from a Caffe NetParameter, ``magic_init.adapters.torch_fx.TorchNet`` from a traced ``torch.nn.Module``.

A layer (``magic_init.engine.layers.base.Layer``) computes its tops from its bottoms and parameters as a
pure function of torch tensors. Gradients: ``forward()`` records, per layer that needs backward, either
its bottoms, parameters, tops and what its ``forward_for_backward`` saved (layers with a hand-written
``backward``: Convolution, Pooling, InnerProduct, LRN; ``_HandWrittenRecord``) or a small autograd
graph whose leaves are detached views of the bottoms and parameters; the layer objects keep no
per-forward state, so a record is all that one forward hands to backward. ``backward()``
walks the layers in reverse and computes each layer's bottom and parameter gradients from the
current top diffs. So blob diffs are overwritten, parameter diffs accumulate until ``clear_param_diffs()``,
Split tops' diffs add up, and diffs written into blobs between layers are honoured, as in Caffe.
A forward under ``with net.no_grad():`` or ``forward(..., no_backward=True)`` records nothing
(less memory, a bit faster); a ``backward()`` after it raises BackendError.

Under ``with net.releasing(keep):`` passes free what they no longer need (for a caller that does
one backward per forward and reads blobs while the passes run, as Algorithm 2's RateMeter does): a
forward drops a blob's data once the last layer reading it ran, a backward drops each layer's record
once its backward ran and a blob's diff once the layer that wrote the blob ran backward; net inputs
and the blobs in ``keep`` are never dropped. A dropped blob reads as zeros afterwards.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

from magic_init.errors import BackendError, NetDefinitionError

from .gradients import layer_gradients


class LayerGraph:
    """Layers over named blobs, run forward and backward (see the module docstring).

    A subclass builds the graph and then calls ``_init_graph``; it sets before that:
    ``layers`` (Layer objects, in execution order), ``layer_names``, ``layer_types``,
    ``bottom_names``/``top_names`` (``{layer name: [blob names]}``), ``blobs`` (``{name: Blob}``, every
    top shaped), ``params`` (``{layer name: [parameter Blobs]}``), ``inputs`` (blob names) and
    ``torch_device``.
    """

    def _init_graph(self, plan):
        """Bookkeeping of the running core, once the graph is built.

        Args:
            plan: the ``building.BackwardPlan`` (which layers, bottoms and parameters need backward).
        """
        self._bottoms = [list(self.bottom_names[name]) for name in self.layer_names]
        self._tops = [list(self.top_names[name]) for name in self.layer_names]
        self._last_reader = {b: i for i, bottoms in enumerate(self._bottoms) for b in bottoms}
        self._records = [None] * len(self.layers)
        self._plan = plan
        self._recording = True
        self._release = None             # the blobs never dropped, inside releasing(); else None
        self.outputs = self._output_names()

    @property
    def layer_dict(self):
        """{layer name: layer} like pycaffe's ``net.layer_dict``."""
        return OrderedDict(zip(self.layer_names, self.layers))

    def _output_names(self):
        """Blobs no later layer reads, sorted by name (Caffe keeps them in a std::set)."""
        available = set()
        for name in self.layer_names:
            available.difference_update(self.bottom_names[name])
            available.update(self.top_names[name])
        return sorted(available)

    @contextlib.contextmanager
    def no_grad(self):
        """Forward passes inside record no gradients (backward() after them raises)."""
        previous, self._recording = self._recording, False
        try:
            yield self
        finally:
            self._recording = previous

    @contextlib.contextmanager
    def releasing(self, keep=()):
        """Passes inside free what they no longer need (see the module docstring): a blob's data
        after its last reader ran forward, a layer's record after its backward, a blob's diff after
        its writer ran backward. A second backward after one forward raises BackendError.

        Args:
            keep: Names of blobs whose data and diff are never dropped (net inputs never are).
        """
        previous, self._release = self._release, frozenset(keep) | frozenset(self.inputs)
        try:
            yield self
        finally:
            self._release = previous

    @contextlib.contextmanager
    def without_weight_diffs(self, names):
        """Backward passes inside compute no gradient for the weight blob (parameter 0) of the layers
        ``names`` (their bias and bottom gradients as before); those weight diffs keep their values.
        For a caller that takes what it needs from the layer's bottom and top diff instead (the
        weight gradient of an InnerProduct layer is the size of its weights)."""
        indices = [self._index(name, None) for name in names]
        previous = [self._plan.params[i][:1] for i in indices]
        for i in indices:
            self._plan.params[i][:1] = [False] * len(self._plan.params[i][:1])
        try:
            yield self
        finally:
            for i, value in zip(indices, previous):
                self._plan.params[i][:1] = value

    @contextlib.contextmanager
    def train_dropout(self, seed=0):
        """Dropout layers run as in TRAIN phase inside (y = x·mask/(1-p)); every other layer keeps
        its phase (BatchNorm keeps its stored statistics). For measuring what training sees without
        changing any blob. Each Dropout layer draws its masks from its own torch generator, seeded
        by (``seed``, its position among the Dropout layers): its draws are one serial stream, so
        image n gets the same mask however the images are cut into batches (layers do not
        interleave their draws), and the global torch generator is not touched."""
        dropouts = [layer for layer in self.layers if layer.type == "Dropout"]
        previous = [(layer.phase, layer.generator) for layer in dropouts]
        for k, layer in enumerate(dropouts):
            layer.phase = "train"
            layer.generator = torch.Generator(device=self.torch_device)
            layer.generator.manual_seed(int(np.random.SeedSequence([seed, k]).generate_state(1)[0]))
        try:
            yield self
        finally:
            for layer, (phase, generator) in zip(dropouts, previous):
                layer.phase, layer.generator = phase, generator

    def _index(self, name, default):
        if name is None:
            return default
        try:
            return self.layer_names.index(name)
        except ValueError:
            raise NetDefinitionError("no layer named %r in the net (%s)"
                                     % (name, known_names("known layers", self.layer_names))) from None

    def forward(self, blobs=None, start=None, end=None, no_backward=False, **inputs):
        """Run layers ``start``..``end`` (names, inclusive); ``inputs`` fill blobs first.

        Returns {name: data} for ``end``'s tops (or the net outputs) and the named ``blobs``."""
        for name, value in inputs.items():
            self.set_blob_data(name, value)
        first, last = self._index(start, 0), self._index(end, len(self.layers) - 1)
        record = self._recording and not no_backward
        for i in range(first, last + 1):
            self._forward_layer(i, record)
        names = list(self.top_names[end]) if end is not None else list(self.outputs)
        return OrderedDict((n, self.blobs[n].data) for n in names + list(blobs or ()))

    def set_blob_data(self, name, value):
        """Copy an array or tensor into blob ``name`` (same shape required)."""
        blob = self.blobs.get(name)
        if blob is None:
            raise NetDefinitionError("no blob named %r in the net (%s)"
                                     % (name, known_names("known blobs", self.blobs)))
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(value, dtype=np.float32))
        if tuple(tensor.shape) != blob.shape:
            raise NetDefinitionError("blob %r has shape %s, got %s: reshape the blob and call "
                                     "net.reshape() first" % (name, blob.shape, tuple(tensor.shape)))
        blob.copy_data_(tensor)

    def _forward_layer(self, i, record):
        layer = self.layers[i]
        if layer.type == "Input":
            return
        try:
            tops = self._run_layer(i, layer, record)
        except RuntimeError as error:     # torch's shape errors, e.g. after blobs[...].reshape
            raise NetDefinitionError("%s: forward failed on bottoms of shapes %s: %s"
                                     % (layer.where(), [self.blobs[b].shape for b in self._bottoms[i]],
                                        str(error).split("\n")[0])) from None
        for name, tensor in zip(self._tops[i], tops):
            self.blobs[name].set_tensor(tensor)
        if self._release is not None:
            self._drop_read_data(i)

    def _drop_read_data(self, i):
        """Inside releasing(): drop the data of the bottoms layer ``i`` was the last to read."""
        for name in set(self._bottoms[i]) - set(self._tops[i]) - self._release:
            if self._last_reader.get(name) == i:
                self.blobs[name].drop_data()

    def _run_layer(self, i, layer, record):
        """The layer's tops; records what backward() will need when ``record``."""
        bottoms = [self.blobs[b].tensor() for b in self._bottoms[i]]
        params = [b.tensor() for b in layer.blobs]
        if record and self._plan.layer[i] and layer.has_hand_written_backward():
            with torch.no_grad():
                tops, saved = layer.forward_for_backward(bottoms, params)
            kept_bottoms = bottoms if layer.backward_reads_bottoms else None
            kept_tops = tops if layer.backward_reads_tops else None
            self._records[i] = _HandWrittenRecord(kept_bottoms, params, kept_tops, saved,
                                                  _versions(_kept(kept_bottoms, params, kept_tops)))
        elif record and self._plan.layer[i]:
            leaves = [t.detach().requires_grad_(need)
                      for t, need in zip(bottoms + params, self._plan.bottoms[i] + self._plan.params[i])]
            with torch.enable_grad():
                tops = layer.forward(leaves[:len(bottoms)], leaves[len(bottoms):])
            self._records[i] = (leaves, tops)
        else:
            with torch.no_grad():
                tops = layer.forward(bottoms, params)
            self._records[i] = None
        return tops

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """Backpropagate from layer ``start`` down to ``end`` (names, inclusive); ``top_diffs``
        set blob diffs first. Returns {name: diff} for ``end``'s bottoms (or the net inputs)
        and the named ``diffs``."""
        for name, value in top_diffs.items():
            self.blobs[name].diff[...] = value if not isinstance(value, torch.Tensor) \
                else value.detach().cpu().numpy()
        first, last = self._index(start, len(self.layers) - 1), self._index(end, 0)
        for i in range(first, last - 1, -1):
            if self._plan.layer[i]:
                self._backward_layer(i)
                if self._release is not None:
                    self._drop_backward_state(i)
        names = list(self.bottom_names[end]) if end is not None else list(self.inputs)
        return OrderedDict((n, self.blobs[n].diff) for n in names + list(diffs or ()))

    def _drop_backward_state(self, i):
        """Inside releasing(): forget layer ``i``'s record and the diffs of the tops it wrote (not
        in place) once its backward ran: no other layer reads them."""
        self._records[i] = None
        for name in set(self._tops[i]) - set(self._bottoms[i]) - self._release:
            self.blobs[name].drop_diff()

    def _backward_layer(self, i):
        layer, record = self.layers[i], self._records[i]
        if record is None:
            raise BackendError("%s: backward() needs a forward() that recorded gradients (the last "
                               "one ran under no_grad()/no_backward=True, or not at all)"
                               % layer.where())
        top_diffs = [self.blobs[name].diff_tensor() for name in self._tops[i]]
        if isinstance(record, _HandWrittenRecord):
            self._hand_written_backward(i, record, top_diffs)
            return
        leaves, tops = record                   # autograd: the leaves and tops of the layer's graph
        try:
            grads = layer_gradients(leaves, tops, top_diffs)
        except RuntimeError as error:
            if "inplace operation" not in str(error):
                raise
            raise _overwritten_error(layer) from None
        num_bottoms = len(self._bottoms[i])
        for j, name in enumerate(self._bottoms[i]):
            if leaves[j].requires_grad:
                grad = grads[j] if grads[j] is not None else torch.zeros_like(leaves[j])
                self.blobs[name].set_diff_tensor(grad)
        for j, blob in enumerate(layer.blobs):
            grad = grads[num_bottoms + j]
            if grad is not None:
                blob.accumulate_diff(grad)

    def _hand_written_backward(self, i, record, top_diffs):
        layer = self.layers[i]
        if _versions(_kept(record.bottoms, record.params, record.tops)) != record.versions:
            raise _overwritten_error(layer)
        param_diffs = [blob.diff_for_update() if need else None
                       for blob, need in zip(layer.blobs, self._plan.params[i])]
        grads = layer.backward(record.bottoms, record.params, record.tops, record.saved, top_diffs,
                               self._plan.bottoms[i], param_diffs)
        for name, need, grad in zip(self._bottoms[i], self._plan.bottoms[i], grads):
            if need:
                self.blobs[name].set_diff_tensor(grad)

    def clear_param_diffs(self):
        for blobs in self.params.values():
            for blob in blobs:
                blob.zero_diff()

    def weights(self):
        """{layer: [array copies]} of every layer with parameters."""
        return OrderedDict((name, [b.data.copy() for b in blobs])
                           for name, blobs in self.params.items())


class _HandWrittenRecord(NamedTuple):
    """What one forward of a layer with its own ``backward`` hands to it (no autograd graph).
    Bottoms or tops the layer's backward does not read (``Layer.backward_reads_bottoms``,
    ``backward_reads_tops``) are not kept (None), so that their memory can be freed."""
    bottoms: list       # or None
    params: list
    tops: list          # or None
    saved: object       # the layer's own state from forward_for_backward (None if it keeps none)
    versions: list      # torch's in-place counters of the kept bottoms, params and tops at forward time


def _kept(bottoms, params, tops):
    """The tensors a record keeps, in order: kept bottoms, parameters, kept tops."""
    return list(bottoms or ()) + list(params) + list(tops or ())


def known_names(kind, names, limit=20):
    """For one-line "no such name" errors: ``kind`` and the names in net order, the first
    ``limit`` of them and how many more."""
    names = list(names)
    if not names:
        return "no %s" % kind
    shown = ", ".join(repr(n) for n in names[:limit])
    more = " ... and %d more" % (len(names) - limit) if len(names) > limit else ""
    return "%s, in net order: %s%s" % (kind, shown, more)


def _versions(tensors):
    """torch's in-place modification counters: backward() refuses inputs changed since forward()."""
    return [t._version for t in tensors]


def _overwritten_error(layer):
    return BackendError("%s: a blob or parameter was overwritten through torch (e.g. copy_from) "
                        "after forward(); run forward() again before backward()" % layer.where())
