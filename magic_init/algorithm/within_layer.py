"""Algorithm 1 (paper §3.1): within-layer initialization.

For each affine layer k in topological order that is selected (every affine layer, or those named
in ``layers``, which the caller computes from the user's request): draw W_k (gaussian or a data-driven
init of §3.3 from the layer's input patches), b_k = 0, forward the sample to z_k, and with the
per-output-channel mean μ(i) and standard deviation σ(i) over images and positions set

    W_k(i, :) ← W_k(i, :) / σ(i),        b_k(i) ← β − μ(i)/σ(i),

so that z_k(i) has mean β and unit variance on the sample. With ``normalize="layer"`` every row is
divided by the layer's root-mean-square σ_L = (mean_i σ(i)²)^(1/2) instead (b_k(i) ← β − μ(i)/σ_L):
the layer's outputs have unit variance on average and the drawn rows keep their relative norms.
``"conv-layer"``: per layer for convolutions, per channel for fully connected layers; ``"channel"`` is
the paper's Alg. 1 for every layer; ``"auto"`` (the default, ``choices.DEFAULT_NORMALIZE``) is
``"channel"`` for the data-driven inits and, for gaussian rows, ``"conv-layer"`` on nets with a deep
stack of convolutions and ``"channel"`` on shallow ones (``auto_unit``; docs/TRAINING.md compares
them on the benchmark suite). A layer whose per-channel
statistics rest on
fewer than ``MIN_VALUES_PER_CHANNEL`` values (a fully connected layer on a sample of a few images)
is normalized as a whole either way. A layer without a bias blob cannot be centered at β: its rows
are negated where that makes the mean output non-negative (W(i, :) ← −W(i, :) where μ(i) < 0; the
sign of a k-means, PCA or gaussian row is arbitrary), so that a ReLU above it does not start dead
(MobileNet with k-means: 22 layers with dead channels otherwise). The cached z_k is corrected by the
same affine map, so the sample is forwarded through every layer exactly once.

Data-driven inits (PCA, ZCA, k-means, random patches) apply to convolutions; fully connected
layers get gaussian rows unless ``data_driven_fc`` (the paper, §3.3, uses them "on just the
convolutional layers"). Whitened rows from a few hundred sample vectors amplify the directions
the sample barely spans: they have unit output variance on the sample but a large norm, and
dropout noise in those directions (training) then inflates the layer's output.

A weight blob shared by several layers (``param { name: "w" }``) is drawn once, by the first layer
using it, whose outputs it normalizes; the later layers keep it and only center their outputs
with their own bias, b(i) = β − μ(i) (Caffe shares the data, so there is one W to choose).

With ``dropout`` (the default) the sample is carried through Dropout layers as in training (masks
from one seeded generator; the runner takes each Dropout layer over all batches in a row, so image
n's mask does not depend on the batch size), so μ and σ are those a layer's outputs have under
training's dropout noise (the original code's TRAIN-phase statistics). Without it they are the
deterministic TEST-phase ones, and in training a layer above a dropout layer with keep probability q sees inputs whose
second moment is 1/q times larger: its outputs, and the loss's gradients, are inflated.
"""
from __future__ import annotations

import logging

import numpy as np

from magic_init.algorithm import patches, weight_init
from magic_init.algorithm.description import CONV, DECONV, LINEAR, describe
from magic_init.algorithm.channel_sums import channel_sums, channel_squares
from magic_init.algorithm.runner import training_dropout
from magic_init.choices import (DATA_DRIVEN_KINDS, DEFAULT_NORMALIZE, MAX_PATCHES, MEMORY_LIMIT_MB, WHITENING_RANK,
                                check_init, check_normalize)
from magic_init.errors import MagicInitError, NetDefinitionError
from magic_init.progress import VERBOSE
from magic_init.timing import span

log = logging.getLogger(__name__)

#: σ(i) below this fraction of the median σ marks channel i as dead (constant on the sample).
DEAD_FRACTION = 1e-6

