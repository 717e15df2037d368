"""``Net``: the built-in engine's network, with pycaffe's ``caffe.Net`` vocabulary.

``Net`` instantiates a Caffe NetParameter as Caffe's ``Net::Init`` does (layers from the registry,
parameter blobs from their fillers, shared by ParamSpec name, loss weights) and runs it with the
engine's core, ``magic_init.engine.graph.LayerGraph`` (forward, backward, gradient records, releasing).
"""
from __future__ import annotations

import functools
import os
from collections import OrderedDict

import numpy as np
import torch

from magic_init import netgraph
from magic_init.adapters.caffe import describe
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

from . import building, fillers, runtime
from .blob import Blob
from .graph import LayerGraph, known_names
from .layers import create_layer

_PHASE_NAMES = {caffe_pb2.TRAIN: "train", caffe_pb2.TEST: "test"}


class Net(LayerGraph):
    """A Caffe net run by PyTorch (gradient recording: ``magic_init.engine.graph``).

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
        self._setup_shapes(create=True)
        self.inputs = [t for p in specs if p.type == "Input" for t in p.top]
        lr_mults = [[spec.param[j].lr_mult if j < len(spec.param) else 1.0
                     for j in range(len(layer.blobs))] for spec, layer in zip(specs, self.layers)]
        self._init_graph(building.backward_needs(self.layers, list(self.bottom_names.values()),
                                                 list(self.top_names.values()), lr_mults,
                                                 self.net_param.force_backward))
        self._set_loss_diffs()

    @functools.cached_property
    def description(self):
        """The algorithm's neutral description of this net (``adapters.caffe.describe``), built once."""
        return describe(self)

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
            known = known_names("blobs made by the layers before it", self.blobs)
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

    def reshape(self):
        """Propagate new input blob shapes (set with ``blobs[name].reshape``) through the net."""
        self._setup_shapes(create=False)
        self._records = [None] * len(self.layers)
        self._set_loss_diffs()

    # ------------------------------------------------------------------ weights
    def copy_from(self, path):
        """Load weights by layer name with Caffe's rules (magic_init.io.match_weights)."""
        from magic_init.io import match_weights, read_caffemodel
        model = read_caffemodel(os.fspath(path))
        shapes = OrderedDict((name, [b.shape for b in blobs]) for name, blobs in self.params.items())
        for name, arrays in match_weights(model.weights, shapes, os.fspath(path)).items():
            for blob, array in zip(self.params[name], arrays):
                blob.copy_data_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))

    def save(self, path):
        """Write the instantiated net with its current weights as a caffemodel (like pycaffe)."""
        from magic_init.io import write_caffemodel
        live = OrderedDict((name, [b.data for b in blobs]) for name, blobs in self.params.items())
        write_caffemodel(os.fspath(path), self.net_param, live)
