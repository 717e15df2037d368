"""Change rates of affine layers (paper §3, eqs. 1-4), measured with a random linear loss.

One pass over the whole sample: forward each batch to the last non-loss layer, set the diff of
every output blob to η ~ N(0, I) (a fresh draw per image: ℓ = ηᵀz_N, image i's η from a generator
seeded by (seed, i)), backward. Per affine layer k and weight column j we gather

    E[z_{k-1}(j)²]   over images (and positions: for a convolution, column j = (c, i, j') reads
                     channel c, and we use the channel's mean square for all its kernel taps),
    Y_g = E[‖y_k‖²]  per image, y_k = ∂ℓ/∂z_k summed over the outputs (and positions) of group g,

and the rate of Eq. (4), with ‖W_k‖² read as the *mean* squared weight (as the original code
does; with the plain sum, bigger layers would look slower by their size):

    C̃²_{k,j} = E[z_{k-1}(j)²] · Y_g / (N_g · mean(W_k²)),    C̃_k = mean_j C̃_{k,j}.

``LayerRates`` keeps these factors so that rescaling can update them analytically.

The measured layers are Algorithm 2's rescalable ones (``NetDescription.rescalable_layers``): the affine
layers, including those with a diagonal weight, e.g. Caffe's Scale with a learned per-channel γ (``DIAGONAL``:
one group per channel, column j = channel j, one row, one tap; C̃²_{k,j} = E[(∂ℓ/∂γ_j)²]/mean(γ²)).
A layer that runs in place (ResNet's conv -> BatchNorm -> Scale -> ReLU on one blob) or whose
bottom a later layer overwrites in place has its input read just before it runs and its top
gradient just after the layers above it ran backward (forward and backward run in segments there).

The weight gradients (``definition="gradient"``) are summed over blocks of RATE_BLOCK images
(parameter diffs accumulate over the batches of a block, which never straddle one), so for every
block b, Σ_i E[(∂ℓ/∂W(i, j))²] per image ≈ ‖Σ_{n∈b} ∂ℓ_n/∂W(:, j)‖² / |b| (η independent per image).
Blocks are fixed by image index: with η drawn per image, the measurement does not depend on the
batch size, which is only a memory knob.

By default the pass runs with Dropout active as in training (y = x·mask/(1-p), masks from the
backend's generator, seeded per block, ``Net.train_dropout``): the rates SGD sees are those of the
net with its dropout noise, and a layer above a dropout layer receives inputs whose second moment is
1/(1-p) times the deterministic one. ``dropout=False`` measures the deterministic TEST-phase net
instead. Within a block the backend draws the masks batch after batch. The built-in engine gives
each Dropout layer its own serial generator, so image n's mask is the same for any batch size.
Caffe (pycaffe backend) draws every layer's masks from one generator, so with several Dropout
layers, batches smaller than a block interleave their draws and the rates then depend on the batch
size; any batch size >= RATE_BLOCK gives the same masks, since its batches are then whole blocks.
"""
from __future__ import annotations

import contextlib

import numpy as np

from magic_init.algorithm import patches
from magic_init.algorithm.description import DECONV, DIAGONAL, LINEAR, describe
from magic_init.algorithm.channel_sums import channel_squares_per_image
from magic_init.choices import check_rate
from magic_init.algorithm.runner import load_blobs, training_dropout
from magic_init.algorithm.within_layer import output_view
from magic_init.errors import MagicInitError


#: Images per weight-gradient estimate: param diffs accumulate over one block of this many images,
#: whatever the batch size (the original code estimated from one batch of 16).
RATE_BLOCK = 16


