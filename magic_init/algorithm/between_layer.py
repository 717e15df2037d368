"""Algorithm 2 (paper §3.2): between-layer scale adjustment.

Measure the change rates once (rates.RateMeter: one forward+backward pass over the whole
sample, η drawn per image), then iterate on them analytically:

    C̃_k = mean_j C̃_{k,j},   C̃ = (Π_k C̃_k)^(1/K),   s_k = (C̃_k / C̃)^(α/2),

and rescale. As in the paper's procedure (and the original code), s_k is a *step* on top of the
scale layer k's input already received: the output of layer k ends up multiplied by
Δ_k = s_k · Δ_in(k), where Δ_in(k) is the factor its input carries (geometric mean over its
columns). Weights and biases become W_k(:, j) ← W_k(:, j)·Δ_k/Δ_src(j), b_k ← Δ_k·b_k — exact
for homogeneous paths, so the net's output is only multiplied by the output's Δ (a positive
constant; Π s_k = 1 on a chain by the geometric mean). Under this update, with y_k scaled by
Δ_out/Δ_k and z_{k-1}(j) by Δ_src(j), Eq. (4) gives C̃_k ← C̃_k·Δ_out/s_k² per iteration: each
layer moves towards C̃ by the factor (C̃_k/C̃)^(-α) and the layers do not push their error into
each other (a pure "undo in the next layer" scheme does: it moves layer k's excess to layer k+1).

The analytic update equals a re-measurement to float precision on homogeneous nets (tested on
the engine and the numpy fake net). LRN is not
homogeneous at the activation scales Algorithm 1 produces (y = x·(k + α/n·Σx²)^(-β) tends to
degree 1−2β), so after ``max_iter`` analytic steps we re-measure and repeat, ``rounds`` times
(default 2; each round is one forward+backward pass, the first over ``first_round_images`` of
the sample). Damping is what makes the rounds converge
(the spread after 1-4 rounds: docs/RESULTS.md, "Measurements behind design choices").

Rate definition (``rate``): "gradient" (default) takes C̃_{k,j} from the measured weight
gradients (Eq. 3, no independence assumption); "eq4" from the factorized Eq. (4). They agree for
Gaussian inits, but k-means filters correlate z_{k-1} with y_k, and then Eq. 4 underestimates the
gradient rates of some layers, so calibrating on it leaves a spread in the real (measure_stat) rates
(docs/RESULTS.md). The original code also calibrates on measured gradients.

The rescaled layers are the affine layers and the Scale layers with one bottom and a learned,
unshared per-channel γ (``NetDescription.rescalable_layers``): y_c = γ_c·x_c + β_c is affine with a
diagonal weight (column j = channel j, C̃_{k,j} = |∂ℓ/∂γ_j|/‖γ‖_rms), so γ, β ← Δ·γ, Δ·β multiplies
its output by Δ like W, b ← Δ·W, Δ·b. On BatchNorm nets they are the layers that move: TEST-phase
BatchNorm is not homogeneous, so the conv in front of it is held, and its Scale takes over.

Layers tied by Eltwise, or sharing a parameter blob, share one factor (the first member's; a shared
blob is scaled once); pinned layers (scale blocked by a non-homogeneous layer, see scale_graph,
all-zero weights, or no gradient reaching them) keep Δ = 1; the report says why each is held
(``held``).

Exact rescaling (``exact=True``, pretrained models, paper §4.3): the update above keeps the net's
function only where every layer f between layer k and the layers that undo Δ_k satisfies
f(Δ·x) = Δ·f(x), Δ > 0. With ``exact`` the scale graph lets a factor pass only such layers (LRN
becomes a barrier) and ties all output channels into one factor, so after rescaling
z_N = Δ_out·z_N^before for every input, with one Δ_out > 0 (argmax, and so the predictions, are
unchanged). Without it (initialization from scratch) LRN is passed approximately. With ``exact`` the
default gives each convolution output channel its own factor (``channel_factors``), which keeps the
function just as well and is not bound by the per-block invariant of residual nets.

The spread max_k C̃_k / min_k C̃_k (1 = calibrated) is logged before and after; "after" is the
analytic prediction, unless ``verify`` measures it once more after the last step.

Stop when max_g |log(C̃_g / C̃)| < tol or after ``max_iter`` steps. We use the paper's damping α
(default 0.25), not the original's α = 1, and no output-std correction (the analytic update is
exact where it applies).
"""
from __future__ import annotations

