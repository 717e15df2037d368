"""The pycaffe backend: real Caffe behind magic_init's Net interface.

``PycaffeNet`` builds ``caffe.Net`` from the same instantiated NetParameter the built-in engine
uses (magic_init.netgraph: phase filtering, data layers turned into inputs, splits), so layer and
blob names agree between backends. Everything pycaffe offers (``blobs``, ``params``, ``forward``,
``backward``, ``reshape``, ``inputs``, ``outputs``, ``top_names``, ``bottom_names``, ``layers``) is
passed through; what it lacks (``layer_names``, ``layer_types``, ``clear_param_diffs``, weight I/O
with clean errors and atomic writes) is added here. A CUDA device selects Caffe's GPU mode.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile

from google.protobuf import text_format

from magic_init import netgraph
from magic_init.adapters.caffe import describe
from magic_init.errors import BackendError
from magic_init.io import copy_weights, read_caffemodel, write_caffemodel
from magic_init.proto import caffe_pb2


def _select_device(caffe, device):
    """Caffe's global mode: set_mode_gpu + set_device for 'cuda[:N]', set_mode_cpu for 'cpu'."""
    if device == "cpu":
        caffe.set_mode_cpu()
        return
    if not device.startswith("cuda"):
        raise BackendError("unknown device %r; use cpu, cuda or cuda:N" % device)
    index = int(device.split(":")[1]) if ":" in device else 0
    try:
        caffe.set_mode_gpu()
        caffe.set_device(index)
    except Exception as e:  # a CPU-only Caffe build raises here
        raise BackendError("device %s asked for, but this Caffe cannot use a GPU (%s)" % (device, e))


class PycaffeNet:
    """A ``caffe.Net`` with magic_init's Net interface (see docs/ARCHITECTURE.md)."""

    def __init__(self, net, weights=None, phase="test", device="cpu", input_shapes=None,
                 level=0, stages=(), seed=None, instantiated=False):
        """Build ``caffe.Net`` from ``netgraph.net_to_build(net, ...)``, the engine's NetParameter.

        Args:
            net: A prototxt path or a ``caffe_pb2.NetParameter`` (legacy formats upgraded).
            weights: Path of a caffemodel copied in by layer name, or None (the default).
            phase: "test" (the default) or "train" (any case), or a ``caffe_pb2`` Phase value;
                ``self.phase`` is "train" or "test", and the net runs in that phase.
            device: "cpu" (the default), "cuda" or "cuda:N".
            input_shapes, level, stages: As for ``netgraph.instantiate``.
            seed: Caffe's generator is seeded with it before the net is built, so that the
                prototxt's fillers draw the same weights every time (None, the default: Caffe's
                own seeding), as the engine's ``seed``.
            instantiated: True when ``net`` is a NetParameter ``netgraph.instantiate`` returned (in
                ``phase``): it is built as it is (default False).
        """
        import caffe

        self.phase = netgraph.phase_name(phase)
        _select_device(caffe, device)
        if seed is not None:
            caffe.set_random_seed(int(seed))     # Caffe's fillers draw from its global generator
        self.net_param = netgraph.net_to_build(net, self.phase, level, stages, input_shapes, instantiated)
        self.device = device
        self._net = self._caffe_net(self._without_state_rules(self.net_param))
        self._dropout_twin = None
        if weights is not None:
            self.copy_from(weights)

    def _caffe_net(self, net_param):
        """caffe.Net of ``net_param`` in this net's phase (layers with an explicit ``phase`` keep theirs)."""
        import caffe

        with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
            f.write(text_format.MessageToString(net_param))
        try:
            return caffe.Net(f.name, caffe.TRAIN if self.phase == "train" else caffe.TEST)
        finally:
            os.unlink(f.name)

    @contextlib.contextmanager
    def train_dropout(self, seed=0):
        """Dropout layers run as in TRAIN phase inside; everything else as before.

        A twin caffe.Net whose Dropout layers carry an explicit ``phase: TRAIN`` (Caffe honours a
        layer's own phase) shares this net's weights (``share_with``: the same data arrays, its own
        diffs and activations) and stands in for it; Caffe's RNG is seeded with ``seed``."""
        import caffe

        if self._dropout_twin is None:
            param = self._without_state_rules(self.net_param)
            for layer in param.layer:
                if layer.type == "Dropout":
                    layer.phase = caffe_pb2.TRAIN
            self._dropout_twin = self._caffe_net(param)
            self._dropout_twin.share_with(self._net)
        caffe.set_random_seed(int(seed))
        main, self._net = self._net, self._dropout_twin
        try:
            yield self
        finally:
            self._net = main

    @staticmethod
    def _without_state_rules(net_param):
        """instantiate() already applied include/exclude; Caffe must not filter again by its own state.

        ``force_backward`` is set because Caffe skips the backward pass of layers under no loss, and
        the change rates backpropagate a random top gradient through deploy nets (as the built-in
        engine does, and as the original tool did)."""
        clean = caffe_pb2.NetParameter()
        clean.CopyFrom(net_param)
        clean.force_backward = True
        for layer in clean.layer:
            del layer.include[:]
            del layer.exclude[:]
        return clean

    def __getattr__(self, name):
        return getattr(self._net, name)

    @property
    def layer_names(self):
        return list(self._net._layer_names)

    @property
    def layer_types(self):
        return [layer.type for layer in self._net.layers]

    @functools.cached_property
    def description(self):
        """The algorithm's neutral description of this net (``adapters.caffe.describe``), built once."""
        return describe(self)

    def clear_param_diffs(self):
        for blobs in self._net.params.values():
            for blob in blobs:
                blob.diff[...] = 0

    def copy_from(self, path):
        """Load weights by layer name with Caffe's copy_from rules, but clean errors (no abort)."""
        copy_weights(read_caffemodel(path).weights, self._net.params, source_name=str(path))

    def save(self, path):
        """Write the current weights as a caffemodel of the instantiated net (atomically)."""
        weights = {name: [b.data.copy() for b in blobs] for name, blobs in self._net.params.items()}
        write_caffemodel(path, self.net_param, weights)