#: A layer whose per-channel μ and σ rest on fewer values than this (images × positions) is
#: normalized as a whole: on a handful of images a channel's σ is mostly noise, and dividing by the
#: small ones blows the net's output up (GoogLeNet on 2 images: docs/RESULTS.md).
MIN_VALUES_PER_CHANNEL = 32


def select_layers(net, layers=None):
    """Indices of the affine layers to initialize: those named in ``layers``, or all when None.

    Raises NetDefinitionError for a name that is not an affine layer of ``net``."""
    affine = describe(net).affine_layers()
    if layers is None:
        return affine
    index = {net.layer_names[i]: i for i in affine}
    unknown = [name for name in layers if name not in index]
    if unknown:
        raise NetDefinitionError("cannot initialize %s: not an affine layer of the net"
                                 % ", ".join("'%s'" % name for name in unknown))
    return sorted(index[name] for name in set(layers))


def check_finite_input(net, runner, name):
    """Raise MagicInitError when the input of layer ``name`` holds NaN or Inf on the sample (from the
    sample or a kept layer below): its μ and σ, and so the layer's weights, would be NaN. Reads the
    runner's cached inputs (the runner stands just below the layer)."""
    bottom = net.bottom_names[name][0]
    for live in runner.live_batches():
        if bottom in live:
            check_finite_batch(name, bottom, live[bottom])


def check_finite_batch(name, bottom, values):
    """Raise MagicInitError (as ``check_finite_input``) when one batch of layer ``name``'s input
    ``bottom`` holds NaN or Inf."""
    if not np.all(np.isfinite(values)):
        raise MagicInitError("layer '%s': its input '%s' is not finite on the sample (NaN or Inf from the "
                             "sample or a layer below it, e.g. loaded weights)" % (name, bottom))


def channel_moments(top_sums):
    """(μ, σ) per channel from accumulated (count, Σz, Σz²) (population variance, clipped at 0)."""
    count, total, squares = top_sums
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))


