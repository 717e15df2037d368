"""The ``magic_init`` command (click).

    magic_init PROTOTXT OUTPUT [--data SRC] [--init kmeans] [--load MODEL] ...   initialize / rescale
    magic_init stats PROTOTXT [--load MODEL] --data SRC [--json F] [--plot F]    measure (Fig. 1)
    magic_init fold-bn NET MODEL OUT_NET OUT_MODEL                               fold BatchNorm layers

Library code raises ``MagicInitError``; this module is the one place that turns it into a single
``magic_init: error: ...`` line and exit code 1 (click's own usage errors exit 2). Tracebacks are
shown only for unexpected errors with ``-vv`` or MAGIC_INIT_DEBUG=1.
"""
from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
import warnings

import click

from magic_init import __version__, memory, resources
from magic_init.batch_budget import AUTO, MAX_AUTO_BATCH, resolve_batch_size
from magic_init.choices import (DEFAULT_NORMALIZE, FIRST_ROUND_IMAGES, INIT_KINDS, MAX_PATCHES, MEMORY_LIMIT_MB,
                                NORMALIZE_UNITS, RATE_DEFINITIONS, RESCALE_FACTORS, WHITENING_RANK)
from magic_init.errors import MagicInitError
from magic_init.io import STDOUT, atomic_write, check_output, same_file

FAST_MAX_PATCHES = 2000  # sample rows gathered per layer for data-driven inits with --fast
log = logging.getLogger("magic_init")
NOTHING_TO_DO = "nothing to do: both Algorithm 1 (--within-layer) and Algorithm 2 (--between-layer) are off"


class FiniteFloat(click.ParamType):
    """A finite float, optionally bounded: ``low < x`` (or ``low <= x`` with ``closed``) and ``x <= high``.

    NaN and Inf are refused at parse time: a NaN β, scale or mean turns every weight into NaN."""

    name = "float"

    def __init__(self, low=None, high=None, closed=True):
        self.low, self.high, self.closed = low, high, closed

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail("%r is not a number" % (value,), param, ctx)
        if not math.isfinite(number):
            self.fail("%r is not a finite number" % (value,), param, ctx)
        if self.low is not None and (number < self.low or (number == self.low and not self.closed)):
            self.fail("%s is not %s %s" % (value, ">=" if self.closed else ">", self.low), param, ctx)
        if self.high is not None and number > self.high:
            self.fail("%s is not <= %s" % (value, self.high), param, ctx)
        return number


#: Seeds seed numpy, torch and Caffe's generators (Caffe's takes an unsigned 32-bit value; the
#: algorithm also uses seed + 1).
MAX_SEED = 2 ** 31 - 2
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")
DEVICE_FORMS = "cpu, cuda or cuda:N (N: the GPU's index, e.g. cuda:0)"


class BatchSize(click.ParamType):
    """``--batch-size``: a positive integer, or ``auto`` (``magic_init.batch_budget``)."""

    name = "batch size"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == AUTO:
            return AUTO
        try:
            number = int(text)
        except ValueError:
            number = 0
        if number < 1:
            self.fail("%r is not a batch size: use a positive integer or auto" % (value,), param, ctx)
        return number


def _device(ctx, param, value):
    """``--device``: cpu, cuda or cuda:N; anything else is a usage error (exit 2) naming those forms."""
    if not DEVICE_PATTERN.match(value):
        raise click.BadParameter("%r is not a device: use %s" % (value, DEVICE_FORMS))
    return value


class DefaultCommandGroup(click.Group):
    """A group that runs ``init`` when the first argument is not a subcommand name."""

    default_command = "init"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [self.default_command] + list(args)
        return super().parse_args(ctx, args)