import logging

import numpy as np

from magic_init.algorithm.description import describe
from magic_init.algorithm.channel_factors import ChannelFactors
from magic_init.algorithm.rates import RateMeter, check_factors, scale_columns
from magic_init.algorithm.scale_graph import NO_GRADIENT, ZERO_INPUT, ZERO_WEIGHTS, ChannelGraph, ScaleGraph
from magic_init.choices import FIRST_ROUND_IMAGES, check_rate
from magic_init.errors import MagicInitError, NetDefinitionError
from magic_init.progress import VERBOSE
from magic_init.timing import span

log = logging.getLogger(__name__)


def geometric_mean(values):
    values = np.asarray(values, dtype=np.float64)
    return float(np.exp(np.mean(np.log(values)))) if len(values) else 1.0


def _input_factor(columns, delta):
    """Δ_src(j) per column (1 where a column carries no factor)."""
    return np.where(columns >= 0, delta[np.maximum(columns, 0)], 1.0)


def _output_factor(graph, delta):
    """Geometric mean of the factors the output channels carry (the net output's overall scale)."""
    factors = [_input_factor(src, delta) for src in graph.outputs if src is not None]
    return geometric_mean(np.concatenate(factors)) if factors else 1.0


class BetweenLayer:
    """Algorithm 2 as a pass: ``BetweenLayer(alpha=0.25)(net, runner) -> report dict``.

    ``rounds`` measurement rounds (one forward+backward pass each), each followed by up to
    ``max_iter`` analytic iterations; a second round corrects what the analytic update gets
    wrong where the net is only approximately homogeneous (LRN).

    ``exact``: rescale a pretrained model without changing its function beyond one positive factor
    on the output: a scale passes only layers f with f(r·x) = r·f(x) for all r > 0 (LRN becomes a
    barrier, scale_graph.ScaleGraph), so every weight update W(:, j) ← W(:, j)·Δ_k/Δ_src(j),
    b ← Δ_k·b is undone exactly further up and z_N ← Δ_out·z_N.

    ``channels`` (with ``exact`` and the "gradient" rate): one factor per convolution output channel
    instead of per layer (``channel_factors.ChannelFactors``: one measurement, then the factors that
    equalize the rates, whose prediction is exact for a rescaling that keeps the function; the output
    keeps factor 1). It reaches equal rates where per-layer factors cannot, in residual blocks.

    ``dropout``: measure the rates with Dropout active as in training (rates.RateMeter); the
    analytic update is exact for a fixed mask, and each round draws fresh masks.

    ``verify``: after the last analytic step, measure the change rates once more (one more
    forward+backward pass with the same RateMeter, its generator reset to the state of the last
    round's measurement: the same random draws, η and dropout masks included, so that measured minus
    predicted is the analytic update's error alone, not the sampling noise of fresh draws); reported
    as ``rate_measured`` and ``spread_measured``. When the last round made no step, its own
    measurement already is that measurement.

    The report: ``iterations``, ``scale`` (Δ_k per layer), ``rate_before``, ``rate_after``
    (predicted), ``spread_before``, ``spread_predicted`` (max/min of C̃_k over the free layers),
    ``pinned`` (held layers, in order), ``held`` ({layer: why it keeps its scale}), ``output_scale``
    (the factor the net's output is multiplied by), and with ``verify`` the measured rates."""

    def __init__(self, alpha=0.25, max_iter=10, tol=np.log(1.01), seed=0, rounds=2, rate="gradient",
                 exact=False, verify=False, dropout=True, channels=True, first_round_images=FIRST_ROUND_IMAGES):
        self.alpha, self.max_iter, self.tol, self.seed, self.rounds = alpha, max_iter, tol, seed, rounds
        self.first_round_images = first_round_images or None
        check_rate(rate)                 # before any pass: a typo must not cost a forward+backward pass
        self.rate = rate
        self.exact, self.verify = bool(exact), bool(verify)
        self.dropout = bool(dropout)
        # per-channel factors need the gradient rates' per-row statistics (Eq. 4's factors have none)
        self.channels = bool(channels) and self.exact and rate == "gradient"

    def __call__(self, net, runner):
        outcome = self._per_channel(net, runner) if self.channels else self._per_layer(net, runner)
        meter, graph, before, after = outcome["meter"], outcome["graph"], outcome["before"], outcome["after"]
        held = graph.held_reasons()
        pinned = list(held)
        report = {"iterations": outcome["iterations"], "scale": outcome["scale"], "factors": outcome["factors"],
                  "rate_before": before, "rate_after": after, "pinned": pinned, "held": held,
                  "output_scale": outcome["output_scale"],
                  "spread_before": spread(before, pinned), "spread_predicted": spread(after, pinned)}
        if self.verify:
            if outcome["changed"]:
                meter.rng.bit_generator.state = outcome["eta_state"]
                runner.pass_label = "Algorithm 2, verification"
                with span("Algorithm 2", "verification (forward+backward)"):
                    rates = meter.measure(runner)
                measured = _rates([rates[name] for name in graph.names])
            else:
                measured = dict(after)
            report["rate_measured"] = measured
            report["spread_measured"] = spread(measured, pinned)
            result = "%.3gx (predicted), %.3gx (measured after the last step)" % (
                report["spread_predicted"], report["spread_measured"])
        else:
            result = "%.3gx (predicted; -v measures it)" % report["spread_predicted"]
        for name in graph.names:
            log.log(VERBOSE, "Algorithm 2: layer '%s': %s", name, _layer_result(report, held, name))
        zero = [name for name in graph.names if not np.any(net.params[name][0].data)]
        for name, why in held.items():
            if why in (NO_GRADIENT, ZERO_INPUT):
                log.warning("between-layer: layer '%s' held fixed: %s (%s)", name, why,
                            _why_no_signal(graph.names, name, zero, why))
            else:
                log.info("between-layer: layer '%s' held fixed: %s", name, why)
        log.info("between-layer: %s; change-rate spread %.3gx -> %s", outcome["steps"], report["spread_before"], result)
        return report

    def _per_layer(self, net, runner):
        """The paper's Algorithm 2: one factor per layer, ``rounds`` measurements with analytic steps."""
        meter = RateMeter(net, seed=self.seed, definition=self.rate, dropout=self.dropout)
        scale, iterations, before, rounds_run, steps = None, 0, None, 0, 0
        for round_index in range(self.rounds):
            rounds_run += 1
            runner.pass_label = "Algorithm 2, round %d/%d" % (round_index + 1, self.rounds)
            graph = ScaleGraph(net, meter.last, exact=self.exact)
            eta_state = meter.rng.bit_generator.state
            log.log(VERBOSE, "Algorithm 2: round %d of %d: measuring the change rates of %d layer(s) "
                    "(one forward+backward pass)", round_index + 1, self.rounds, len(graph.names))
            sub = self.first_round_images if round_index == 0 and self.rounds > 1 else None
            if sub is not None and sub < runner.images():
                log.log(VERBOSE, "Algorithm 2: round 1 measures on the first %d of %d images", sub, runner.images())
            else:
                sub = None
            with span("Algorithm 2", "round %d" % (round_index + 1), "measuring (forward+backward)"):
                layers = self.measure(meter, graph, runner, sub)
            measured = _rates(layers)
            before = before or measured
            with span("Algorithm 2", "round %d" % (round_index + 1), "analytic steps"):
                total, steps = self.iterate(graph, layers)
                self.apply(net, graph, layers, total)
            log.log(VERBOSE, "Algorithm 2: round %d of %d: %d analytic step(s), change-rate spread %.3gx -> %.3gx "
                    "(predicted)", round_index + 1, self.rounds, steps, spread(measured, graph.held_reasons()),
                    spread(_rates(layers), graph.held_reasons()))
            scale = total if scale is None else scale * total
            iterations += steps
            if steps == 0:
                break
        return {"meter": meter, "graph": graph, "before": before, "after": _rates(layers), "iterations": iterations,
                "scale": dict(zip(graph.names, scale.tolist())), "factors": "per layer",
                "output_scale": _output_factor(graph, scale), "changed": steps > 0, "eta_state": eta_state,
                "steps": "%d analytic iteration(s) over %d measurement round(s) (at most %d per round)" % (
                    iterations, rounds_run, self.max_iter)}

    def _per_channel(self, net, runner):
        """Exact rescaling with one factor per convolution output channel (``channel_factors``): one
        measurement, then the factors that equalize the predicted rates, which are exact."""
        graph = ChannelGraph(net, describe(net).last_compute_layer(), exact=True)
        rows = [name for name, units in zip(graph.names, graph.units) if len(units) > 1]
        meter = RateMeter(net, seed=self.seed, definition=self.rate, dropout=self.dropout, rows=rows)
        runner.pass_label = "Algorithm 2, per-channel factors"
        eta_state = meter.rng.bit_generator.state
        log.log(VERBOSE, "Algorithm 2: measuring the change rates of %d layer(s) (one forward+backward pass)",
                len(graph.names))
        with span("Algorithm 2", "measuring (forward+backward)"):
            layers = self.measure(meter, graph, runner)
        with span("Algorithm 2", "per-channel factors"):
            factors = ChannelFactors(net, graph, layers)
            x, iterations = factors.solve(tol=self.tol)
        before = _rates(layers)
        after = {name: None if before[name] is None else float(np.exp(value))
                 for name, value in zip(graph.names, factors.log_rates(x))}
        factors.apply(x)
        rows = factors.row_factors(x)
        return {"meter": meter, "graph": graph, "before": before, "after": after, "iterations": iterations,
                "scale": {name: geometric_mean(f) for name, f in zip(graph.names, rows)}, "factors": "per channel",
                "output_scale": 1.0, "changed": bool(np.any(x)), "eta_state": eta_state,
                "steps": "one factor per convolution output channel (exact), %d L-BFGS iteration(s) over one "
                         "measurement, %d free factor(s)" % (iterations, factors.size)}

    @staticmethod
    def measure(meter, graph, runner, images=None):
        """Eq. (4) factors of the graph's layers; layers with all-zero weights (rate undefined), layers no
        gradient reaches and layers with a zero weight gradient are pinned. Non-finite measurements
        raise MagicInitError naming the layer (a NaN or Inf in the weights or the sample)."""
        rates = meter.measure(runner, images)
        layers = [rates[name] for name in graph.names]
        _check_finite(meter.net, layers)
        if layers and all(r.y_sq.sum() == 0 for r in layers):
            raise NetDefinitionError("no gradient reaches any affine layer of the net: build it with "
                                     "force_backward: true (a net without a loss computes no backward)")
        for k, name in enumerate(graph.names):
            if not np.any(meter.net.params[name][0].data):
                graph.pin_layer(k, ZERO_WEIGHTS)
            elif layers[k].y_sq.sum() == 0:
                graph.pin_layer(k, NO_GRADIENT)
            elif layers[k].rate() == 0:
                graph.pin_layer(k, ZERO_INPUT)
        return layers

    def iterate(self, graph, layers):
        """Damped analytic iterations; returns the total factor Δ per layer and the step count.

        Each step moves the groups' log-factors u_g = log Δ_g by α times the least-squares step
        δu* of the linear model of the log change rates (``linear_model``):

            δu* = argmin ‖P(d + A·δu)‖²,  subject to a_out·δu = 0 (initializing), or among the
                  minimizers the one with a_out·δu = 0 if any (rescaling exactly),

        d_k = log C̃_k − mean log C̃, P the centering projection: the step that brings the rates
        closest to equal and keeps the scale of the net's output (its geometric-mean factor
        Δ_out): Algorithm 1 set the output layer's outputs to unit variance, and a rescaled
        pretrained model computes exactly what it computed. Initializing, the output scale is kept
        always: on a ResNet without BatchNorm, equal rates are only reachable by shrinking the
        output many times over, and that trained worse than keeping it (docs/TORCH.md); rescaling
        exactly, the rates come first (the function is kept up to Δ_out anyway). On a chain A is invertible and the
        step is log s_k = α·d_k/2, the paper's update s_k = (C̃_k/C̃)^(α/2), with Π_k s_k = 1: the
        output's scale and the rates' geometric mean are both kept. Where layers are tied
        (Eltwise SUM, shared blobs, exact rescaling) it accounts for the ties: a residual block's
        last layer must keep the trunk's factor, so a step on the block's inner layers changes the
        last layer's rate too; updating each group alone towards C̃ moves those layers away."""
        total = np.ones(len(layers))
        free = [k for k in range(len(layers)) if not graph.pinned(k)]
        if not free:
            log.warning("between-layer: no layer can be rescaled")
            return total, 0
        groups = list(dict.fromkeys(graph.group(k) for k in free))
        model, output = self.linear_model(graph, layers, free, groups)
        for step in range(self.max_iter):
            log_rate = np.log([layers[k].rate() for k in free])
            d = log_rate - log_rate.mean()
            if np.max(np.abs(d)) < self.tol:
                return total, step
            du = _least_squares_step(model - model.mean(axis=0), -d, output, hard=not self.exact)
            if np.max(np.abs(du)) < self.tol / 4:   # the ties leave no better point
                return total, step
            factor = dict(zip(groups, np.exp(self.alpha * du)))
            delta = np.array([factor.get(graph.group(k), 1.0) if k in free else 1.0 for k in range(len(layers))])
            self._update(graph, layers, delta)
            total *= delta
        return total, self.max_iter

    @staticmethod
    def linear_model(graph, layers, free, groups):
        """The first-order model of the log change rates in the groups' log-factors u_g:

            δ log C̃_k = δu_out − 2·δu_g(k) + 2·mean_j δu_src(j)

        (y_k carries Δ_out/Δ_k, W(:, j) carries Δ_k/Δ_src(j): C̃_k ∝ Δ_out·Δ_src²/Δ_k²; pinned
        layers' factors stay 1). Returns (A: one row per free layer, one column per group, without
        the common δu_out; a_out: δu_out = a_out·δu, the output's geometric-mean factor)."""
        column = {g: i for i, g in enumerate(groups)}
        free_set = set(free)

        def source_weights(sources):
            row = np.zeros(len(groups))
            sources = np.asarray(sources)
            for src, count in zip(*np.unique(sources[sources >= 0], return_counts=True)):
                if int(src) in free_set:
                    row[column[graph.group(int(src))]] += count / len(sources)
            return row

        model = np.zeros((len(free), len(groups)))
        for i, k in enumerate(free):
            model[i] = 2 * source_weights(graph.columns[layers[k].name])
            model[i, column[graph.group(k)]] -= 2
        outputs = [src for src in graph.outputs if src is not None]
        out = source_weights(np.concatenate(outputs)) if outputs else np.zeros(len(groups))
        return model, out

    @staticmethod
    def _update(graph, layers, delta):
        """Factors after one step: z_{k-1}(j)·Δ_src(j), y_k·Δ_out/Δ_k, W(:, j)·Δ_k/Δ_src(j), ∂ℓ/∂W(:, j) by both."""
        out = _output_factor(graph, delta)
        for k, rates in enumerate(layers):
            src = _input_factor(graph.columns[rates.name], delta)
            rates.col_sq = rates.col_sq * src ** 2
            rates.col_w2 = rates.col_w2 * (delta[k] / src) ** 2
            rates.y_sq = rates.y_sq * (out / delta[k]) ** 2
            rates.col_g2 = rates.col_g2 * (src * out / delta[k]) ** 2

    @staticmethod
    def apply(net, graph, layers, total):
        """Write the factors into the net: W_k(:, j) *= Δ_k/Δ_src(j), b_k *= Δ_k.

        Every factor must be a finite positive float32 (checked before anything is written: an
        undefined rate must have been held, not turned into 0, Inf or NaN); MagicInitError otherwise."""
        for rates, factor in zip(layers, total):
            check_factors(rates.name, [factor])
        columns = [total[k] / _input_factor(graph.columns[r.name], total) for k, r in enumerate(layers)]
        for rates, column in zip(layers, columns):
            check_factors(rates.name, column)
        shared = describe(net).shared          # a shared blob is scaled once, by its owner
        for k, rates in enumerate(layers):
            blobs = net.params[rates.name]
            if (rates.name, 0) not in shared:
                scale_columns(rates.kind, blobs[0].data, rates.group, columns[k])
            for j, blob in enumerate(blobs[1:], 1):
                if (rates.name, j) not in shared:
                    blob.data[...] *= np.float32(total[k])
            if not all(np.all(np.isfinite(blob.data)) for blob in blobs):
                raise MagicInitError("between-layer: rescaling layer '%s' by %.3g made its weights overflow"
                                     % (rates.name, total[k]))