def _block_seed(seed, block):
    """A seed for block ``block`` of a pass seeded with ``seed`` (independent streams per block)."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1)[0] % 2 ** 31)


class LayerRates:
    """Change-rate factors of one affine layer; columns are bottom channels (conv) or units (linear).

    ``definition``: "eq4" uses C̃²_{k,j} = E[z_{k-1}(j)²]·E[‖y_k‖²]/(N·mean(W²)) (paper Eq. 4);
    "gradient" uses the measured weight gradients themselves (Eq. 3 without the independence
    assumption): C̃²_{k,j} = Σ_{i,taps} E[(∂ℓ/∂W(i,j))²] / (N·taps·mean(W²)). Both scale the same
    way under rescaling, so both support the analytic update.
    """

    def __init__(self, name, kind, group, col_sq, y_sq, col_w2, rows, numel, col_g2=None, taps=1,
                 definition="eq4", row_g2=None):
        check_rate(definition)
        self.name, self.kind, self.group = name, kind, group
        self.col_sq = col_sq      # E[z_{k-1}(j)²] per column
        self.y_sq = y_sq          # E[‖y_k‖²] per group
        self.col_w2 = col_w2      # Σ_i W(i, j)² per column (all kernel taps)
        self.col_g2 = col_g2      # Σ_i E[(∂ℓ/∂W(i, j))²] per column (all kernel taps), per image
        self.rows = rows          # N_g: outputs per group
        self.numel = numel        # number of weights
        self.taps = taps          # kernel taps per column (1 for a linear layer)
        self.definition = definition
        self.row_g2 = row_g2      # Σ_taps E[(∂ℓ/∂W(i, j))²] per row i and column j of its group (RateMeter rows)

    def column_rates(self):
        """C̃_{k,j} per column, by ``definition``."""
        mean_w2 = max(self.col_w2.sum() / self.numel, 1e-300)
        if self.definition == "gradient":
            return np.sqrt(self.col_g2 / (self.rows * self.taps * mean_w2))
        y = np.repeat(self.y_sq, len(self.col_sq) // self.group)
        return np.sqrt(self.col_sq * y / (self.rows * mean_w2))

    def rate(self):
        """C̃_k = mean_j C̃_{k,j}."""
        return float(self.column_rates().mean())


def column_weight_norms(kind, weight, group):
    """Σ over rows (and kernel taps) of W², per column: bottom channel (conv, deconv, diagonal: γ_j²) or
    unit (linear). ``kind``: the ``AffineLayer.kind``.

    Computed with einsum on the float32 blob (no full-size float64 temporary: fc6 of VGG is 400 MB)."""
    if kind == LINEAR:
        w = weight.reshape(weight.shape[0], -1)
        return np.einsum("ij,ij->j", w, w).astype(np.float64)
    if kind == DIAGONAL:                # column j is γ_j
        return np.square(weight.reshape(-1).astype(np.float64))
    if kind == DECONV:
        w = weight.reshape(weight.shape[0], -1)
        return np.einsum("ij,ij->i", w, w).astype(np.float64)
    w = weight.reshape((group, weight.shape[0] // group, weight.shape[1], -1))
    return np.einsum("goct,goct->gc", w, w).astype(np.float64).reshape(-1)


def scale_columns(kind, weight, group, factors):
    """Multiply weight column j (as in column_weight_norms) by factors[j], in place."""
    f = factors.astype(np.float32)
    if kind == LINEAR:
        weight *= f.reshape((1,) + weight.shape[1:]) if weight.ndim > 2 else f[None, :]
    elif kind == DIAGONAL:
        weight *= f.reshape(weight.shape)
    elif kind == DECONV:
        weight *= f.reshape((-1,) + (1,) * (weight.ndim - 1))
    else:
        view = weight.reshape((group, weight.shape[0] // group) + weight.shape[1:])
        view *= f.reshape((group, 1, -1) + (1,) * (weight.ndim - 2))


def gram_column_norms(inputs, top_diffs):
    """Σ over rows i of G_ij² for the linear (fully connected) weight gradient G = Dᵀ X of a block, from X
    (inputs, n × columns) and D (top diffs, n × outputs) without forming G (outputs × columns):
    Σ_i G_ij² = Σ_ab X_aj (D Dᵀ)_ab X_bj, with D Dᵀ only n × n. float64.

    Args:
        inputs: (n, columns) array, the layer's input rows of the block.
        top_diffs: (n, outputs) array, the top diffs of the same rows.

    Returns:
        (columns,) float64 array: column_weight_norms of G.
    """
    x = np.asarray(inputs, dtype=np.float64)
    d = np.asarray(top_diffs, dtype=np.float64)
    return np.einsum("aj,aj->j", x, (d @ d.T) @ x)


def row_column_norms(weight):
    """Σ over kernel taps of a convolution weight's squares: one entry per output channel i (row)
    and input channel j of its group (column), float64 of shape (num_output, channels per group)."""
    w = weight.reshape(weight.shape[0], weight.shape[1], -1)
    return np.einsum("ijt,ijt->ij", w, w).astype(np.float64)


#: A factor outside this range would overflow (or flush to zero) in float32 weights.
FACTOR_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))


def check_factors(name, factors):
    """Raise MagicInitError unless every factor of layer ``name`` is finite, positive and float32-sized."""
    factors = np.asarray(factors, dtype=np.float64)
    bad = ~np.isfinite(factors) | (factors < FACTOR_RANGE[0]) | (factors > FACTOR_RANGE[1])
    if bad.any():
        raise MagicInitError("between-layer: refusing to scale layer '%s' by %r (a factor must be finite, positive "
                             "and fit float32); its weights are left as they were" % (name, factors[bad][0]))


def _column_square(kind, bottom):
    """Σ over images (and positions) of z², per column, and the count it averages over."""
    if kind == LINEAR:
        flat = bottom.reshape(len(bottom), -1)
        return np.einsum("nj,nj->j", flat, flat, dtype=np.float64), len(bottom)
    return channel_squares_per_image(bottom), bottom.size // bottom.shape[1]


def _group_gradient(top_diff, group):
    """Σ over images of ‖y‖² per output group."""
    return channel_squares_per_image(top_diff).reshape(group, -1).sum(axis=1)


class RateMeter:
    """One forward+backward pass over the sample gathering Eq. (4) factors (and param diffs)."""

    def __init__(self, net, seed=0, keep_param_diffs=False, definition="eq4", dropout=True, rows=()):
        self.net = net
        self.description = describe(net)
        self.last = self.description.last_compute_layer()
        self.outputs = self.description.output_blobs(self.last)
        self.affine = [i for i in self.description.rescalable_layers() if i <= self.last]
        #: The backend frees what a pass no longer needs (the engine's ``releasing``): every measured
        #: bottom and top diff is then read while the pass runs (``_split_points``).
        self.release = callable(getattr(net, "releasing", None))
        self._split_points()
        self.rng = np.random.default_rng(seed)
        self.keep_param_diffs = keep_param_diffs
        self.definition = definition
        self.dropout = dropout
        #: Layers whose weight gradients are also kept per row (``LayerRates.row_g2``): per-channel factors.
        self.rows = set(rows)
        #: Linear layers whose block gradient's column norms come from the block's inputs and top
        #: diffs (``gram_column_norms``) instead of a weight gradient the size of the weights:
        #: {layer: (the block's input rows, its top-diff rows)}, emptied after every block.
        self.gram = {name: ([], []) for name in self._gram_layers()}

    def _gram_layers(self):
        """The linear layers measured from small matrices: where the backend can skip their
        weight gradient (``without_weight_diffs``) and nothing needs the gradient itself."""
        net = self.net
        if self.keep_param_diffs or not callable(getattr(net, "without_weight_diffs", None)):
            return []
        ops = self.description.ops
        return [ops[i].name for i in self.affine if ops[i].affine.kind == LINEAR
                and ops[i].name not in self.rows and not ops[i].affine.transposed]

    def measure(self, runner, images=None):
        """``{layer: LayerRates}`` over all batches (``images``: over the sample's first that many
        images only); with keep_param_diffs also ``param_sq`` per layer.

        Block b of the sample runs with the Dropout masks of ``train_dropout(seed_b)``, seed_b drawn
        from (seed, b): the masks of a block do not depend on how it is cut into batches on the
        engine (one serial generator per Dropout layer); on Caffe as long as the net has at most one
        Dropout layer or the batches are whole blocks (batch_size >= RATE_BLOCK)."""
        net, names = self.net, self.net.layer_names
        sums = {}
        self.param_sq = {}
        dropout_seed, eta_seed = (int(v) for v in self.rng.integers(2 ** 31, size=2))
        blocks = runner.bar(runner.blocks(RATE_BLOCK, images), runner.pass_label,
                            total=runner.block_count(RATE_BLOCK, images))
        with contextlib.ExitStack() as stack:
            if self.gram:
                stack.enter_context(net.without_weight_diffs(list(self.gram)))
            if self.release:
                stack.enter_context(net.releasing(keep=self.outputs))
            images = self._measure_blocks(blocks, sums, dropout_seed, eta_seed)
        return {names[i]: self._finish(names[i], sums[names[i]], images) for i in self.affine}

    def _measure_blocks(self, blocks, sums, dropout_seed, eta_seed):
        """The forward+backward passes of ``measure``, block by block, adding into ``sums``; returns
        the number of images measured."""
        net, images = self.net, 0
        for b, block in enumerate(blocks):
            block_images = 0
            with training_dropout(net, _block_seed(dropout_seed, b), self.dropout):
                self._clear_param_diffs()        # inside: pycaffe's dropout twin has its own diffs
                for batch in block:
                    load_blobs(net, batch)
                    count = len(next(iter(batch.values())))
                    self._forward(sums)
                    for blob, eta in zip(self.outputs, self._eta(eta_seed, images + block_images, count)):
                        net.blobs[blob].diff[...] = eta
                    self._backward(sums)
                    block_images += count
                self._add_weight_gradients(sums, block_images)
            images += block_images
        return images

    def _eta(self, seed, first, count):
        """η for images first..first+count-1, one array per output blob: image i's draw comes from a
        generator seeded by (seed, i), so it is the same whatever batch the image is in."""
        shapes = [self.net.blobs[blob].diff.shape[1:] for blob in self.outputs]
        draws = [[] for _ in shapes]
        for i in range(first, first + count):
            rng = np.random.default_rng([seed, i])
            for per_blob, shape in zip(draws, shapes):
                per_blob.append(rng.standard_normal(shape))
        return [np.stack(d) for d in draws]

    def _clear_param_diffs(self):
        """Zero the parameter diffs (not the weight diffs nobody computes: ``gram``)."""
        for name, blobs in self.net.params.items():
            for j, b in enumerate(blobs):
                if not (j == 0 and name in self.gram):
                    b.diff[...] = 0

    def _split_points(self):
        """The measured layers whose bottom data (``capture_bottom``) or top diff (``capture_top``) a
        full pass would overwrite before we read it: in-place layers (ResNet's conv -> BatchNorm ->
        Scale -> ReLU all on one blob). Their bottom is read just before they run and their top diff
        just after the layers above them have run backward. Where the backend frees blobs as the pass
        goes (``release``), every measured layer is read so."""
        net, names = self.net, self.net.layer_names
        if self.release:
            self.capture_bottom, self.capture_top = list(self.affine), list(self.affine)
            return
        self.capture_bottom, self.capture_top = [], []
        for i in self.affine:
            name = names[i]
            bottom, top = net.bottom_names[name][0], net.top_names[name][0]
            if any(bottom in net.top_names[names[j]] for j in range(i, self.last + 1)):
                self.capture_bottom.append(i)
            if any(top in net.bottom_names[names[j]] for j in range(i + 1)):
                self.capture_top.append(i)

    def _forward(self, sums):
        """Forward to the last layer, gathering E[z_{k-1}²] of every measured layer."""
        net, names = self.net, self.net.layer_names
        start = None
        for i in self.capture_bottom:
            if i > (start or 0):
                net.forward(start=None if start is None else names[start], end=names[i - 1])
                start = i
            self._add_bottom(i, sums)
        net.forward(start=None if start is None else names[start], end=names[self.last])
        for i in self.affine:
            if i not in self.capture_bottom:
                self._add_bottom(i, sums)

    def _backward(self, sums):
        """Backward from the last layer, gathering E[‖y_k‖²] of every measured layer."""
        net, names = self.net, self.net.layer_names
        top = self.last
        for i in reversed(self.capture_top):
            if i < top:
                net.backward(start=names[top], end=names[i + 1])
                top = i
            self._add_top_gradient(i, sums)
        net.backward(start=names[top])
        for i in self.affine:
            if i not in self.capture_top:
                self._add_top_gradient(i, sums)

    def _add_bottom(self, i, sums):
        name, affine = self.net.layer_names[i], self.description.ops[i].affine
        total, count = _column_square(affine.kind, self.net.blobs[self.net.bottom_names[name][0]].data)
        entry = sums.setdefault(name, {"col": 0.0, "count": 0, "y": 0.0, "param": 0.0, "grad": 0.0, "blocks": 0})
        entry["col"] = entry["col"] + total
        entry["count"] += count
        if name in self.gram:
            bottom = self.net.blobs[self.net.bottom_names[name][0]].data
            self.gram[name][0].append(patches.vector_patches(bottom, affine.axis))

    def _add_top_gradient(self, i, sums):
        """E[‖y_k‖²] terms of this batch (top diffs are overwritten by every backward)."""
        name = self.net.layer_names[i]
        group = self.description.ops[i].affine.groups
        top = self.net.blobs[self.net.top_names[name][0]]
        sums[name]["y"] = sums[name]["y"] + _group_gradient(top.diff, group)
        if name in self.gram:
            diff = top.diff
            self.gram[name][1].append(diff.reshape(-1, diff.shape[-1]).astype(np.float32))

    def _add_weight_gradients(self, sums, images):
        """Weight-gradient terms of one block of ``images`` images (param diffs accumulate over its batches)."""
        for i in self.affine:
            name, affine = self.net.layer_names[i], self.description.ops[i].affine
            sums[name]["blocks"] += 1
            # η independent per image: E[(Σ_b g_b)²] = B·E[g²], so diff²/B estimates the per-image E[g²]
            if name in self.gram:
                inputs, top_diffs = self.gram[name]
                sums[name]["grad"] = sums[name]["grad"] + gram_column_norms(np.concatenate(inputs),
                                                                            np.concatenate(top_diffs)) / images
                self.gram[name] = ([], [])
                continue
            diff = self.net.params[name][0].diff
            sums[name]["grad"] = sums[name]["grad"] + column_weight_norms(affine.kind, diff, affine.groups) / images
            if self.keep_param_diffs:
                sums[name]["param"] = sums[name]["param"] + np.square(diff) / np.float32(images)
            if name in self.rows:
                sums[name]["rows"] = sums[name].get("rows", 0.0) + row_column_norms(diff) / images

    def _finish(self, name, s, images):
        weight = self.net.params[name][0].data
        affine = self.description.affine(name)
        kind, group = affine.kind, affine.groups
        if self.keep_param_diffs:
            self.param_sq[name] = s["param"] / max(1, s["blocks"])
        rows = output_view(kind, weight, group).shape[0] // group
        col_w2 = column_weight_norms(kind, weight, group)
        taps = int(np.prod(weight.shape[2:])) if kind != LINEAR else 1
        row_g2 = s["rows"] / max(1, s["blocks"]) if "rows" in s else None
        return LayerRates(name, kind, group, s["col"] / s["count"], s["y"] / images, col_w2, rows, weight.size,
                          col_g2=s["grad"] / max(1, s["blocks"]), taps=taps, definition=self.definition,
                          row_g2=row_g2)

