"""Algorithm 1 (paper §3.1): within-layer initialization.

For each affine layer k in topological order that is selected (all-zero weights, or every layer
with ``zero_all``, or every layer from ``zero_from`` on): draw W_k (gaussian or a data-driven
init of §3.3 from the layer's input patches), b_k = 0, forward the sample to z_k, and with the
per-output-channel mean μ(i) and standard deviation σ(i) over images and positions set

    W_k(i, :) ← W_k(i, :) / σ(i),        b_k(i) ← β − μ(i)/σ(i),

so that z_k(i) has mean β and unit variance on the sample. The cached z_k is corrected by the
same affine map, so the sample is forwarded through every layer exactly once.

Data-driven inits (PCA, ZCA, k-means, random patches) apply to convolutions; fully connected
layers get gaussian rows unless ``data_driven_fc`` (the paper, §3.3, uses them "on just the
convolutional layers"). Whitened rows from a few hundred sample vectors amplify the directions
the sample barely spans: they have unit output variance on the sample but a large norm, and
dropout noise in those directions (training) then inflates the layer's output.

With ``dropout`` (the default) the sample is carried through Dropout layers as in training (one
seeded mask per image), so μ and σ are those a layer's outputs have under training's dropout noise
(the original code's TRAIN-phase statistics). Without it they are the deterministic TEST-phase
ones, and in training a layer above a dropout layer with keep probability q sees inputs whose
second moment is 1/q times larger: its outputs, and the loss's gradients, are inflated.
"""
from __future__ import annotations

import logging

import numpy as np

from magic_init.algorithm import netinfo, patches, weight_init
from magic_init.algorithm.runner import training_dropout
from magic_init.errors import NetDefinitionError

log = logging.getLogger(__name__)

#: σ(i) below this fraction of the median σ marks channel i as dead (constant on the sample).
DEAD_FRACTION = 1e-6


def select_layers(net, zero_all=False, zero_from=None):
    """Indices of the affine layers to initialize: all-zero weights, all, or from ``zero_from`` on."""
    layers = netinfo.affine_layers(net)
    if zero_from is not None:
        if zero_from not in net.layer_names:
            raise NetDefinitionError("zero_from: no layer named '%s'" % zero_from)
        start = list(net.layer_names).index(zero_from)
        return [i for i in layers if i >= start]
    if zero_all:
        return layers
    return [i for i in layers if not np.any(net.params[net.layer_names[i]][0].data)]


def channel_moments(top_sums):
    """(μ, σ) per channel from accumulated (count, Σz, Σz²) (population variance, clipped at 0)."""
    count, total, squares = top_sums
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))


