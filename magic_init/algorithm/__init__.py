"""Data-dependent initialization (Krähenbühl et al., ICLR 2016, §3) over the Net interface.

The API mirrors the CLI::

    report = initialize(net, sample, init="kmeans", beta=0.1, between_layer=True, alpha=0.25)
    report = rescale(net, sample)            # pretrained model: Algorithm 2 only (paper §4.3)

Each step is a pass ``pass(net, runner) -> report`` (``WithinLayer``, ``BetweenLayer``) and
``run_passes`` composes them over one ``SampleRunner``: Algorithm 1 forwards the sample once,
layer range by layer range; Algorithm 2 does one forward+backward pass and then iterates
analytically. ``sample`` is a float32 NCHW array for the net's first input, or a dict
``{input blob: array}``. A fixed ``seed`` gives identical weights.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from magic_init.algorithm.between_layer import BetweenLayer
from magic_init.algorithm.runner import SampleRunner, sample_arrays
from magic_init.batch_budget import AUTO, resolve_batch_size
from magic_init.batch_store import BatchStore
from magic_init.algorithm.weight_init import WHITENING_EPS
from magic_init.algorithm.within_layer import WithinLayer
from magic_init.choices import (DEFAULT_NORMALIZE, FIRST_ROUND_IMAGES, INIT_KINDS, MAX_PATCHES, MEMORY_LIMIT_MB,
                                WHITENING_RANK, check_factors)
from magic_init.memory import release_freed_memory

__all__ = ["initialize", "rescale", "build_passes", "run_passes", "WithinLayer", "BetweenLayer", "SampleRunner", "INIT_KINDS"]

log = logging.getLogger(__name__)

DEFAULT_TOL = float(np.log(1.01))


def run_passes(net, sample, passes, batch_size=16, progress=False, memory_limit_mb=MEMORY_LIMIT_MB):
    """Run ``passes`` in order on one runner; returns ``{pass class name: report, 'seconds': {...}}``.

    ``progress``: progress bars on stderr for the long loops (magic_init.progress). ``batch_size``
    "auto" (``batch_budget.AUTO``): the largest batch up to 16 whose forward+backward pass fits
    ``memory_limit_mb`` MiB (default ``choices.MEMORY_LIMIT_MB``; a BatchStore ``sample`` keeps its own cut)."""
    if batch_size == AUTO:
        images = None if isinstance(sample, BatchStore) else len(next(iter(sample_arrays(sample, net).values())))
        batch_size = resolve_batch_size(net, AUTO, memory_limit_mb, images)
    runner = SampleRunner(net, sample, batch_size, progress=progress)
    report, seconds = {}, {}
    try:
        for position, step in enumerate(passes, 1):
            began = time.perf_counter()
            key = type(step).__name__
            report[key] = step(net, runner)
            seconds[key] = time.perf_counter() - began
            log.info("%s done in %.2f s", key, seconds[key])
            if position == len(passes):
                # after the last pass only: the next pass reuses what one frees (handing it back
                # in between made Algorithm 2's first batches fault it all in again)
                release_freed_memory()
    finally:
        runner.close()
    report["seconds"] = seconds
    return report


def build_passes(within_layer=True, between_layer=True, init="gaussian", beta=0.1, layers=None, seed=0,
                 max_patches=MAX_PATCHES, max_patch_mb=MEMORY_LIMIT_MB, data_driven_fc=False, stats_dropout=True,
                 whitening_eps=WHITENING_EPS, whitening_rank=WHITENING_RANK, alpha=0.25, max_iter=10, tol=DEFAULT_TOL,
                 rounds=2, rate="gradient", exact=False, verify=False, rate_dropout=True, normalize=DEFAULT_NORMALIZE,
                 factors="channel", first_round_images=FIRST_ROUND_IMAGES):
    """The passes of one run, validated before any of them runs (an unknown ``init`` or ``rate``
    raises ValueError here). The one place that turns options into passes: ``initialize``,
    ``rescale`` and the CLI all build them here.

    Args:
        within_layer: Algorithm 1 (``WithinLayer``) on ``layers`` (None: every affine layer).
        between_layer: Algorithm 2 (``BetweenLayer``) on all affine layers; ``exact`` keeps the
            net's function up to one positive output factor (rescaling a loaded model).
        factors: with ``exact``, "channel" gives each convolution output channel its own factor
            (``channel_factors``: equal rates where per-layer factors cannot reach them, e.g. residual
            blocks), "layer" one factor per layer (the paper's Algorithm 2). Without ``exact``: per layer.
        first_round_images: with two or more rounds, Algorithm 2's first measures on the sample's
            first that many images (0 or None: on the whole sample).
        others: the passes' parameters (see WithinLayer and BetweenLayer); Algorithm 2 draws its η
            with ``seed + 1``.

    Returns:
        A list of passes for ``run_passes``.
    """
    check_factors(factors)
    passes = []
    if within_layer:
        passes.append(WithinLayer(init=init, beta=beta, layers=layers, seed=seed, max_patches=max_patches,
                                  max_patch_mb=max_patch_mb, data_driven_fc=data_driven_fc, dropout=stats_dropout,
                                  whitening_eps=whitening_eps, normalize=normalize, whitening_rank=whitening_rank))
    if between_layer:
        passes.append(BetweenLayer(alpha=alpha, max_iter=max_iter, tol=tol, seed=seed + 1, rounds=rounds, rate=rate,
                                   exact=exact, verify=verify, dropout=rate_dropout, channels=factors == "channel",
                                   first_round_images=first_round_images))
    return passes


def initialize(net, sample, init="gaussian", beta=0.1, between_layer=True, alpha=0.25, max_iter=10,
               tol=DEFAULT_TOL, batch_size=AUTO, layers=None, seed=0,
               max_patches=MAX_PATCHES, max_patch_mb=MEMORY_LIMIT_MB, rounds=2, rate="gradient", progress=False,
               verify=False, data_driven_fc=False, rate_dropout=True, stats_dropout=True, normalize=DEFAULT_NORMALIZE,
               memory_limit_mb=MEMORY_LIMIT_MB, whitening_rank=WHITENING_RANK):
    """Algorithm 1 on the affine layers named in ``layers`` (None: every affine layer; the others keep
    their weights), then, with ``between_layer``, Algorithm 2 on all affine layers (LRN passed
    approximately: the net is being initialized, its function need not be kept). ``verify``: Algorithm 2
    measures the change rates once more after its last step. ``data_driven_fc``: the data-driven
    ``init`` also for fully connected layers (default: convolutions only, gaussian rows for fully
    connected ones). ``rate_dropout``: Algorithm 2 measures with Dropout active, as training runs;
    ``stats_dropout``: so does Algorithm 1 (its μ, σ are then those under dropout noise).
    ``normalize``: Algorithm 1 scales each output channel ("channel"), the layer ("layer"), the
    layer for convolutions and each channel for fully connected layers ("conv-layer"), or "auto"
    (the default: "channel" for the data-driven inits; for gaussian "conv-layer" on nets with a deep
    stack of convolutions, else "channel").
    Returns the passes' reports.

    Args:
        net: The net (``build_net``, ``Net`` or ``get_net``); its affine layers' weights and biases are
            changed in place.
        sample: A float32 (N, C, H, W) array for the net's first input, a dict ``{input blob: array}``,
            or a ``magic_init.batch_store.BatchStore`` of such batches (``load_sample(...).batches``:
            then ``batch_size`` is the store's own cut).
        init: Weight init before Algorithm 1's normalization: "gaussian" (the default), "pca", "zca",
            "kmeans" or "rand" (``INIT_KINDS``); another value raises ValueError before any pass runs.
        beta: Mean of the initialized layers' outputs (Algorithm 1; default 0.1).
        between_layer: If True (the default), Algorithm 2 runs after Algorithm 1.
        alpha: Damping of Algorithm 2's updates (default 0.25).
        max_iter: Algorithm 2's analytic iterations per measurement round, at most (default 10).
        tol: Algorithm 2 stops when max_g |log(C̃_g / C̃)| < ``tol`` (default ``DEFAULT_TOL`` = log(1.01)).
        batch_size: Images per forward pass, or "auto" (the default): the largest batch up to 16 whose
            forward+backward pass fits ``memory_limit_mb`` (see ``run_passes``).
        layers: Names of the affine layers Algorithm 1 initializes; None (the default): every one.
        seed: Seed of Algorithm 1's random draws (default 0); Algorithm 2 draws its η with ``seed + 1``.
        max_patches: Input patches gathered per layer for a data-driven ``init``, at most (default
            ``choices.MAX_PATCHES``).
        max_patch_mb: MiB of float32 those patches may take, at most (default 1024).
        rounds: Algorithm 2's measurement rounds, one forward+backward pass each (default 2).
        rate: The change rate Algorithm 2 equalizes: "gradient" (the default, from the measured
            weight gradients) or "eq4" (the paper's Eq. 4); another value raises ValueError.
        progress: If True, progress bars on stderr for the long loops (default False).
        verify: If True, Algorithm 2 measures the change rates once more after its last step (default False).
        data_driven_fc: If True, a data-driven ``init`` is used for fully connected layers too (default False).
        rate_dropout: If True (the default), Algorithm 2 measures with Dropout active.
        stats_dropout: If True (the default), Algorithm 1 measures μ, σ with Dropout active.
        normalize: "auto" (``DEFAULT_NORMALIZE``, the default: ``within_layer.auto_unit``), "conv-layer",
            "channel" or "layer"; another value raises ValueError.
        memory_limit_mb: The MiB budget of ``batch_size="auto"`` (default ``choices.MEMORY_LIMIT_MB``).
        whitening_rank: kmeans and rand whiten the leading ``whitening_rank``·m principal directions of
            a layer's patches for m outputs (default ``choices.WHITENING_RANK``).

    Returns:
        A dict: ``"WithinLayer"``: Algorithm 1's list of per-layer report dicts; ``"BetweenLayer"``
        (only with ``between_layer``): Algorithm 2's report dict (``iterations``, ``scale``,
        ``rate_before``, ``rate_after``, ``spread_before``, ``spread_predicted``, ...); ``"seconds"``:
        ``{pass class name: seconds it took}``.
    """
    passes = build_passes(between_layer=between_layer, init=init, beta=beta, layers=layers, seed=seed,
                          max_patches=max_patches, max_patch_mb=max_patch_mb, data_driven_fc=data_driven_fc,
                          stats_dropout=stats_dropout, alpha=alpha, max_iter=max_iter, tol=tol, rounds=rounds,
                          rate=rate, verify=verify, rate_dropout=rate_dropout, normalize=normalize,
                          whitening_rank=whitening_rank)
    return run_passes(net, sample, passes, batch_size, progress=progress, memory_limit_mb=memory_limit_mb)


def rescale(net, sample, alpha=0.25, max_iter=10, tol=DEFAULT_TOL, batch_size=AUTO, seed=0, rounds=2, rate="gradient",
            progress=False, exact=True, verify=False, rate_dropout=True, factors="channel", memory_limit_mb=MEMORY_LIMIT_MB):
    """Algorithm 2 only (pretrained models, paper §4.3). With ``exact`` (default) the net's function
    is kept up to one positive factor on its output, z_N ← Δ_out·z_N: a scale passes only positively
    homogeneous layers, f(r·x) = r·f(x) for r > 0; the layers whose scale would have to pass another
    (LRN, Sigmoid, BatchNorm, ...) are held fixed, and the report's ``held`` says why. ``verify``:
    measure the change rates once more after the last step (``rate_measured``, ``spread_measured``).
    ``rate_dropout``: measure with Dropout active, as fine-tuning runs.

    Args:
        net: The net (``build_net``, ``Net`` or ``get_net``); its affine layers' weights and biases are
            rescaled in place.
        sample: A float32 (N, C, H, W) array for the net's first input, a dict ``{input blob: array}``,
            or a ``magic_init.batch_store.BatchStore`` of such batches (``load_sample(...).batches``:
            then ``batch_size`` is the store's own cut).
        alpha: Damping of Algorithm 2's updates (default 0.25).
        max_iter: Analytic iterations per measurement round, at most (default 10).
        tol: Algorithm 2 stops when max_g |log(C̃_g / C̃)| < ``tol`` (default ``DEFAULT_TOL`` = log(1.01)).
        batch_size: Images per forward pass, or "auto" (the default): the largest batch up to 16 whose
            forward+backward pass fits ``memory_limit_mb`` (see ``run_passes``).
        seed: Algorithm 2 draws its η (and Dropout masks) with ``seed + 1`` (default 0).
        rounds: Measurement rounds, one forward+backward pass each (default 2).
        rate: The change rate equalized: "gradient" (the default, from the measured weight gradients)
            or "eq4" (the paper's Eq. 4); another value raises ValueError.
        progress: If True, progress bars on stderr for the long loops (default False).
        exact: If True (the default), keep the net's function up to one positive output factor;
            if False, rescale as ``initialize`` does (LRN passed approximately).
        verify: If True, measure the change rates once more after the last step (default False).
        rate_dropout: If True (the default), measure with Dropout active.
        factors: With ``exact``: "channel" (the default) gives each convolution output channel its own
            factor (with the "gradient" rate), "layer" one factor per layer (the paper's Algorithm 2);
            another value raises ValueError. Without ``exact``: one factor per layer.
        memory_limit_mb: The MiB budget of ``batch_size="auto"`` (default ``choices.MEMORY_LIMIT_MB``).

    Returns:
        A dict: ``"BetweenLayer"``: Algorithm 2's report dict (``iterations``, ``scale``, ``rate_before``,
        ``rate_after``, ``spread_before``, ``spread_predicted``, ``pinned``, ``held``, ``output_scale``,
        and with ``verify`` ``rate_measured``, ``spread_measured``); ``"seconds"``: ``{"BetweenLayer": seconds}``.
    """
    passes = build_passes(within_layer=False, alpha=alpha, max_iter=max_iter, tol=tol, seed=seed, rounds=rounds,
                          rate=rate, exact=exact, verify=verify, rate_dropout=rate_dropout, factors=factors)
    return run_passes(net, sample, passes, batch_size, progress=progress, memory_limit_mb=memory_limit_mb)
