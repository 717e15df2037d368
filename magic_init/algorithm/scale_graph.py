"""Which blob channels carry which affine layer's scale, and where a scale cannot pass.

Rescaling affine layer k by a positive factor r multiplies its output z_k by r. Through a layer f
that is positively homogeneous of degree 1, f(r·x) = r·f(x) for every r > 0, the factor reaches the
next affine layer unchanged, per channel, where it is undone exactly by dividing the weight columns
that read those channels (paper §3.2: the rescaling by s_k in Algorithm 2 keeps the function only
through such layers). How a scale passes each layer is its ``Op.rule`` in the net's neutral
description (``algorithm.description``: passes, passes approximately, reshapes, concatenates, ties,
blocks, strips), which an adapter builds (for Caffe from ``magic_init.layer_facts.TABLE``). For a
Caffe net, these pass, in both modes:

* ReLU (max(r·x, 0) = r·max(x, 0)), PReLU (slope a: max(r·x, 0) + a·min(r·x, 0) = r·PReLU(x)),
  AbsVal (|r·x| = r·|x|), Dropout (the identity, or a fixed mask and factor), Split, Crop,
  Concat on axis 1 (each channel keeps its producer), Flatten/Reshape;
* Pooling: MAX (max r·x_i = r·max x_i), AVE (linear), STOCHASTIC in TEST (Σx_i²/Σx_i, degree 1).

LRN computes y_i = x_i·(k + α/n·Σ_{j∈N(i)} x_j²)^(-β): degree 1 only in the limit
α/n·Σx² ≪ k, degree 1−2β in the other limit. Without ``exact`` (initialization from scratch) it is
passed as approximately homogeneous and Algorithm 2's measurement rounds correct for the error.
With ``exact`` (rescaling a pretrained model, whose function must be kept up to one positive factor
on the output) it is a barrier like the layers below.

* Layers that are linear but move the channel axis (a transpose, a permute; ``MOVES``): one factor
  on all their input channels passes, so the layers whose factors reach them are tied into one.
* Eltwise SUM/MAX: every combined channel must carry the same factor — the producing layers are
  *tied* into one scale group (r·a + r·b = r·(a + b), max(r·a, r·b) = r·max(a, b)).
* Anything else (Sigmoid, TanH, BatchNorm, Power, Eltwise PROD, Softmax, unknown types, and
  LRN with ``exact``): a *barrier*. The layers whose scale reaches it are *pinned* (never rescaled)
  and the barrier's outputs carry no factor. (BatchNorm in TEST uses fixed statistics, so a factor in
  front of it would change the function; we pin rather than fold it into the BN statistics.)
* Scale layers with one bottom and a learned, unshared per-channel γ are *sources* like the affine
  layers (``DIAGONAL`` affine layers of the description, ``NetDescription.rescalable_layers``):
  y_c = γ_c·x_c + β_c is affine per channel with a diagonal
  weight, so γ, β ← Δ·γ, Δ·β multiplies its output by Δ, and column j = channel j undoes the factor
  its input carries. On BatchNorm nets (conv -> BatchNorm -> Scale -> ReLU) they are what Algorithm 2
  moves: the conv before each BatchNorm is held. Other Scale layers (γ from a second bottom, i.e.
  y = x·s of degree 2; γ shared, not learned, or not per channel) are barriers.
* With ``exact``, all channels of the net's outputs must carry one common factor: their producers
  are tied too (without ``exact`` each output may end up with its own factor).
* Layers sharing a parameter blob (``param { name: "w" }``) are tied, so that the blob gets one
  factor; sharing weights also ties their input columns j (W(:, j)·Δ/Δ_src(j) must be one array).

Every pinned layer has a reason (``held(k)``), naming the layer its scale cannot pass.

Sources are int arrays over a blob's channels (axis 1): the index of the producing rescalable layer
in ``affine`` order (affine and rescalable Scale layers), or -1 for "no factor" (net inputs, barrier
outputs).
"""
from __future__ import annotations