def _common_options(func):
    """Options shared by ``init`` and ``stats``: the data sample, the backend, logging."""
    options = [
        click.option("--data", "data", metavar="SRC",
                     help="Sample images: ImageData list, glob, folder, LMDB, or 'prototxt' (the net's data layer)."),
        click.option("--root", type=click.Path(file_okay=False), help="Folder that relative list paths are resolved against."),
        click.option("--load", "load", type=click.Path(dir_okay=False), metavar="MODEL",
                     help="Start from this caffemodel (binary, text or HDF5; legacy formats upgraded)."),
        click.option("--num-images", default=160, show_default=True, type=click.IntRange(1), help="Images in the sample."),
        click.option("--batch-size", default=AUTO, show_default=True, type=BatchSize(), metavar="N|auto",
                     help="Images per forward pass; auto: the largest batch, up to %d, whose forward+backward "
                          "pass fits --memory-limit." % MAX_AUTO_BATCH),
        click.option("--memory-limit", default=MEMORY_LIMIT_MB, show_default=True, type=click.IntRange(16),
                     metavar="MB", help="Memory budget, used twice (never at once): the patches gathered by "
                                        "pca/zca/kmeans/rand, and, with --batch-size auto, one forward+backward "
                                        "pass: the weights and their gradients, and the batch in what they leave "
                                        "(at least a quarter; the library comes on top)."),
        click.option("--mean", metavar="B,G,R", callback=lambda ctx, param, text: _parse_floats(text, "--mean"),
                     help="Mean to subtract (overrides the prototxt's transform_param)."),
        click.option("--scale", type=FiniteFloat(), help="Multiply pixels by this after mean subtraction."),
        click.option("--size", metavar="H[,W]", callback=lambda ctx, param, text: _parse_size(text),
                     help="Input size (overrides the net's input shape)."),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED),
                     help="Seed for sampling and random inits."),
        click.option("--backend", type=click.Choice(("auto", "caffe", "torch")), default="auto", show_default=True,
                     help="pycaffe when it imports (auto), or force one."),
        click.option("--device", default="cpu", show_default=True, callback=_device, metavar="cpu|cuda|cuda:N",
                     help="cpu, cuda or cuda:N (the N-th GPU)."),
        click.option("--rate-dropout/--no-rate-dropout", default=True, show_default=True,
                     help="Measure change rates (Algorithm 2, stats) with Dropout active, as training runs; "
                          "--no-rate-dropout: the deterministic TEST-phase net."),
        click.option("-q", "--quiet", is_flag=True,
                     help="Only warnings and errors; no progress bars, no Caffe (glog) lines, no numpy warnings."),
        click.option("-v", "--verbose", count=True,
                     help="-v: per-layer progress and results; -vv: magic_init's debug output, with tracebacks."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _setup_logging(quiet, verbose):
    """Log to stderr; returns whether to draw progress bars (not --quiet, stderr is a terminal).

    Levels apply to the ``magic_init`` loggers only: INFO (summary lines), VERBOSE with -v (per-layer
    progress and results), DEBUG with -vv, WARNING with -q. Other libraries' loggers (matplotlib,
    PIL, ...) stay at WARNING whatever -v says. Python warnings (numpy's RuntimeWarnings) become one
    logged line each, and are dropped with -q; -q also silences Caffe's glog (pycaffe backend).
    With bars, log lines go through tqdm.write so that they print above the bar, not into it.
    Calling it again (one process, several commands) replaces what the previous call set up."""
    from magic_init.backends import set_caffe_log_level
    from magic_init.progress import VERBOSE, BarSafeHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else VERBOSE if verbose == 1 else logging.INFO)
    progress = not quiet and sys.stderr.isatty()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "magic_init_cli", False)]:
        root.removeHandler(handler)
    handler = BarSafeHandler(bars=progress)
    handler.magic_init_cli = True
    handler.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG else "%(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)     # third-party libraries: warnings and errors only
    log.setLevel(level)                # the magic_init hierarchy: what -q / -v / -vv ask for
    _route_warnings(quiet)
    set_caffe_log_level(quiet)         # before anything imports caffe (build_net does, later)
    return progress


