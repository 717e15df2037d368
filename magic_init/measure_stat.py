"""Statistics of a net on a sample (the original's measure_stat.py; paper Fig. 1a/1b).

Per affine layer (Convolution, InnerProduct, Deconvolution), on the whole sample:

* activations z_k (the layer's output, before any in-place nonlinearity): per-channel mean and
  standard deviation over images and positions; the layer's ``act_mean``/``act_std`` are their
  averages and ``act_cv`` = std(σ_c)/mean(σ_c), the coefficient of variation over channels.
* change rates, two definitions, both from one forward+backward pass with a random linear loss
  ℓ = ηᵀz_N, η ~ N(0, I) per image (magic_init.algorithm.rates):
  - ``rate_mean``/``rate_cv``: the paper's C̃_{k,j} of Eq. (4) per weight column j (per bottom
    channel for convolutions, per input unit for InnerProduct), with ‖W_k‖² read as mean(W_k²):
    C̃²_{k,j} = E[z_{k-1}(j)²]·E[‖y_k‖²]/(N·mean(W_k²)); mean and std/mean over j.
  - ``orig_rate_mean``/``orig_rate_cv``: measure_stat.py's definition, from the weight gradient:
    per index c of the weight's axis 1 (input channel within a group — groups are merged, as the
    original does), sqrt(mean over outputs and kernel taps of E[(∂ℓ/∂W)²] / mean(W²)). It keeps the
    correlation between z and y that Eq. (4) assumes away; the original averages gradients of
    batches of 16 (η independent per image makes E[(Σ_b g_b)²] = B·E[g²], so we divide by B).
    This is the primary definition (``report.PRIMARY_RATE``): the one Algorithm 2 equalizes by default
    (``--rate gradient``) and the one ``stats --plot`` draws.

A layer whose weights are all zero (a prototxt without a weight_filler: Caffe's default filler is
constant 0) has no relative change rate: its four rate fields are None and ``zero_weights`` is set.
"""
from __future__ import annotations

import numpy as np

from magic_init.algorithm.description import describe
from magic_init.algorithm.rates import RateMeter
from magic_init.algorithm.runner import SampleRunner
from magic_init.algorithm.within_layer import accumulate_channels, channel_moments


def coefficient_of_variation(values):
    """std/mean of ``values`` (0 for an empty or all-zero vector)."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean() if values.size else 0.0
    return float(values.std() / mean) if mean else 0.0


def activation_stats(net, runner):
    """``{layer: (channel means, channel stds)}`` of each affine layer's output, one forward pass."""
    stats = {}
    for index in runner.bar(describe(net).affine_layers(), "stats: activations (layers)"):
        name = net.layer_names[index]
        top = net.top_names[name][0]
        state = {}
        runner.advance(index, on_batch=lambda i: state.update(
            sums=accumulate_channels(net.blobs[top].data, state.get("sums"))))
        stats[name] = channel_moments(state["sums"])
    return stats


def original_rates(param_sq, weight):
    """measure_stat.py's per-input-channel rate: sqrt(mean_{out,taps} E[g²] / mean(W²))."""
    per = np.swapaxes(param_sq, 0, 1).reshape(param_sq.shape[1], -1).mean(axis=1)
    flat = weight.reshape(-1)
    return np.sqrt(per / max(float(np.einsum("i,i->", flat, flat)) / flat.size, 1e-300))


def measure(net, sample, batch_size=16, seed=0, progress=False, rate_dropout=True):
    """Statistics of every affine layer as plain dicts: ``{"layers": [...], "summary": {...}}``.

    Activations are measured in TEST phase; change rates with Dropout active (``rate_dropout``),
    as Algorithm 2 equalizes them and as training sees them.

    ``progress``: progress bars on stderr (one over the layers, one over the backward batches).

    Args:
        net: The net (``build_net``, ``Net`` or ``get_net``); its weights are not changed.
        sample: A float32 (N, C, H, W) array for the net's first input, a dict ``{input blob: array}``,
            or a ``magic_init.batch_store.BatchStore`` of such batches (``load_sample(...).batches``:
            then ``batch_size`` is the store's own cut).
        batch_size: Images per forward pass (default 16).
        seed: Seed of the random linear loss's η and of the Dropout masks (default 0).
        progress: If True, progress bars on stderr (default False).
        rate_dropout: If True (the default), the change rates are measured with Dropout active;
            if False, in the deterministic TEST phase.

    Returns:
        A dict: ``"layers"``: one dict per affine layer, in net order, with ``layer``, ``type``,
        ``act_mean``, ``act_std``, ``act_cv``, ``channel_mean`` and ``channel_std`` (lists), and for the
        layers whose rates are measured ``rate_mean``, ``rate_cv``, ``orig_rate_mean``, ``orig_rate_cv``
        (floats, None when undefined), plus ``zero_weights`` (True) when the weights are all zero;
        ``"summary"``: ``rate_spread``, ``orig_rate_spread`` and ``max_act_cv`` (see ``summarize``);
        ``"images"``: the number of sample images measured.
    """
    runner = SampleRunner(net, sample, batch_size, progress=progress)
    try:
        acts = activation_stats(net, runner)
        runner.pass_label = "stats: change rates"
        meter = RateMeter(net, seed=seed, keep_param_diffs=True, dropout=rate_dropout)
        rates = meter.measure(runner)
    finally:
        runner.close()
    layers = []
    description = describe(net)
    for index in description.affine_layers():
        name = net.layer_names[index]
        mean, std = acts[name]
        entry = {"layer": name, "type": description.ops[index].label, "act_mean": float(mean.mean()),
                 "act_std": float(std.mean()), "act_cv": coefficient_of_variation(std),
                 "channel_mean": mean.tolist(), "channel_std": std.tolist()}
        if name in rates:
            weight = net.params[name][0].data
            if np.any(weight):
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    columns = rates[name].column_rates()
                    orig = original_rates(meter.param_sq[name], weight)
                    entry.update(rate_mean=_finite(columns.mean()), rate_cv=_finite(coefficient_of_variation(columns)),
                                 orig_rate_mean=_finite(orig.mean()),
                                 orig_rate_cv=_finite(coefficient_of_variation(orig)))
            else:   # a relative change of all-zero weights is undefined (any step is infinitely larger)
                entry.update(rate_mean=None, rate_cv=None, orig_rate_mean=None, orig_rate_cv=None,
                             zero_weights=True)
        layers.append(entry)
    return {"layers": layers, "summary": summarize(layers), "images": runner.images()}


def _finite(value):
    """``value`` as a float, or None when it is NaN or infinite (undefined; JSON null)."""
    value = float(value)
    return value if np.isfinite(value) else None


def summarize(layers):
    """Across layers: max/min of the mean change rates (both definitions) and the largest act_cv.

    Layers whose rate is undefined (None: all-zero weights) or 0 are left out of the spreads."""
    def spread(key):
        values = [l[key] for l in layers if (l.get(key) or 0) > 0]
        return float(max(values) / min(values)) if values else None
    return {"rate_spread": spread("rate_mean"), "orig_rate_spread": spread("orig_rate_mean"),
            "max_act_cv": max((l["act_cv"] for l in layers), default=None)}