def _least_squares_step(matrix, target, constraint, hard=False, reference=None):
    """x minimizing ‖matrix·x − target‖; among the minimizers the one closest to constraint·x = 0,
    then the one of least norm (directions the matrix does not see, relative to its largest
    singular value or ``reference``, count as its null space). ``hard``: the minimizer among the x
    with constraint·x = 0 (a zero constraint constrains nothing); directions the matrix does not see
    there are not taken, so a step that only the output's scale could buy is no step."""
    if hard and constraint @ constraint > 0:
        _, _, vt = np.linalg.svd(constraint[None, :], full_matrices=True)
        complement = vt[1:].T                      # an orthonormal basis of {x: constraint·x = 0}
        largest = np.linalg.norm(matrix, 2) if matrix.size else 0.0
        return complement @ _least_squares_step(matrix @ complement, target, np.zeros(complement.shape[1]),
                                                reference=largest)
    u, sv, vt = np.linalg.svd(matrix, full_matrices=True)
    rank = int(np.sum(sv > 1e-9 * max(sv.max(initial=0.0), reference or 0.0, 1e-300)))
    x = vt[:rank].T @ ((u[:, :rank].T @ target) / sv[:rank])
    null = vt[rank:].T
    pull = null.T @ constraint
    if null.size and pull @ pull > 1e-18 * (constraint @ constraint):
        x = x - null @ pull * (constraint @ x) / (pull @ pull)
    return x