def accumulate_channels(top, sums=None):
    """Add one batch's per-channel (count, Σz, Σz²) over images and positions (float64)."""
    batch = (top.size // top.shape[1], channel_sums(top), channel_squares(top))
    if sums is None:
        return batch
    return tuple(a + b for a, b in zip(sums, batch))


def output_view(kind, weight, group):
    """Weight as (outputs, ...) rows; a transposed convolution's (``DECONV``) (in, out/G, kh, kw) is
    regrouped to (out, in/G, kh, kw). ``kind``: the ``AffineLayer.kind``."""
    if kind != DECONV:
        return weight.reshape(weight.shape[0], -1)
    cin, cout_g = weight.shape[:2]
    w = weight.reshape((group, cin // group, cout_g) + weight.shape[2:])
    return np.moveaxis(w, 2, 1).reshape(group * cout_g, -1)


def set_output_rows(kind, weight, rows, group):
    """Inverse of output_view: write (outputs, ...) rows back into the blob layout, in place."""
    if kind != DECONV:
        weight[...] = rows.reshape(weight.shape)
        return
    cin, cout_g = weight.shape[:2]
    w = rows.reshape((group, cout_g, cin // group) + weight.shape[2:])
    weight[...] = np.moveaxis(w, 1, 2).reshape(weight.shape)


def scale_output_rows(kind, weight, scale, group):
    """Multiply output row i of ``weight`` (as ``output_view`` sees it) by ``scale[i]``, in place (no
    temporary the size of the weights where the rows are a view of the blob)."""
    factors = scale[:, None].astype(np.float32)
    rows = output_view(kind, weight, group)
    if kind != DECONV and np.may_share_memory(rows, weight):
        rows *= factors
    else:
        set_output_rows(kind, weight, rows * factors, group)


def normalize_rows(mean, std, beta, unit="channel"):
    """Per-channel (scale, bias, dead) of Algorithm 1: 1/σ and β − μ/σ ("channel"), or 1/σ_L and
    β − μ/σ_L with σ_L the root-mean-square σ of the live channels ("layer"); dead channels (σ≈0)
    get 1 and β − μ."""
    dead = ~np.isfinite(std) | (std <= DEAD_FRACTION * max(np.median(std), 1e-30))
    live = np.where(dead, 1.0, std)
    if unit == "layer" and not dead.all():
        live = np.full_like(live, np.sqrt(np.mean(std[~dead] ** 2)))
    scale = np.where(dead, 1.0, 1.0 / live)
    return scale, beta - mean * scale, dead


def _correct_cached(runner, net, top, scale, bias):
    """Apply z ← scale·z + bias per channel to the cached ``top`` (what the new weights would give)."""
    shape = (1, -1) + (1,) * (net.blobs[top].data.ndim - 2)
    a, c = scale.reshape(shape).astype(np.float32), bias.reshape(shape).astype(np.float32)
    def corrected(z):
        out = z * a
        out += c
        return out
    runner.map_cached(top, corrected)


def _shared_weight_keepers(net, selected, shared):
    """``{layer: layer its shared weights come from}`` for the selected layers that must not draw W.

    A weight blob shared by several layers (Caffe's ``param { name }``) is drawn and normalized once, by
    its first layer, and only when every layer using it is selected (a kept layer keeps the blob); the
    others keep it. A selected layer sharing only its bias is refused: its weights would be drawn
    against a bias already set elsewhere."""
    names = net.layer_names
    chosen = {names[i] for i in selected}
    keepers = {}
    for owner, users in describe(net).sharing_layers().items():
        kept = [u for u in users if u not in chosen]
        for user in users:
            if user in chosen and (user != owner or kept):
                keepers[user] = owner if user != owner else kept[0]
    for (layer, j), (owner, _) in shared.items():
        if j > 0 and layer in chosen and (layer, 0) not in shared and layer not in keepers:
            raise NetDefinitionError("layer '%s' shares its bias with '%s' but not its weights: cannot "
                                     "initialize it" % (layer, owner))
    return keepers


#: ``normalize="auto"`` normalizes convolutions per layer ("conv-layer") on nets with at least this
#: many, per channel ("channel") on shallower ones.
DEEP_CONVOLUTIONS = 4


def auto_unit(net, init="gaussian"):
    """What ``normalize="auto"`` means for ``net`` and ``init``: "channel" for a data-driven init
    (``choices.DATA_DRIVEN_KINDS``); for gaussian rows "conv-layer" with DEEP_CONVOLUTIONS or more
    convolution layers, else "channel".

    Rows from whitened patches (PCA, ZCA, k-means, random patches) have norms the whitening sets
    (a row aligned with a barely excited direction is long), not norms worth keeping: each channel is
    normalized, as in the paper's Alg. 1 and the original code (docs/TRAINING.md, session 7: k-means
    per channel ties the original's k-means on CaffeNet's long schedule, per layer trails it by 1 point).

    Dividing each output channel by its own σ (the paper) lets the rows aligned with directions the
    sample barely excites grow; through a deep stack of convolutions that compounds layer after
    layer, and normalizing each convolution as a whole (the rows keep their relative norms) trains
    better there. On the benchmark suite (docs/TRAINING.md, session 6): the 8-convolution VGG-style net
    and the 5-convolution CaffeNet-style net train better per layer, the 2-convolution small net per
    channel. The threshold separates these three nets; no fourth net has tested it."""
    if init in DATA_DRIVEN_KINDS:
        return "channel"
    convolutions = sum(1 for op in describe(net).ops if op.affine is not None and op.affine.kind == CONV)
    return "conv-layer" if convolutions >= DEEP_CONVOLUTIONS else "channel"


class WithinLayer:
    """Algorithm 1 as a pass: ``WithinLayer(init='kmeans', beta=0.1)(net, runner) -> [layer reports]``."""

    def __init__(self, init="gaussian", beta=0.1, layers=None, seed=0,
                 max_patches=MAX_PATCHES, max_patch_mb=MEMORY_LIMIT_MB, data_driven_fc=False, dropout=True,
                 whitening_eps=weight_init.WHITENING_EPS, normalize=DEFAULT_NORMALIZE,
                 whitening_rank=WHITENING_RANK):
        check_init(init)
        check_normalize(normalize)
        self.normalize = normalize
        self.init, self.beta = init, beta
        self.data_driven_fc, self.dropout = data_driven_fc, dropout
        self.seed, self.whitening_eps, self.whitening_rank = seed, whitening_eps, whitening_rank
        self.layers = None if layers is None else list(layers)
        self.rng = np.random.default_rng(seed)
        self.max_patches, self.max_patch_mb = max_patches, max_patch_mb

    def __call__(self, net, runner):
        with training_dropout(net, self.seed, self.dropout):
            return self._initialize(net, runner)

    def _initialize(self, net, runner):
        selected = set(select_layers(net, self.layers))
        shared = describe(net).shared
        keepers = _shared_weight_keepers(net, selected, shared)
        reports = []
        affine = describe(net).affine_layers()
        for position, index in enumerate(runner.bar(affine, "Algorithm 1 (layers)"), 1):
            name = net.layer_names[index]
            if index not in selected:
                log.info("layer '%s': weights kept", name)
                reports.append({"layer": name, "action": "kept"})
                continue
            op = describe(net).ops[index]
            log.log(VERBOSE, "Algorithm 1: layer '%s' (%s, %d of %d affine layers): %s", name, op.label,
                    position, len(affine), "centering (weights shared with '%s')" % keepers[name] if name in keepers
                    else "drawing %s weights, normalizing its outputs" % self._kind_for(op.affine.kind))
            reports.append(self.initialize_layer(net, runner, index, shared, keepers.get(name)))
        return reports

    def _reads_patches(self, kind):
        """Whether drawing the rows of an affine layer of ``kind`` reads its input patches: a
        data-driven init asked for (``_kind_for``) on a layer that has one (not ``DECONV``)."""
        return self._kind_for(kind) != "gaussian" and kind != DECONV

    def _kind_for(self, kind):
        """The init an affine layer of ``kind`` is asked for (fully connected: gaussian unless --data-driven-fc)."""
        return "gaussian" if kind == LINEAR and not self.data_driven_fc else self.init

    def initialize_layer(self, net, runner, index, shared=None, weights_from=None):
        """Draw weights for layer ``index``, forward the sample to it, normalize its outputs.

        ``shared``: the description's ``shared`` (blobs this layer shares with an earlier one are not its own).
        ``weights_from``: the layer whose (shared) weights this one keeps: then only its own bias is
        set, b(i) = β − μ(i), centering its outputs (their σ is whatever the shared weights give)."""
        name = net.layer_names[index]
        with span("Algorithm 1", name):
            return self._initialize_layer(net, runner, index, shared, weights_from)

    def _initialize_layer(self, net, runner, index, shared, weights_from):
        name, affine = net.layer_names[index], describe(net).ops[index].affine
        bottom, top = net.bottom_names[name][0], net.top_names[name][0]
        # The runner stops below the layer only where its cached inputs are read: for the patches
        # of a data-driven init (or when the layer overwrites its input). Otherwise the weights are
        # drawn first and each batch's input is checked while the forward has it.
        stop_below = (weights_from is None and self._reads_patches(affine.kind)) or bottom == top
        if stop_below:
            with span("forward"):
                runner.advance(index - 1)
            check_finite_input(net, runner, name)
        blobs = net.params[name]
        own_bias = len(blobs) > 1 and (name, 1) not in (shared or {})
        if weights_from is None:
            with span("drawing weights"):
                used, reason = self.draw_weights(net, runner, index)
        if own_bias:
            blobs[1].data[...] = 0
        state = {}

        def on_batch(_):
            if not stop_below:
                check_finite_batch(name, bottom, net.blobs[bottom].data)
            state["sums"] = accumulate_channels(net.blobs[top].data, state.get("sums"))
        with span("forward"):
            runner.advance(index, on_batch=on_batch)
        mean, std = channel_moments(state["sums"])
        bad = ~(np.isfinite(mean) & np.isfinite(std))
        if bad.any():
            raise MagicInitError("layer '%s': its outputs are not finite on the sample (NaN or Inf in %d of %d "
                                 "channels)" % (name, int(bad.sum()), len(bad)))
        if weights_from is not None:
            return self._center_shared(net, runner, name, mean, own_bias, weights_from)
        unit = auto_unit(net, self.init) if self.normalize == "auto" else self.normalize
        if unit == "conv-layer":
            unit = "channel" if affine.kind == LINEAR else "layer"
        if state["sums"][0] < MIN_VALUES_PER_CHANNEL and unit == "channel":
            unit = "layer"
            log.info("layer '%s': %d values per channel on the sample: normalized as a whole (one σ)",
                     name, int(state["sums"][0]))
        scale, bias, dead = normalize_rows(mean, std, self.beta, unit)
        if len(blobs) == 1:        # no bias to center with: turn each row so that its mean output is ≥ 0
            flipped = (mean < 0) & ~dead
            scale = np.where(flipped, -scale, scale)
            if flipped.any():
                log.info("layer '%s' has no bias: %d row(s) negated so that their mean output is not below 0",
                         name, int(flipped.sum()))
        scale_output_rows(affine.kind, blobs[0].data, scale, affine.groups)
        if own_bias:
            blobs[1].data[...] = bias.astype(np.float32)
        else:
            log.warning("layer '%s' has no bias of its own: outputs scaled to unit variance but not centered at β",
                        name)
            bias = np.zeros_like(bias)
        _correct_cached(runner, net, top, scale, bias)
        if dead.any():
            log.warning("layer '%s': %d dead channel(s) (constant on the sample): weights kept, output set to β",
                        name, int(dead.sum()))
        live = std[~dead]
        log.log(VERBOSE, "Algorithm 1: layer '%s': outputs before normalization: mean %.3g, std %.3g (per channel "
                "%.3g to %.3g, %s); now %s, %s", name, float(np.mean(mean)), float(np.sqrt(np.mean(std ** 2))),
                float(live.min()) if live.size else 0.0, float(live.max()) if live.size else 0.0,
                "%d channels" % len(std), "mean %g" % self.beta if own_bias else "not centered (no bias of its own)",
                "unit variance per channel" if unit == "channel" else "unit variance over the layer")
        log.info("layer '%s': initialized (%s%s)", name, used, ", " + reason if reason else "")
        return {"layer": name, "action": "initialized", "init": used, "reason": reason,
                "dead_channels": int(dead.sum())}

    def _center_shared(self, net, runner, name, mean, own_bias, weights_from):
        """A layer keeping shared weights: b(i) ← β − μ(i) when the bias is its own, else nothing."""
        top = net.top_names[name][0]
        if own_bias:
            bias = self.beta - mean
            net.params[name][1].data[...] = bias.astype(np.float32)
            _correct_cached(runner, net, top, np.ones_like(mean), bias)
        reason = "weights shared with '%s'%s" % (weights_from, "; outputs centered at β" if own_bias else
                                                 " (bias shared too)")
        log.info("layer '%s': %s", name, reason)
        return {"layer": name, "action": "shared", "shared_with": weights_from, "reason": reason}

    def draw_weights(self, net, runner, index):
        """Fill W of layer ``index`` (gaussian or data-driven); returns (init used, why gaussian).

        Fully connected layers get gaussian rows by design unless ``data_driven_fc``; a data-driven
        init that cannot run (Deconvolution, fewer sample rows than outputs,
        constant patches) falls back to gaussian, for the whole layer or for the groups of a grouped convolution it cannot
        serve (logged as a warning, and said in the report's reason)."""
        name, op = net.layer_names[index], describe(net).ops[index]
        weight = net.params[name][0].data
        if self._kind_for(op.affine.kind) == "gaussian":
            weight_init.gaussian(weight.shape, self.rng, out=weight)
            fully_connected = "fully connected (data-driven inits on convolutions only; --data-driven-fc)"
            return "gaussian", "" if self.init == "gaussian" else fully_connected
        if op.affine.kind == DECONV:
            reason = "no data-driven init for %s" % op.label
            log.warning("layer '%s': %s init impossible: %s; falling back to gaussian", name, self.init, reason)
        else:
            rows, reason = self.data_driven_rows(net, runner, index)
            if rows is not None:
                weight[...] = rows.reshape(weight.shape)
                return self.init, reason
            log.warning("layer '%s': %s init impossible: %s; falling back to gaussian", name, self.init, reason)
        weight_init.gaussian(weight.shape, self.rng, out=weight)
        return "gaussian", reason

    def data_driven_rows(self, net, runner, index):
        """Weight rows (outputs × inputs) from the layer's input patches, or (None, why not).

        A grouped convolution is initialized group by group from its own input channels' patches
        (a depthwise 3x3 one: 9-dimensional patches, one group per channel). A group whose patches
        cannot drive the init (``weight_init.sample_problem``) gets gaussian rows: then the rows come
        with the reason (which groups, why); when no group can, (None, why)."""
        name, affine = net.layer_names[index], describe(net).ops[index].affine
        weight = net.params[name][0].data
        bottom = net.bottom_names[name][0]
        outputs = weight.shape[0]
        if affine.kind == LINEAR:
            axis = affine.axis
            columns = int(np.prod(net.blobs[bottom].data.shape[axis:]))
            budget = patches.row_budget(columns, self.max_patches, self.max_patch_mb)
            with span("patches"):
                groups = [patches.first_vector_patches((live[bottom] for live in runner.live_batches()), axis,
                                                       budget)]
            per_group = outputs
        else:
            geometry = affine.window()
            columns = int(np.prod(weight.shape[1:]))
            budget = patches.row_budget(columns, self.max_patches, self.max_patch_mb)
            with span("patches"):
                groups = patches.sampled_conv_patches((live[bottom] for live in runner.live_batches()), geometry,
                                                      budget, self.rng, sizes=runner.batch_images(),
                                                      shape=net.blobs[bottom].data.shape)
            per_group = outputs // geometry.group
        if len(groups[0]) < per_group:
            return None, "%d sample rows for %d outputs (too few samples)" % (len(groups[0]), per_group)
        rows, failed = [], {}
        for g, group_patches in enumerate(groups):
            drawn, problem = weight_init.data_driven_or_reason(self.init, group_patches, per_group, self.rng,
                                                               self.whitening_eps, self.whitening_rank)
            if drawn is None:
                failed.setdefault(problem, []).append(g)
                drawn = weight_init.gaussian((per_group, group_patches.shape[1]), self.rng)
            rows.append(drawn)
        if not failed:
            return np.concatenate(rows), ""
        reason = "; ".join(_failed_groups(g, len(groups), problem) for problem, g in failed.items())
        if sum(len(g) for g in failed.values()) == len(groups):
            return None, reason
        log.warning("layer '%s': %s; gaussian rows for those groups", name, reason)
        return np.concatenate(rows), reason + " (gaussian rows there)"


def _failed_groups(groups, count, problem):
    """'group(s) 0, 3 of 8: problem' (the first few group indices), or the problem alone when ``count`` is 1."""
    if count == 1:
        return problem
    shown = ", ".join(str(g) for g in groups[:8]) + (", ..." if len(groups) > 8 else "")
    return "%d of %d groups (%s): %s" % (len(groups), count, shown, problem)