def accumulate_channels(top, sums=None):
    """Add one batch's per-channel (count, Σz, Σz²) over images and positions (float64)."""
    axes = (0,) + tuple(range(2, top.ndim))
    z = top.astype(np.float64)
    batch = (top.size // top.shape[1], z.sum(axis=axes), (z * z).sum(axis=axes))
    if sums is None:
        return batch
    return tuple(a + b for a, b in zip(sums, batch))


def output_view(kind, weight, group):
    """Weight as (outputs, ...) rows; Deconvolution (in, out/G, kh, kw) is regrouped to (out, in/G, kh, kw)."""
    if kind != "Deconvolution":
        return weight.reshape(weight.shape[0], -1)
    cin, cout_g = weight.shape[:2]
    w = weight.reshape((group, cin // group, cout_g) + weight.shape[2:])
    return np.moveaxis(w, 2, 1).reshape(group * cout_g, -1)


def set_output_rows(kind, weight, rows, group):
    """Inverse of output_view: write (outputs, ...) rows back into the blob layout, in place."""
    if kind != "Deconvolution":
        weight[...] = rows.reshape(weight.shape)
        return
    cin, cout_g = weight.shape[:2]
    w = rows.reshape((group, cout_g, cin // group) + weight.shape[2:])
    weight[...] = np.moveaxis(w, 1, 2).reshape(weight.shape)


def normalize_rows(mean, std, beta):
    """Per-channel (scale, bias) of Algorithm 1: 1/σ and β − μ/σ; dead channels (σ≈0) get 1 and β − μ."""
    dead = ~np.isfinite(std) | (std <= DEAD_FRACTION * max(np.median(std), 1e-30))
    scale = np.where(dead, 1.0, 1.0 / np.where(dead, 1.0, std))
    return scale, beta - mean * scale, dead


class WithinLayer:
    """Algorithm 1 as a pass: ``WithinLayer(init='kmeans', beta=0.1)(net, runner) -> [layer reports]``."""

    def __init__(self, init="gaussian", beta=0.1, zero_all=False, zero_from=None, seed=0,
                 max_patches=10000, max_patch_mb=256, data_driven_fc=False, dropout=True,
                 whitening_eps=weight_init.WHITENING_EPS):
        weight_init.check_kind(init)
        self.init, self.beta = init, beta
        self.data_driven_fc, self.dropout = data_driven_fc, dropout
        self.seed, self.whitening_eps = seed, whitening_eps
        self.zero_all, self.zero_from = zero_all, zero_from
        self.rng = np.random.default_rng(seed)
        self.max_patches, self.max_patch_mb = max_patches, max_patch_mb

    def __call__(self, net, runner):
        with training_dropout(net, self.seed, self.dropout):
            return self._initialize(net, runner)

    def _initialize(self, net, runner):
        selected = set(select_layers(net, self.zero_all, self.zero_from))
        reports = []
        for index in runner.bar(netinfo.affine_layers(net), "Algorithm 1 (layers)"):
            name = net.layer_names[index]
            if index not in selected:
                log.info("layer '%s': weights kept", name)
                reports.append({"layer": name, "action": "kept"})
                continue
            reports.append(self.initialize_layer(net, runner, index))
        return reports

    def initialize_layer(self, net, runner, index):
        """Draw weights for layer ``index``, forward the sample to it, normalize its outputs."""
        name, kind = net.layer_names[index], net.layer_types[index]
        runner.advance(index - 1)
        blobs = net.params[name]
        used, reason = self.draw_weights(net, runner, index)
        for blob in blobs[1:]:
            blob.data[...] = 0
        top = net.top_names[name][0]
        state = {}
        runner.advance(index, on_batch=lambda i: state.update(
            sums=accumulate_channels(net.blobs[top].data, state.get("sums"))))
        mean, std = channel_moments(state["sums"])
        scale, bias, dead = normalize_rows(mean, std, self.beta)
        group = netinfo.group_count(net, name)
        rows = output_view(kind, blobs[0].data, group)
        set_output_rows(kind, blobs[0].data, rows * scale[:, None].astype(np.float32), group)
        if len(blobs) > 1:
            blobs[1].data[...] = bias.astype(np.float32)
        else:
            log.warning("layer '%s' has no bias: outputs scaled to unit variance but not centered at β", name)
            bias = np.zeros_like(bias)
        shape = (1, -1) + (1,) * (net.blobs[top].data.ndim - 2)
        a, c = scale.reshape(shape).astype(np.float32), bias.reshape(shape).astype(np.float32)
        runner.map_cached(top, lambda z: z * a + c)
        if dead.any():
            log.warning("layer '%s': %d dead channel(s) (constant on the sample): weights kept, output set to β",
                        name, int(dead.sum()))
        log.info("layer '%s': initialized (%s%s)", name, used, ", " + reason if reason else "")
        return {"layer": name, "action": "initialized", "init": used, "reason": reason,
                "dead_channels": int(dead.sum())}

    def draw_weights(self, net, runner, index):
        """Fill W of layer ``index`` (gaussian or data-driven); returns (init used, why gaussian).

        Fully connected layers get gaussian rows by design unless ``data_driven_fc``; a data-driven
        init that cannot run (Deconvolution, fewer sample rows than outputs) falls back to gaussian."""
        name, kind = net.layer_names[index], net.layer_types[index]
        weight = net.params[name][0].data
        if self.init == "gaussian":
            weight[...] = weight_init.gaussian(weight.shape, self.rng)
            return "gaussian", ""
        if kind == "InnerProduct" and not self.data_driven_fc:
            weight[...] = weight_init.gaussian(weight.shape, self.rng)
            return "gaussian", "fully connected (data-driven inits on convolutions only; --data-driven-fc)"
        if kind == "Deconvolution":
            reason = "no data-driven init for Deconvolution"
        else:
            rows, reason = self.data_driven_rows(net, runner, index)
            if rows is not None:
                weight[...] = rows.reshape(weight.shape)
                return self.init, ""
        log.info("layer '%s': %s; falling back to gaussian", name, reason)
        weight[...] = weight_init.gaussian(weight.shape, self.rng)
        return "gaussian", reason

    def data_driven_rows(self, net, runner, index):
        """Weight rows (outputs × inputs) from the layer's input patches, or (None, why not)."""
        name, kind = net.layer_names[index], net.layer_types[index]
        weight = net.params[name][0].data
        bottom = net.bottom_names[name][0]
        outputs = weight.shape[0]
        if kind == "InnerProduct":
            axis = netinfo.inner_product_axis(net, name)
            sample = np.concatenate([patches.vector_patches(live[bottom], axis) for live in runner.cache])
            budget = patches.row_budget(sample.shape[1], self.max_patches, self.max_patch_mb)
            sample = sample[:budget]
            groups, per_group = [sample], outputs
        else:
            geometry = netinfo.conv_geometry(net, name)
            columns = int(np.prod(weight.shape[1:]))
            budget = patches.row_budget(columns, self.max_patches, self.max_patch_mb)
            per_batch = -(-budget // len(runner.cache))
            gathered = [patches.conv_patches(live[bottom], geometry, per_batch, self.rng) for live in runner.cache]
            groups = [np.concatenate([g[k] for g in gathered]) for k in range(geometry.group)]
            per_group = outputs // geometry.group
        if len(groups[0]) < per_group:
            return None, "%d sample rows for %d outputs (too few samples)" % (len(groups[0]), per_group)
        rows = [weight_init.data_driven(self.init, g, per_group, self.rng, self.whitening_eps) for g in groups]
        return np.concatenate(rows), ""