import logging

import numpy as np

from magic_init.algorithm import description as d

log = logging.getLogger(__name__)

NO_GRADIENT = "no gradient reaches it"
ZERO_INPUT = "its weight gradient is zero (so is its input)"
#: Its rate ‖∇W‖/‖W‖ is undefined (‖W‖ = 0) and no factor Δ·W can make it nonzero.
ZERO_WEIGHTS = "its weights are all zero"


def find_root(parent, k):
    """Root of k in the union-find forest ``parent`` (a list, compressed in place)."""
    while parent[k] != k:
        parent[k] = parent[parent[k]]
        k = parent[k]
    return k


class ScaleGraph:
    """Scale groups of the rescalable layers ``affine`` (indices into net.layer_names: the affine layers of
    the net's description, ``NetDescription.rescalable_layers``) up to layer ``last``.

    ``exact``: only exactly homogeneous layers pass a scale (LRN is a barrier) and the net's output
    channels share one factor, so that rescaling keeps the net's function up to one positive factor."""

    def __init__(self, net, last, exact=False):
        self.net = net
        self.description = d.describe(net)
        self.exact = bool(exact)
        self.affine = [i for i in self.description.rescalable_layers() if i <= last]
        self.names = [net.layer_names[i] for i in self.affine]
        self.parent = list(range(self._unit_count()))
        self.pinned_ids = set()
        self.reasons = {}
        self.columns = {}
        self.sources = {}
        self._trace(last)
        self._tie_shared(self.description.shared)
        self.outputs = [self.sources.get(b) for b in self.description.output_blobs(last)]
        if self.exact:
            self._tie_outputs()

    def group(self, k):
        """Root of affine layer k's scale group (union-find)."""
        return find_root(self.parent, k)

    def pinned(self, k):
        return any(self.group(p) == self.group(k) for p in self.pinned_ids)

    def pin(self, k, reason):
        """Pin affine layer k (and so its scale group); the first reason given is kept."""
        self.pinned_ids.add(int(k))
        self.reasons.setdefault(int(k), reason)

    def pin_layer(self, k, reason):
        """Pin every factor of rescalable layer k."""
        self.pin(k, reason)

    def held(self, k):
        """Why affine layer k keeps its scale (a sentence), or None when it is free."""
        if k in self.pinned_ids:
            return self.reasons.get(k, "pinned")
        for p in sorted(self.pinned_ids):
            if self.group(p) == self.group(k):
                return "shares one factor with '%s', which is held: %s" % (self.names[p], self.reasons.get(p, "pinned"))
        return None

    def held_reasons(self):
        """``{layer name: reason}`` of the pinned layers, in execution order."""
        reasons = ((name, self.held(k)) for k, name in enumerate(self.names))
        return {name: why for name, why in reasons if why is not None}

    def _tie(self, a, b, where, reason=None):
        """Require equal factors on source arrays a and b (elementwise); -1 against a layer pins it
        (``reason``, by default: ``where`` combines its channels with channels that carry no factor)."""
        pairs = np.unique(np.stack([np.ravel(a), np.ravel(b)], axis=1), axis=0) if np.size(a) else ()
        for x, y in pairs:
            if x >= 0 and y >= 0:
                self.parent[self.group(x)] = self.group(y)
            elif x >= 0 or y >= 0:
                self.pin(max(x, y), reason or "%s combines its channels with channels that carry no factor" % where)

    def _tie_shared(self, shared):
        """Layers sharing a parameter blob (Caffe's ``param { name }``) get one factor Δ, so the blob is
        scaled once; layers sharing weights W also need one factor per input column, since
        W(:, j)·Δ/Δ_src(j) is one array: their column sources are tied like Eltwise inputs."""
        position = {name: k for k, name in enumerate(self.names)}
        for (layer, j), (owner, _) in shared.items():
            if layer not in position or owner not in position:
                continue
            self._tie(self._layer_units(position[layer]), self._layer_units(position[owner]), None)
            if j == 0:
                self._tie(self.columns[owner], self.columns[layer], None,
                          "its output is read by the weights layers '%s' and '%s' share, whose other input "
                          "columns carry no factor" % (owner, layer))

    def _tie_outputs(self):
        """``exact``: one common factor on every output channel (the net's function up to one factor)."""
        sources = [src for src in self.outputs if src is not None]
        values = np.unique(np.concatenate(sources)) if sources else np.array([], dtype=int)
        if len(values) > 1:
            self._tie(np.full(len(values) - 1, values[0]), values[1:], "the net's output (one common factor)")

    def _barrier(self, op, bottoms, why=None):
        """Pin the layers whose factors reach ``op`` through ``bottoms`` (``why``: by default ``op.why``)."""
        stopped = sorted({int(s) for src in bottoms if src is not None for s in np.unique(src) if s >= 0})
        if not stopped:
            return
        name, label, why = op.name, op.label, why or op.why
        log.debug("layer '%s' (%s) is %s: %s keep their scale", name, label, why,
                  ", ".join(dict.fromkeys(self._label(s) for s in stopped)))
        for s in stopped:
            self.pin(s, "scale cannot pass layer '%s' (%s, %s)" % (name, label, why))

    def _label(self, source):
        """The layer a source id belongs to (here the id is the layer's index)."""
        return self.names[source]

    def _channels(self, blob):
        shape = tuple(self.net.blobs[blob].shape)
        return shape[1] if len(shape) > 1 else 1

    def _trace(self, last):
        net = self.net
        for blob in net.inputs:
            self.sources[blob] = np.full(self._channels(blob), -1)
        position = {index: k for k, index in enumerate(self.affine)}
        for op in self.description.ops[:last + 1]:
            bottoms, tops = net.bottom_names[op.name], net.top_names[op.name]
            srcs = [self.sources.get(b) for b in bottoms]
            if op.index in position:
                self.columns[op.name] = self._column_sources(op, srcs[0])
                self.sources[tops[0]] = self._own_sources(position[op.index], self._channels(tops[0]))
                continue
            outs = self._propagate(op, bottoms, tops, srcs)
            for top, src in zip(tops, outs):
                self.sources[top] = src if src is not None else np.full(self._channels(top), -1)

    def _unit_count(self):
        """Number of factors before ties: one per rescalable layer."""
        return len(self.affine)

    def _layer_units(self, k):
        """The ids of rescalable layer k's factors (here one: k)."""
        return np.array([k])

    def _own_sources(self, k, channels):
        """The source array of rescalable layer k's top: its index on every channel (one factor)."""
        return np.full(channels, k)

    def _propagate(self, op, bottoms, tops, srcs):
        """Source arrays of the tops of a non-affine layer (None entries mean 'no factor')."""
        rule = op.rule
        if rule == d.INPUT or not bottoms:
            return [None] * len(tops)
        if rule == d.PASSES or (rule == d.APPROX and not self.exact):
            if srcs[0] is not None and all(len(srcs[0]) == self._channels(t) for t in tops):
                return [srcs[0]] * len(tops)
            self._barrier(op, srcs, "changes the number of channels")   # a Crop of the channel axis
            return [None] * len(tops)
        if rule == d.CONCATENATES:
            return [np.concatenate(srcs)]
        if rule == d.RESHAPES:
            return [self._reshaped(srcs[0], bottoms[0], tops[0], "layer '%s' (%s)" % (op.name, op.label))]
        if rule == d.MOVES:
            return [self._uniform(srcs[0], self._channels(top), "layer '%s' (%s)" % (op.name, op.label))
                    for top in tops]
        if rule == d.TIES:
            for other in srcs[1:]:
                self._tie(srcs[0], other, "layer '%s' (%s)" % (op.name, op.label))
            return [srcs[0]]
        self._barrier(op, srcs)
        return [None] * len(tops)

    def _reshaped(self, src, bottom, top, where):
        """Channel sources after Flatten/Reshape: copied, expanded per spatial unit, or made uniform."""
        channels, bshape = self._channels(top), tuple(self.net.blobs[bottom].shape)
        if channels == len(src):
            return src
        spatial = int(np.prod(bshape[2:])) if len(bshape) > 2 else 1
        if channels == len(src) * spatial:
            return np.repeat(src, spatial)
        return self._uniform(src, channels, where)

    def _uniform(self, src, channels, where):
        """One factor for every channel: the sources of ``src`` tied, spread over ``channels`` channels."""
        self._tie(np.full(len(src) - 1, src[0]), src[1:], where)
        return np.full(channels, src[0])

    def _column_sources(self, op, src):
        """Source per weight column: per bottom channel (conv/deconv/diagonal) or per flattened unit (linear)."""
        if op.affine.kind != d.LINEAR:
            return src
        shape = tuple(self.net.blobs[self.net.bottom_names[op.name][0]].shape)   # not .data: no allocation
        spatial = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        return np.repeat(src, spatial)