def _log_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` for the CLI: one log line (``py.warnings``), not Python's two-line
    ``file:line: Category: message`` + source dump."""
    if file is not None:       # someone asked for a specific stream: leave it to Python
        return _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)
    logging.getLogger("py.warnings").warning("warning: %s: %s (%s:%d)", category.__name__, message,
                                             os.path.basename(filename), lineno)


_PYTHON_SHOWWARNING = warnings.showwarning


def _route_warnings(quiet):
    """Python warnings as log lines; with -q numpy's floating-point RuntimeWarnings are dropped
    (divide by zero, invalid value: the code handles the NaN/Inf where it can arise)."""
    warnings.showwarning = _log_warning
    if quiet:
        warnings.filterwarnings("ignore", category=RuntimeWarning)


def _parse_floats(text, what):
    """Comma-separated finite numbers (``--mean``, ``--size``), or None."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, got %r" % text, param_hint=what)
    if not all(math.isfinite(v) for v in values):
        raise click.BadParameter("expected finite numbers, got %r" % text, param_hint=what)
    return values


def _parse_size(text):
    """``--size H[,W]`` as (H, W), or None."""
    values = _parse_floats(text, "--size")
    if values is None:
        return None
    if len(values) not in (1, 2) or min(values) < 1:
        raise click.BadParameter("expected H or H,W", param_hint="--size")
    return (int(values[0]), int(values[-1]))


def _model_and_net(prototxt, kw):
    """`init`'s first steps: read the model, build its net (``_build_net``, which `stats` calls per model)."""
    from magic_init import load

    model = load.read_model(prototxt, kw["load"])
    return model, _build_net(model, kw)


def _build_net(model, kw, **options):
    """Build ``model``'s net with the run's options (``options``: more of load.build_net's), check it
    has affine layers, and settle ``kw["batch_size"]`` (``auto``: from the net and --memory-limit)."""
    from magic_init import load

    net = load.build_net(model, backend=kw["backend"], device=kw["device"], batch_size=kw["batch_size"],
                         size=kw["size"], data=kw["data"], root=kw["root"], **options)
    load.affine_layer_names(net)
    kw["batch_size"] = resolve_batch_size(net, kw["batch_size"], kw["memory_limit"], kw["num_images"])
    return net


def _sample(net, model, kw, progress):
    """Read and preprocess the sample images for ``net``."""
    from magic_init import load

    return load.load_sample(net, model, data=kw["data"], root=kw["root"], num_images=kw["num_images"],
                            batch_size=kw["batch_size"], mean=kw["mean"], scale=kw["scale"], size=kw["size"],
                            seed=kw["seed"], progress=progress)


def _within_layer_choice(kw, plan, verbose):
    """Whether Algorithm 1 runs: by default when the plan initializes any layer. Logs what --load
    matched; refuses --no-within-layer when it would leave layers the model lacks at zero."""
    if kw["load"]:
        _log_load_match(kw["load"], plan, verbose)
    within = kw["within_layer"] if kw["within_layer"] is not None else bool(plan.initialize)
    if not within and plan.new:
        source = ("%s does not provide them" % kw["load"]) if kw["load"] else "nothing is loaded without --load"
        raise click.UsageError("--no-within-layer would leave %s at zero: %s" % (_names(plan.new), source))
    if not within and (kw["zero_all"] or kw["zero_from"]):
        raise click.UsageError("--zero-all/--zero-from re-initialize layers, which needs Algorithm 1 (--within-layer)")
    if not within and not kw["between_layer"]:
        raise click.UsageError(NOTHING_TO_DO)
    return within


def _log_load_match(path, plan, verbose):
    """Say what the --load model provided: a warning when it matched no layer; names with -v."""
    if not plan.loaded:
        log.warning("%s shares no affine layer name with the net: nothing was loaded, every layer is "
                    "initialized%s", path, "" if verbose else " (-v lists the names)")
    else:
        log.info("loaded %d of %d affine layers from %s; Algorithm 1 initializes %s", len(plan.loaded),
                 len(plan.loaded) + len(plan.new), path, _names(plan.initialize) if plan.initialize else "none")
    if verbose:
        if plan.new:
            log.info("affine layers %s does not provide: %s", path, _names(plan.new))
        if plan.unmatched:
            log.info("layers of %s that the net does not have (ignored): %s", path, _names(plan.unmatched))


def _names(names, limit=12):
    shown = ", ".join("'%s'" % n for n in names[:limit])
    return shown + (" and %d more" % (len(names) - limit) if len(names) > limit else "")


def _run_inputs(prototxt, kw):
    """The files a run reads, which none of its outputs may replace."""
    inputs = {"PROTOTXT": prototxt, "--load model": kw["load"]}
    if kw["data"] and os.path.isfile(kw["data"]):
        inputs["--data file"] = kw["data"]
    return inputs


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="magic_init")
def cli():
    """Data-dependent initialization of Caffe models (Krähenbühl et al., ICLR 2016).

    Run `magic_init PROTOTXT OUTPUT --data SRC` to initialize (the default command, `init`),
    or `magic_init stats PROTOTXT --data SRC` to measure a net.
    """


@cli.command("init")
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--init", "init", type=click.Choice(INIT_KINDS), default="gaussian", show_default=True,
              help="Weight initialization before within-layer normalization (paper §3.3).")
@click.option("--beta", default=0.1, show_default=True, type=FiniteFloat(),
              help="Mean of the initialized layers' outputs (Alg. 1). Negative values are allowed: they start "
                   "the ReLUs above sparser.")
@click.option("--within-layer/--no-within-layer", default=None,
              help="Algorithm 1 on the layers to initialize: all affine layers; with --load those the model "
                   "does not provide (and --zero-all/--zero-from). Default: on when there are any (a --load "
                   "model that provides every layer is only rescaled, paper §4.3).")
@click.option("--between-layer/--no-between-layer", default=True, show_default=True,
              help="Algorithm 2: equalize change rates across layers.")
@click.option("--alpha", default=0.25, show_default=True, type=FiniteFloat(0, 1, closed=False),
              help="Damping of Algorithm 2, in (0, 1].")
@click.option("--max-iter", default=10, show_default=True, type=click.IntRange(0), help="Algorithm 2 iterations at most.")
@click.option("--tol", default=0.01, show_default=True, type=FiniteFloat(0),
              help="Algorithm 2 stops when every layer's change rate is within this relative distance of the mean.")
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(1),
              help="Algorithm 2 measurement rounds: each re-measures the change rates with one forward+backward "
                   "pass, then iterates (corrects what LRN's non-homogeneity makes the analytic update miss).")
@click.option("--first-round-images", default=FIRST_ROUND_IMAGES, show_default=True, type=click.IntRange(0),
              help="With two or more --rounds, the first measures the change rates on the sample's first N "
                   "images only (the last round measures on all); 0: every round on the whole sample.")
@click.option("--rate", "rate", type=click.Choice(RATE_DEFINITIONS), default="gradient", show_default=True,
              help="Change rate Algorithm 2 equalizes: 'gradient' from the measured weight gradients (Eq. 3, "
                   "as the original's measure_stat), 'eq4' from the paper's factorized Eq. 4.")
@click.option("--data-driven-fc", is_flag=True, default=False,
              help="Apply pca/zca/kmeans/rand to fully connected layers too (default: convolutions only, "
                   "gaussian rows for fully connected layers, as in the paper's §3.3).")
@click.option("--whitening-eps", default=1e-3, show_default=True, type=FiniteFloat(0, closed=False),
              help="Whitening regularization of pca/zca/kmeans/rand: ε added to the patch covariance's "
                   "eigenvalues, relative to their mean (larger: smoother filters).")
@click.option("--max-patches", default=MAX_PATCHES, show_default=True, type=click.IntRange(1),
              help="Input patches pca/zca/kmeans/rand gather per layer (at locations sampled over the whole sample).")
@click.option("--whitening-rank", default=WHITENING_RANK, show_default=True, type=FiniteFloat(1),
              help="kmeans/rand whiten the leading R·m principal directions of a layer's patches for m outputs "
                   "(the original code: 1).")
@click.option("--normalize", type=click.Choice(NORMALIZE_UNITS), default=DEFAULT_NORMALIZE, show_default=True,
              help="What Algorithm 1 scales to unit variance: each output channel (the paper's Alg. 1), "
                   "the layer as a whole (one factor per layer: the drawn rows keep their relative norms), "
                   "the layer for convolutions and each channel for fully connected layers (conv-layer), "
                   "or auto: channel for pca/zca/kmeans/rand; for gaussian conv-layer on nets with 4 or more "
                   "convolutions, channel on shallower ones.")
@click.option("--factors", type=click.Choice(RESCALE_FACTORS), default="channel", show_default=True,
              help="With --load and nothing re-initialized (exact rescaling, the function kept): Algorithm 2 "
                   "gives each convolution output channel its own factor, undone in the layers that read it "
                   "(reaches equal rates where per-layer factors cannot, e.g. in residual blocks), or one "
                   "factor per layer (the paper's Algorithm 2). Initializing: always per layer.")
@click.option("--stats-dropout/--no-stats-dropout", default=True, show_default=True,
              help="Algorithm 1 normalizes each layer's outputs with Dropout active, as training runs "
                   "(the original tool's TRAIN-phase statistics); --no-stats-dropout: deterministic "
                   "TEST-phase statistics, which leave the layers above a dropout layer with a larger "
                   "output variance in training.")
@click.option("--zero-all", is_flag=True, help="Re-initialize every affine layer, even those with weights.")
@click.option("--zero-from", metavar="LAYER", help="Re-initialize LAYER and every affine layer after it.")
@click.option("--fast", is_flag=True,
              help="Fast mode: gather at most %d patches per layer for pca/zca/kmeans/rand (at most --max-patches) "
                   "and measure change rates once (--rounds 1)." % FAST_MAX_PATCHES)
@click.option("--overwrite", is_flag=True, help="Allow OUTPUT to be the --load file.")
@_common_options
def init_command(prototxt, output, **kw):
    """Initialize PROTOTXT's weights from data and write OUTPUT (a caffemodel)."""
    from magic_init import load

    verbose = kw.pop("verbose")  # -v: per-layer lines; Algorithm 2 also measures its result (BetweenLayer verify)
    progress = _setup_logging(kw.pop("quiet"), verbose)
    inputs = _run_inputs(prototxt, kw)
    if kw["load"] and same_file(kw["load"], output):
        if not kw["overwrite"]:
            raise click.UsageError("OUTPUT is the --load model; pass --overwrite to replace it")
        del inputs["--load model"]
    check_output(output, inputs)
    if kw["within_layer"] is False and not kw["between_layer"]:
        raise click.UsageError(NOTHING_TO_DO)
    if kw["zero_all"] and kw["zero_from"]:
        raise click.UsageError("--zero-all and --zero-from exclude each other (--zero-all re-initializes every layer)")
    if not kw["load"] and (kw["zero_all"] or kw["zero_from"]):
        log.warning("--zero-all/--zero-from without --load: every affine layer is initialized anyway")
    model, net = _model_and_net(prototxt, kw)
    plan = load.plan_initialization(model, net, kw["zero_all"], kw["zero_from"])
    within = _within_layer_choice(kw, plan, verbose)
    sample = _sample(net, model, kw, progress)
    from magic_init.algorithm import build_passes, run_passes

    passes = build_passes(
        within_layer=within, between_layer=kw["between_layer"], init=kw["init"], beta=kw["beta"],
        layers=plan.initialize, seed=kw["seed"], max_patch_mb=kw["memory_limit"],
        max_patches=min(FAST_MAX_PATCHES, kw["max_patches"]) if kw["fast"] else kw["max_patches"],
        data_driven_fc=kw["data_driven_fc"], stats_dropout=kw["stats_dropout"], whitening_eps=kw["whitening_eps"],
        whitening_rank=kw["whitening_rank"], alpha=kw["alpha"],
        max_iter=kw["max_iter"], tol=math.log1p(kw["tol"]), rounds=1 if kw["fast"] else kw["rounds"],
        rate=kw["rate"], verify=verbose >= 1, rate_dropout=kw["rate_dropout"], normalize=kw["normalize"],
        # nothing re-initialized: the loaded model is rescaled, keep its function
        factors=kw["factors"], exact=not plan.initialize, first_round_images=kw["first_round_images"])
    run_passes(net, sample.batches, passes, batch_size=kw["batch_size"], progress=progress)
    load.save_model(output, model, net)
    log.info("wrote %s", output)
    _write_sized_prototxt(prototxt, output, model, net, kw, dict(inputs, OUTPUT=output))


def _write_sized_prototxt(prototxt, output, model, net, kw, inputs):
    """When --size changed a layer's parameter shapes (an InnerProduct's input), OUTPUT does not fit
    PROTOTXT: write ``<OUTPUT stem>.size<H>x<W>.prototxt``, PROTOTXT at that size, beside it (never
    over one of the run's files) and say so in one warning."""
    from google.protobuf import text_format

    from magic_init import load

    change = load.size_change(model, net, kw["size"], kw["data"], kw["root"])
    if change is None:
        return
    name, kind, own, current = change
    path = "%s.size%dx%d.prototxt" % ((os.path.splitext(output)[0],) + tuple(kw["size"]))
    try:
        check_output(path, inputs, what="the sized prototxt")
        sized = load.sized_net_param(model.net, kw["size"], load.input_blob(net.net_param))
        with atomic_write(path) as f:
            f.write(text_format.MessageToString(sized).encode())
        written = "wrote %s, which it fits" % path
    except (MagicInitError, OSError) as error:
        written = "no prototxt that fits it written (%s)" % error
    log.warning("--size %d,%d changes the input of %s '%s' (weights %s, not %s): %s does not fit %s; %s",
                kw["size"][0], kw["size"][1], kind, name, current[0], own[0], output, prototxt, written)


def _stats_options(func):
    """``_common_options`` with ``--load`` repeatable: ``stats`` overlays several models."""
    func = _common_options(func)
    for i, param in enumerate(func.__click_params__):
        if param.name == "load":
            func.__click_params__[i] = click.Option(
                ["--load", "load"], multiple=True, type=click.Path(dir_okay=False), metavar="MODEL",
                help="Measure this caffemodel (repeatable: each is measured and plotted as one model; "
                     "layers it lacks keep the prototxt's fillers). Without --load: the prototxt's fillers.")
    return func


def _stats_models(loads, fillers):
    """``[(legend label, caffemodel path or None)]``: the prototxt's fillers (None) first when asked
    for or when nothing is loaded, then each --load, named by its file name (its path when two
    share a name)."""
    from magic_init.report import FILLERS_LABEL

    entries = ([None] if fillers or not loads else []) + list(loads)
    names = [os.path.basename(p) for p in loads]
    return [(FILLERS_LABEL if p is None else (os.path.basename(p) if names.count(os.path.basename(p)) == 1 else p), p)
            for p in entries]


def _warn_zero_filled(model, net, label):
    """One warning naming the affine layers that the fillers left all zero (measured as such)."""
    from magic_init import load

    zero = load.zero_filled_layers(model, net)
    if not zero:
        return
    unnamed = [name for name, reason in zero if reason == "no weight_filler"]
    named = [name for name, reason in zero if reason != "no weight_filler"]
    parts = []
    if unnamed:
        parts.append("%s %s no weight_filler, and Caffe's default filler is constant 0"
                     % (_names(unnamed), "has" if len(unnamed) == 1 else "have"))
    if named:
        parts.append("the weight_filler of %s gives all zeros" % _names(named))
    log.warning("%s: %s: measured with all-zero weights, so %s change rate is undefined (blank in the table, "
                "null in --json) and no gradient passes %s to the layers below", label, "; ".join(parts),
                "its" if len(zero) == 1 else "their", "it" if len(zero) == 1 else "them")


@cli.command("stats")
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the statistics as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write the paper's Fig. 1: change rate and its coefficient of variation per layer, "
                   "one line per model.")
@click.option("--fillers", is_flag=True,
              help="Also measure the prototxt's own fillers (what is measured without --load), "
                   "beside the --load models.")
@_stats_options
def stats_command(prototxt, json_path, plot_path, fillers, **kw):
    """Print per-layer activation and change-rate statistics (paper Fig. 1).

    Measures the net as --load gives it, or, without --load, as the prototxt's fillers initialize
    it (seeded by --seed), as `caffe train` would start. Several --load (and --fillers) compare
    models: one table each, one line each in --plot, {"models": [...]} in --json.
    """
    from magic_init import load, measure_stat, report

    progress = _setup_logging(kw.pop("quiet"), kw.pop("verbose"))
    loads = kw.pop("load")
    inputs = _run_inputs(prototxt, dict(kw, load=None))
    inputs.update(("--load model %d" % (i + 1), path) for i, path in enumerate(loads))
    if json_path and json_path != STDOUT:
        check_output(json_path, inputs, what="--json")
    if plot_path:
        check_output(plot_path, dict(inputs, **({"--json file": json_path} if json_path else {})), what="--plot")
        report.check_plot_format(plot_path)
    entries = _stats_models(loads, fillers)
    models = [(label, load.read_model(prototxt, path)) for label, path in entries]   # bad files fail before any work
    measured, sample = [], None
    for label, model in models:
        net = _build_net(model, kw, fillers=True, seed=kw["seed"])
        if model.weights_path:
            plan = load.plan_initialization(model, net)
            if not plan.loaded:
                log.warning("%s shares no affine layer name with the net: it is measured with the prototxt's fillers",
                            model.weights_path)
            elif plan.new:
                log.info("%s does not provide %s: measured with the prototxt's fillers", model.weights_path,
                         _names(plan.new))
        _warn_zero_filled(model, net, label)
        if sample is None:
            sample = _sample(net, model, kw, progress)
        stats = measure_stat.measure(net, sample.batches, batch_size=kw["batch_size"], seed=kw["seed"],
                                     progress=progress, rate_dropout=kw["rate_dropout"])
        measured.append((label, dict(stats, model=label)))
        del net
    for label, stats in measured:    # --json -: stdout carries the JSON only
        if len(measured) > 1:
            click.echo("== %s ==" % label, err=json_path == STDOUT)
        click.echo(report.table(stats), err=json_path == STDOUT)
    text = report.to_json(measured[0][1]) if len(measured) == 1 else report.models_to_json(measured)
    if json_path == STDOUT:
        click.echo(text)
    elif json_path:
        with atomic_write(json_path) as f:
            f.write(text.encode())
    if plot_path:
        report.write_png(measured, plot_path)


@cli.command("torch")
@click.argument("factory", metavar="FACTORY")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--data", "data", metavar="SRC", required=True,
              help="Sample: a tensor file (.npy, or .pt holding a tensor (N, ...)), or images (ImageData list, "
                   "glob, folder, LMDB; with --size).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), metavar="IN.pt",
              help="Start from this state_dict and only rescale (Algorithm 2, the function kept, paper §4.3).")
@click.option("--init", "init", type=click.Choice(INIT_KINDS), default="kmeans", show_default=True,
              help="Weight initialization before within-layer normalization (without --checkpoint).")
@click.option("--beta", default=0.1, show_default=True, type=FiniteFloat(), help="Mean of the initialized layers' outputs.")
@click.option("--between-layer/--no-between-layer", default=True, show_default=True,
              help="Algorithm 2: equalize change rates across layers.")
@click.option("--alpha", default=0.25, show_default=True, type=FiniteFloat(0, 1, closed=False),
              help="Damping of Algorithm 2, in (0, 1].")
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(1), help="Algorithm 2 measurement rounds.")
@click.option("--factors", type=click.Choice(RESCALE_FACTORS), default="channel", show_default=True,
              help="With --checkpoint: a factor per convolution output channel, or one per layer.")
@click.option("--num-images", default=160, show_default=True, type=click.IntRange(1), help="Images in the sample.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1), help="Images per pass.")
@click.option("--size", metavar="H[,W]", callback=lambda ctx, param, text: _parse_size(text),
              help="Images: the size they are resized to (the model's input size).")
@click.option("--mean", metavar="R,G,B", callback=lambda ctx, param, text: _parse_floats(text, "--mean"),
              help="Images: per-channel mean of pixels/255 [default: 0.485,0.456,0.406].")
@click.option("--std", metavar="R,G,B", callback=lambda ctx, param, text: _parse_floats(text, "--std"),
              help="Images: per-channel std of pixels/255 [default: 0.229,0.224,0.225].")
@click.option("--gray", is_flag=True, help="Images: read one gray channel.")
@click.option("--root", type=click.Path(file_okay=False), help="Folder that relative list paths are resolved against.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED),
              help="Seed for sampling and random inits.")
@click.option("--device", default="cpu", show_default=True, callback=_device, metavar="cpu|cuda|cuda:N",
              help="Where the model runs.")
@click.option("--overwrite", is_flag=True, help="Allow OUTPUT to be the --checkpoint file.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("-v", "--verbose", count=True, help="-v: per-layer results; -vv: debug output, with tracebacks.")
def torch_command(factory, output, overwrite, quiet, verbose, **kw):
    """Initialize the PyTorch model FACTORY (package.module:callable) from data and write OUTPUT (a state_dict).

    With --checkpoint the loaded model is rescaled so that every layer learns at the same rate,
    computing the same function up to one positive factor on its output."""
    from magic_init import torch_job

    progress = _setup_logging(quiet, verbose)
    inputs = {"--data file": kw["data"]} if os.path.isfile(kw["data"]) else {}
    if kw["checkpoint"]:
        if same_file(kw["checkpoint"], output) and not overwrite:
            raise click.UsageError("OUTPUT is the --checkpoint file; pass --overwrite to replace it")
        if not same_file(kw["checkpoint"], output):
            inputs["--checkpoint"] = kw["checkpoint"]
    check_output(output, inputs)
    report = torch_job.run(factory, output, progress=progress, verify=verbose >= 1, **kw)
    between = report.get("BetweenLayer")
    if between:
        log.info("change-rate spread %.3g -> %.3g (predicted)", between["spread_before"], between["spread_predicted"])
    log.info("wrote %s", output)


@cli.command("fold-bn")
@click.argument("net", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("out_net", type=click.Path(dir_okay=False))
@click.argument("out_model", type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug, with tracebacks).")
def fold_bn_command(net, model, out_net, out_model, quiet, verbose):
    """Fold BatchNorm (and Scale) layers into the affine layers before them.

    Writes OUT_NET (prototxt) and OUT_MODEL (caffemodel) computing NET/MODEL's TEST-phase function;
    BatchNorm layers that cannot be folded are kept and named in the log."""
    from magic_init.fold_bn import fold_bn_files

    _setup_logging(quiet, verbose)
    fold_bn_files(net, model, out_net, out_model)


def _debug(args=None):
    """MAGIC_INIT_DEBUG=1, or -v given twice or more in ``args`` (default: sys.argv), in any
    spelling: -vv, -v -v, --verbose --verbose, -qvv (tracebacks for unexpected errors)."""
    if os.environ.get("MAGIC_INIT_DEBUG") == "1":
        return True
    count = 0
    for arg in (sys.argv[1:] if args is None else args):
        if arg == "--":
            break
        if arg == "--verbose":
            count += 1
        elif re.match(r"^-[qvh]+$", arg):
            count += arg.count("v")
    return count >= 2


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt, so that ``atomic_write`` removes
    its temporary file, then the process exits with 128 + the signal number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def main(argv=None):
    """Entry point: run the CLI, turning our errors into one line and a non-zero exit."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    memory.use_small_pages()
    memory.reuse_freed_memory()
    raw_args = sys.argv[1:] if argv is None else list(argv)
    try:
        # a bundled file named by its repository path (models/tiny.prototxt) works from any folder
        args = resources.resolve_argv(raw_args)
        cli.main(args=args, prog_name="magic_init", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("magic_init: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except MagicInitError as e:
        click.echo("magic_init: error: %s" % e, err=True)
        sys.exit(1)
    except MemoryError as e:
        click.echo("magic_init: error: out of memory%s: try a smaller --batch-size, --num-images or "
                   "--memory-limit" % (" (%s)" % e if str(e) else ""), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("magic_init: interrupted", err=True)
        sys.exit(128 + signal.SIGINT)
    except Terminated as e:
        click.echo("magic_init: terminated by %s" % signal.Signals(e.signum).name, err=True)
        sys.exit(128 + e.signum)
    except Exception as e:  # a bug: one line unless debugging
        if _debug(raw_args):
            raise
        click.echo("magic_init: internal error: %s: %s (rerun with -vv for the traceback)"
                   % (type(e).__name__, e), err=True)
        sys.exit(70)
