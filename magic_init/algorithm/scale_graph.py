"""Which blob channels carry which affine layer's scale, and where a scale cannot pass.

Rescaling affine layer k by a positive factor r multiplies its output z_k by r. Through
positively homogeneous layers of degree 1 (ReLU, PReLU, max/avg Pooling, Dropout, Split, Concat,
Flatten/Reshape, Crop, AbsVal) the factor reaches the next affine layer unchanged, per channel,
where it can be undone exactly by dividing the weight columns that read those channels. LRN is
passed as approximately homogeneous (exact when α/n·Σx² ≪ k). The rules elsewhere:

* Eltwise SUM/MAX: every summed channel must carry the same factor — the producing layers are
  *tied* into one scale group.
* Anything else (Sigmoid, TanH, BatchNorm, Scale, Power, Eltwise PROD, Softmax, unknown types):
  a *barrier*. The layers whose scale reaches it are *pinned* (never rescaled) and the
  barrier's outputs carry no factor. (BatchNorm in TEST uses fixed statistics, so a factor in
  front of it would change the function; we pin rather than fold it into the BN statistics.)

Sources are int arrays over a blob's channels (axis 1): the index of the producing affine layer
in ``affine`` order, or -1 for "no factor" (net inputs, barrier outputs).
"""
from __future__ import annotations

import logging

import numpy as np

from magic_init.algorithm import netinfo

log = logging.getLogger(__name__)

PASS_TYPES = ("ReLU", "PReLU", "Pooling", "LRN", "Dropout", "Split", "Crop", "AbsVal")
RESHAPE_TYPES = ("Flatten", "Reshape")


class ScaleGraph:
    """Scale groups of the affine layers ``affine`` (indices into net.layer_names) up to layer ``last``."""

    def __init__(self, net, last):
        self.net = net
        self.affine = [i for i in netinfo.affine_layers(net) if i <= last]
        self.names = [net.layer_names[i] for i in self.affine]
        self.parent = list(range(len(self.affine)))
        self.pinned_ids = set()
        self.columns = {}
        self.sources = {}
        self._trace(last)
        self.outputs = [self.sources.get(b) for b in netinfo.output_blobs(net, last)]

    def group(self, k):
        """Root of affine layer k's scale group (union-find)."""
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def pinned(self, k):
        return any(self.group(p) == self.group(k) for p in self.pinned_ids)

    def _tie(self, a, b):
        """Require equal factors on source arrays a and b (elementwise); -1 against a layer pins it."""
        for x, y in zip(a.ravel(), b.ravel()):
            if x >= 0 and y >= 0:
                self.parent[self.group(x)] = self.group(y)
            elif x >= 0 or y >= 0:
                self.pinned_ids.add(max(x, y))

    def _barrier(self, name, kind, bottoms):
        stopped = sorted({int(s) for src in bottoms if src is not None for s in np.unique(src) if s >= 0})
        if stopped:
            log.info("layer '%s' (%s) is not homogeneous: %s keep their scale",
                     name, kind, ", ".join(self.names[s] for s in stopped))
        self.pinned_ids.update(stopped)

    def _channels(self, blob):
        shape = self.net.blobs[blob].data.shape
        return shape[1] if len(shape) > 1 else 1

    def _trace(self, last):
        net = self.net
        for blob in net.inputs:
            self.sources[blob] = np.full(self._channels(blob), -1)
        position = {index: k for k, index in enumerate(self.affine)}
        for i in range(last + 1):
            name, kind = net.layer_names[i], net.layer_types[i]
            bottoms, tops = net.bottom_names[name], net.top_names[name]
            srcs = [self.sources.get(b) for b in bottoms]
            if i in position:
                self.columns[name] = self._column_sources(name, kind, srcs[0])
                self.sources[tops[0]] = np.full(self._channels(tops[0]), position[i])
                continue
            outs = self._propagate(name, kind, bottoms, tops, srcs)
            for top, src in zip(tops, outs):
                self.sources[top] = src if src is not None else np.full(self._channels(top), -1)

    def _propagate(self, name, kind, bottoms, tops, srcs):
        """Source arrays of the tops of a non-affine layer (None entries mean 'no factor')."""
        if kind in netinfo.INPUT_TYPES or not bottoms:
            return [None] * len(tops)
        if kind in PASS_TYPES:
            return [srcs[0]] * len(tops)
        if kind == "Concat" and self._axis(name, "concat_param") == 1:
            return [np.concatenate(srcs)]
        if kind in RESHAPE_TYPES:
            return [self._reshaped(srcs[0], bottoms[0], tops[0])]
        if kind == "Eltwise" and self._eltwise_op(name) != 0:
            for other in srcs[1:]:
                self._tie(srcs[0], other)
            return [srcs[0]]
        self._barrier(name, kind, srcs)
        return [None] * len(tops)

    def _reshaped(self, src, bottom, top):
        """Channel sources after Flatten/Reshape: copied, expanded per spatial unit, or made uniform."""
        channels, bshape = self._channels(top), self.net.blobs[bottom].data.shape
        if channels == len(src):
            return src
        spatial = int(np.prod(bshape[2:])) if len(bshape) > 2 else 1
        if channels == len(src) * spatial:
            return np.repeat(src, spatial)
        for other in src[1:]:
            self._tie(src[:1], np.array([other]))
        return np.full(channels, src[0])

    def _column_sources(self, name, kind, src):
        """Source per weight column: per bottom channel (conv/deconv) or per flattened unit (InnerProduct)."""
        if kind != "InnerProduct":
            return src
        bottom = self.net.blobs[self.net.bottom_names[name][0]].data
        spatial = int(np.prod(bottom.shape[2:])) if bottom.ndim > 2 else 1
        return np.repeat(src, spatial)

    def _axis(self, name, field):
        param = netinfo.layer_param(self.net, name)
        return int(getattr(param, field).axis) if param is not None else 1

    def _eltwise_op(self, name):
        """EltwiseParameter.operation: PROD = 0, SUM = 1 (default), MAX = 2."""
        param = netinfo.layer_param(self.net, name)
        return int(param.eltwise_param.operation) if param is not None else 1