class ChannelGraph(ScaleGraph):
    """A ScaleGraph with one factor per output channel of each convolution (``exact`` rescaling).

    Multiplying output channel c of convolution k (row c of W_k and b_k(c)) by d_c > 0 and dividing
    the weight columns that read channel c by d_c keeps the net's function exactly, through every
    layer that passes a scale per channel (ReLU: max(d·x, 0) = d·max(x, 0) for each channel; pooling,
    Dropout, Concat, Split). Per-layer factors are the special case d_c = Δ_k for all c. They are the
    freedom a residual net needs: in a block a-b-c whose output is added to the trunk, Π of the
    per-layer factors is fixed (``ChannelFactors``).

    Ids in the source arrays are *units*, one per (layer, output channel) of a convolution and one
    per other rescalable layer (linear, transposed-convolution and diagonal layers keep one factor, so their
    columns need only per-column statistics). Ties and pins act on units: an Eltwise SUM ties
    channel c of its inputs with channel c, a barrier pins only the channels that reach it, and
    ``exact`` ties every channel of the net's output into one factor."""

    #: Affine kinds whose output channels get their own factors.
    PER_CHANNEL = (d.CONV,)

    def _unit_count(self):
        self.units = []
        first = 0
        for i in self.affine:
            count = self._channels(self.net.top_names[self.net.layer_names[i]][0]) \
                if self.description.ops[i].affine.kind in self.PER_CHANNEL else 1
            self.units.append(np.arange(first, first + count))
            first += count
        self.unit_layer = np.concatenate([np.full(len(u), k) for k, u in enumerate(self.units)]) \
            if self.units else np.zeros(0, dtype=int)
        return first

    def _layer_units(self, k):
        return self.units[k]

    def _own_sources(self, k, channels):
        units = self.units[k]
        return units if len(units) == channels else np.full(channels, units[0])

    def _label(self, source):
        return self.names[self.unit_layer[source]]

    def pin_layer(self, k, reason):
        for unit in self.units[k]:
            self.pin(unit, reason)

    def _pinned_roots(self):
        return {self.group(p) for p in self.pinned_ids}

    def unit_pinned(self):
        """Boolean per unit: its factor is held (its group contains a pinned unit)."""
        roots = self._pinned_roots()
        return np.array([self.group(u) in roots for u in range(len(self.unit_layer))], dtype=bool)

    def pinned(self, k):
        roots = self._pinned_roots()
        return all(self.group(u) in roots for u in self.units[k])

    def held(self, k):
        """Why layer k keeps its scale: a sentence when every one of its channels is held, else None."""
        if not self.pinned(k):
            return None
        roots = {self.group(u) for u in self.units[k]}
        for p in sorted(self.pinned_ids):
            if self.group(p) in roots:
                owner = self.unit_layer[p]
                if owner == k:
                    return self.reasons.get(p, "pinned")
                return "shares one factor with '%s', which is held: %s" % (self.names[owner],
                                                                          self.reasons.get(p, "pinned"))
        return "pinned"