def spread(rates, exclude=()):
    """max/min of the per-layer rates (excluding ``exclude`` and undefined ones): 1 means perfectly calibrated."""
    values = [r for name, r in rates.items() if name not in exclude and r is not None and r > 0]
    return max(values) / min(values) if values else 1.0


def _layer_result(report, held, name):
    """One layer's outcome for the -v line: its factor Δ_k and change rate before -> after, or why it is held."""
    def rate(value):
        return "undefined" if value is None else "%.3g" % value

    text = "scale x%.4g, change rate %s -> %s (predicted)" % (report["scale"][name], rate(report["rate_before"][name]),
                                                              rate(report["rate_after"][name]))
    if "rate_measured" in report:
        text += ", %s (measured)" % rate(report["rate_measured"][name])
    if name in held:
        text += "; held fixed: %s" % held[name]
    return text


def _rates(layers):
    """``{layer: C̃_k}``, None where it is undefined (all-zero weights: ‖W‖ = 0)."""
    return {r.name: (r.rate() if r.col_w2.any() else None) for r in layers}


def _check_finite(net, layers):
    """Raise MagicInitError when a measured factor is NaN or Inf, naming where it comes from: a
    parameter blob with NaN/Inf, else the lowest layer whose input is not finite (the sample or a
    layer below), else the highest layer whose gradient is not finite (a layer above)."""
    def finite(*arrays):
        return all(np.all(np.isfinite(a)) for a in arrays)

    if all(finite(r.col_sq, r.y_sq, r.col_w2, r.col_g2) for r in layers):
        return
    for name, blobs in net.params.items():
        for j, blob in enumerate(blobs):
            if not finite(blob.data):
                raise MagicInitError("between-layer: layer '%s' blob %d contains NaN or Inf values: "
                                     "cannot measure change rates" % (name, j))
    for r in layers:
        if not finite(r.col_sq):
            raise MagicInitError("between-layer: the input of layer '%s' is not finite on the sample (NaN or Inf "
                                 "from the sample or a layer below it)" % r.name)
    for r in reversed(layers):
        if not finite(r.y_sq, r.col_g2, r.col_w2):
            raise MagicInitError("between-layer: the gradient reaching layer '%s' is not finite (NaN or Inf "
                                 "from a layer above it)" % r.name)


def _why_no_signal(names, name, zero_layers, why):
    """The likely cause of a layer without gradient or input: the all-zero affine layers above it
    (no gradient) or below it (no input), if any."""
    position = names.index(name)
    blocking = [z for z in zero_layers if (names.index(z) > position) == (why == NO_GRADIENT)]
    if blocking:
        return "affine layer(s) with all-zero weights block the signal: %s" % ", ".join(blocking)
    if why == NO_GRADIENT:
        return "the layers above it pass no gradient back on the sample, e.g. a ReLU that is zero on every image"
    return "its input is zero on every image of the sample"
