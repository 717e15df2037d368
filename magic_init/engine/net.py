"""``Net``: the built-in engine's network, with pycaffe's ``caffe.Net`` vocabulary.

Gradients: ``forward()`` records, per layer that needs backward, either its bottoms, parameters,
tops and what its ``forward_for_backward`` saved (layers with a hand-written ``backward``:
Convolution, Pooling, InnerProduct, LRN; ``_HandWrittenRecord``) or a small autograd graph whose
leaves are detached views of the bottoms and parameters; the layer objects keep no per-forward
state, so a record is all that one forward hands to backward. ``backward()``
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
import functools
import logging
import os
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

from magic_init import netgraph
from magic_init.adapters.caffe import describe
from magic_init.errors import BackendError, NetDefinitionError
from magic_init.proto import caffe_pb2

from . import building, fillers, runtime
from .blob import Blob
from .gradients import layer_gradients
from .layers import create_layer

log = logging.getLogger(__name__)
_PHASE_NAMES = {caffe_pb2.TRAIN: "train", caffe_pb2.TEST: "test"}


class Net:
    """A Caffe net run by PyTorch. See the module docstring for gradient recording.

    Args:
        net: The net definition: a prototxt path or a ``caffe_pb2.NetParameter`` (copied; legacy
            formats upgraded). It is instantiated as Caffe's ``Net::Init`` would.
        weights: Path of a caffemodel (binary, text or HDF5) whose weights are copied in by layer name
            (``copy_from``), or None (the default): the parameters keep their fillers' values.
        phase: "test" (the default) or "train" (any case), or a ``caffe_pb2`` Phase value.
        device: "cpu" (the default), "cuda" or "cuda:N".
        input_shapes: ``{top blob of an Input or data layer: shape}``, overriding the shapes Input
            layers declare and supplying those a data layer cannot infer; None (the default): none.
        level: The NetState level that selects layers by their include/exclude rules (default 0).
        stages: The NetState stages that select layers by their include/exclude rules (default ()).
        seed: Seed of the fillers' random draws (``numpy.random.default_rng``); None (the default)
            draws fresh entropy.
        instantiated: True when ``net`` is a NetParameter ``netgraph.instantiate`` returned (in
            ``phase``): it is built as it is, not instantiated again (default False).
        unfilled: Names of layers whose parameter blobs start at zero, their fillers not drawn (for
            a caller that sets them anyway; CaffeNet's fc6 filler alone is 38M random draws).

    Returns:
        The constructed ``Net``, with pycaffe's ``blobs``, ``params``, ``layer_names``, ``layer_types``,
        ``inputs``, ``outputs`` and the instantiated ``net_param``.
    """

    def __init__(self, net, weights=None, phase="test", device="cpu", input_shapes=None,
                 level=0, stages=(), seed=None, instantiated=False, unfilled=()):
        self.phase = _PHASE_NAMES[netgraph.phase_value(phase)]
        self.torch_device = building.resolve_device(device)
        if self.torch_device.type == "cuda":
            runtime.exact_float32_on_cuda()
        self.device = str(self.torch_device)             # "cpu", "cuda", "cuda:1"
        self.net_param = netgraph.net_to_build(net, self.phase, level, stages, input_shapes, instantiated)
        self._recording = True
        self._release = None             # the blobs never dropped, inside releasing(); else None
        self._rng = np.random.default_rng(seed)
        self._unfilled = frozenset(unfilled)
        self._build()
        if weights is not None:
            self.copy_from(weights)

    # ------------------------------------------------------------------ construction
    def _build(self):
        specs = list(self.net_param.layer)
        self.layers = [create_layer(p, _PHASE_NAMES[p.phase]) for p in specs]
        self.layer_names = [p.name for p in specs]
        self._layer_names = self.layer_names
        self.layer_types = [p.type for p in specs]
        self.bottom_names = OrderedDict((p.name, list(p.bottom)) for p in specs)
        self.top_names = OrderedDict((p.name, list(p.top)) for p in specs)
        self.blobs = OrderedDict()
        self.params = OrderedDict()
        self._shared = {}
        self._records = [None] * len(specs)
        self._setup_shapes(create=True)
        self.inputs = [t for p in specs if p.type == "Input" for t in p.top]
        self.outputs = self._output_names()
        self._last_reader = {b: i for i, p in enumerate(specs) for b in p.bottom}
        lr_mults = [[spec.param[j].lr_mult if j < len(spec.param) else 1.0
                     for j in range(len(layer.blobs))] for spec, layer in zip(specs, self.layers)]
        self._plan = building.backward_needs(self.layers, list(self.bottom_names.values()),
                                             lr_mults, self.net_param.force_backward)
        self._set_loss_diffs()

    @functools.cached_property
    def description(self):
        """The algorithm's neutral description of this net (``adapters.caffe.describe``), built once."""
        return describe(self)

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

    def _setup_shapes(self, create):
        """Give every top blob its shape (and, when ``create``, make the parameter blobs)."""
        for i, layer in enumerate(self.layers):
            if layer.type == "Input":
                for top, shape in zip(layer.param.top, layer.top_shapes()):
                    self._shape_blob(top, shape, keep_existing=not create)
                continue
            bottom_shapes = [self._blob(b, layer).shape for b in layer.param.bottom]
            param_shapes = [tuple(s) for s in layer.param_shapes(bottom_shapes)]
            if create:
                layer.blobs = self._make_params(layer, param_shapes)
                if layer.blobs:
                    self.params[layer.name] = layer.blobs
            elif param_shapes != [b.shape for b in layer.blobs]:
                raise NetDefinitionError("%s: new input shapes need parameter shapes %s, the net "
                                         "has %s" % (layer.where(), param_shapes,
                                                     [b.shape for b in layer.blobs]))
            shapes = building.top_shapes(layer, bottom_shapes, param_shapes)
            if create:
                building.check_single_source(layer, self.blobs)
            for top, shape in zip(layer.param.top, shapes):
                self._shape_blob(top, shape)

    def _blob(self, name, layer):
        if name not in self.blobs:
            known = _known_names("blobs made by the layers before it", self.blobs)
            raise NetDefinitionError("%s: unknown bottom blob %r (%s)" % (layer.where(), name, known))
        return self.blobs[name]

    def _shape_blob(self, name, shape, keep_existing=False):
        if name not in self.blobs:
            self.blobs[name] = Blob(shape, self.torch_device, name)
        elif not keep_existing:
            self.blobs[name].reshape(*shape)

    def _make_params(self, layer, shapes):
        """Parameter blobs filled by the layer's fillers; shared by ParamSpec name as in Caffe."""
        blobs, layer_fillers = [], layer.fillers()
        building.check_param_memory(layer, shapes)
        for j, shape in enumerate(shapes):
            spec_name = layer.param.param[j].name if j < len(layer.param.param) else ""
            if spec_name and spec_name in self._shared:
                blobs.append(self._shared[spec_name])
                continue
            blob = Blob(shape, self.torch_device, "%s[%d]" % (layer.name, j))
            filler = layer_fillers[j] if j < len(layer_fillers) and layer.name not in self._unfilled else None
            if filler is not None:
                values = fillers.fill(filler, shape, self._rng, "%s blob %d" % (layer.where(), j))
                blob.set_tensor(torch.from_numpy(values).to(self.torch_device))
            if spec_name:
                self._shared[spec_name] = blob
            blobs.append(blob)
        return blobs

    def _set_loss_diffs(self):
        """Caffe's SetLossWeights: a loss top's diff holds its loss weight."""
        self._loss_weights = {}
        for layer in self.layers:
            for j, top in enumerate(layer.param.top):
                weight = (layer.param.loss_weight[j] if j < len(layer.param.loss_weight)
                          else layer.default_loss_weight(j))
                if weight:
                    self._loss_weights[top] = weight
                    blob = self.blobs[top]
                    blob.set_diff_tensor(torch.full(blob.shape, float(weight), device=self.torch_device))

    # ------------------------------------------------------------------ running
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
        dropouts = [layer for layer, kind in zip(self.layers, self.layer_types) if kind == "Dropout"]
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
                                     % (name, _known_names("known layers", self.layer_names))) from None

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
                                     % (name, _known_names("known blobs", self.blobs)))
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
                                     % (layer.where(), [self.blobs[b].shape for b in layer.param.bottom],
                                        str(error).split("\n")[0])) from None
        for name, tensor in zip(layer.param.top, tops):
            self.blobs[name].set_tensor(tensor)
        if self._release is not None:
            self._drop_read_data(i, layer)

    def _drop_read_data(self, i, layer):
        """Inside releasing(): drop the data of the bottoms layer ``i`` was the last to read."""
        for name in set(layer.param.bottom) - set(layer.param.top) - self._release:
            if self._last_reader.get(name) == i:
                self.blobs[name].drop_data()

    def _run_layer(self, i, layer, record):
        """The layer's tops; records what backward() will need when ``record``."""
        bottoms = [self.blobs[b].tensor() for b in layer.param.bottom]
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
        layer = self.layers[i]
        for name in set(layer.param.top) - set(layer.param.bottom) - self._release:
            self.blobs[name].drop_diff()

    def _backward_layer(self, i):
        layer, record = self.layers[i], self._records[i]
        if record is None:
            raise BackendError("%s: backward() needs a forward() that recorded gradients (the last "
                               "one ran under no_grad()/no_backward=True, or not at all)"
                               % layer.where())
        top_diffs = [self.blobs[name].diff_tensor() for name in layer.param.top]
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
        num_bottoms = len(layer.param.bottom)
        for j, name in enumerate(layer.param.bottom):
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
        for name, need, grad in zip(layer.param.bottom, self._plan.bottoms[i], grads):
            if need:
                self.blobs[name].set_diff_tensor(grad)

    def reshape(self):
        """Propagate new input blob shapes (set with ``blobs[name].reshape``) through the net."""
        self._setup_shapes(create=False)
        self._records = [None] * len(self.layers)
        self._set_loss_diffs()

    def clear_param_diffs(self):
        for blobs in self.params.values():
            for blob in blobs:
                blob.zero_diff()

    # ------------------------------------------------------------------ weights
    def copy_from(self, path):
        """Load weights by layer name with Caffe's rules (magic_init.io.match_weights)."""
        from magic_init.io import match_weights, read_caffemodel
        model = read_caffemodel(os.fspath(path))
        shapes = OrderedDict((name, [b.shape for b in blobs]) for name, blobs in self.params.items())
        for name, arrays in match_weights(model.weights, shapes, os.fspath(path)).items():
            for blob, array in zip(self.params[name], arrays):
                blob.copy_data_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))

    def weights(self):
        """{layer: [array copies]} of every layer with parameters."""
        return OrderedDict((name, [b.data.copy() for b in blobs])
                           for name, blobs in self.params.items())

    def save(self, path):
        """Write the instantiated net with its current weights as a caffemodel (like pycaffe)."""
        from magic_init.io import write_caffemodel
        live = OrderedDict((name, [b.data for b in blobs]) for name, blobs in self.params.items())
        write_caffemodel(os.fspath(path), self.net_param, live)


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


def _known_names(kind, names, limit=20):
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
