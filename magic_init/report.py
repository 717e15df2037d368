"""Render magic_init.measure_stat statistics: a text table, JSON, and a Fig.-1-style PNG.

The primary change rate is measure_stat's gradient definition (``orig_rate_*``, what Algorithm 2
equalizes by default): the table shows it first and the figure plots it; Eq. (4)'s (``rate_*``)
stays in the table and the JSON (``primary_rate`` names the primary one's key prefix).

Computing lives in measure.py; nothing here touches a net. matplotlib is optional and only
imported by ``write_png`` and ``check_plot_format`` (a MagicInitError explains how to get it when it is missing).
"""
from __future__ import annotations

import json
import math
import os

from magic_init.errors import MagicInitError
from magic_init.io import atomic_write

#: Columns of the text table; the primary change rate (measure_stat's gradient definition,
#: ``orig_rate_*`` in the JSON) comes before the paper's Eq. (4) (``rate_*``).
COLUMNS = (("layer", "%-20s", "layer"), ("act_mean", "%9.3f", "act mean"), ("act_std", "%9.3f", "act std"),
           ("act_cv", "%8.3f", "act cv"), ("orig_rate_mean", "%11.4g", "grad rate"),
           ("orig_rate_cv", "%8.3f", "grad cv"), ("rate_mean", "%11.4g", "eq4 rate"), ("rate_cv", "%8.3f", "eq4 cv"))
#: What the plot and the JSON call the two definitions (keys of a layer's statistics: ``<prefix>_mean``).
RATE_NAMES = {"orig_rate": "gradient definition (measure_stat: per input channel, "
                           "sqrt(E[(dl/dW)^2] / mean(W^2)); Algorithm 2's default)",
              "rate": "the paper's Eq. (4), per weight column"}
PRIMARY_RATE = "orig_rate"    # see magic_init.measure_stat
FILLERS_LABEL = "prototxt fillers"


def _width(fmt):
    return int(fmt.strip("%-").split(".")[0].rstrip("sfg"))


def _cell(key, fmt, value):
    if value is None:
        return " " * _width(fmt)
    return fmt % (value[:_width(fmt)] if key == "layer" else value)


def table(stats):
    """Fixed-width text table, one row per affine layer, and a summary line. A blank rate cell is
    undefined (all-zero weights)."""
    header = "  ".join((title.ljust if key == "layer" else title.rjust)(_width(fmt)) for key, fmt, title in COLUMNS)
    rows = ["  ".join(_cell(key, fmt, layer.get(key)) for key, fmt, _ in COLUMNS) for layer in stats["layers"]]
    summary = stats.get("summary", {})
    tail = "change-rate spread (max/min of layer means): gradient (primary) %s, eq.4 %s" % (
        _fmt(summary.get("orig_rate_spread")), _fmt(summary.get("rate_spread")))
    return "\n".join([header, "-" * len(header)] + rows + ["", tail])


def _fmt(value):
    return "n/a" if value is None else "%.3gx" % value


def _json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json_stats(stats, per_channel):
    layers = [{k: v for k, v in layer.items() if per_channel or not k.startswith("channel_")}
              for layer in stats["layers"]]
    return dict(stats, layers=layers, primary_rate=PRIMARY_RATE)


def to_json(stats, per_channel=False):
    """JSON text; per-channel lists are dropped unless ``per_channel``. Always valid JSON: a value
    that is not finite (an undefined rate) is written as null, never as a bare NaN or Infinity."""
    return json.dumps(_json_safe(_json_stats(stats, per_channel)), indent=2, sort_keys=True, allow_nan=False)


def models_to_json(models, per_channel=False):
    """JSON text of several measured models, ``[(label, stats)]``: ``{"models": [stats + "model"]}``."""
    entries = [dict(_json_stats(stats, per_channel), model=label) for label, stats in models]
    return json.dumps(_json_safe({"models": entries, "primary_rate": PRIMARY_RATE}), indent=2, sort_keys=True,
                      allow_nan=False)


def _pyplot(path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MagicInitError("writing %s needs matplotlib (pip install matplotlib)" % path)
    return plt


def plot_format(path):
    """The image format of ``path`` from its extension (png when it has none)."""
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    return extension or "png"


def check_plot_format(path):
    """Raise MagicInitError, before any work, when matplotlib cannot write ``path``'s format."""
    plt = _pyplot(path)
    supported = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if plot_format(path) not in supported:
        raise MagicInitError("%s: matplotlib cannot write '.%s' files; use one of %s"
                             % (path, plot_format(path), ", ".join("." + k for k in sorted(supported))))


def _models(stats_or_models):
    """``[(label, stats)]`` from one statistics dict or a list of labelled ones."""
    if isinstance(stats_or_models, dict):
        return [(stats_or_models.get("model", "net"), stats_or_models)]
    return list(stats_or_models)


def figure(stats_or_models, rate=PRIMARY_RATE, plt=None):
    """The paper's Fig. 1 as a matplotlib figure: (a) average change rate per layer (log scale),
    (b) the coefficient of variation of the change rate within each layer; one line per model,
    named in the legend. ``stats_or_models``: one statistics dict or ``[(label, stats)]``;
    ``rate``: "orig_rate" (the primary, gradient definition) or "rate" (Eq. 4)."""
    plt = plt or _pyplot("the figure")
    models = _models(stats_or_models)
    names = []
    for _, stats in models:
        names += [l["layer"] for l in stats["layers"] if l["layer"] not in names]
    x = list(range(len(names)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    positive = False
    for index, (label, stats) in enumerate(models):
        by_name = {l["layer"]: l for l in stats["layers"]}

        def values(key):
            found = [by_name.get(n, {}).get(key) for n in names]
            return [v if v is not None and math.isfinite(v) else float("nan") for v in found]
        means, cvs = values(rate + "_mean"), values(rate + "_cv")
        drawn = [v > 0 for v in means]     # a rate of 0 or undefined (NaN) has no place on a log axis, nor a CV
        positive = positive or any(drawn)
        missing = drawn.count(False)
        if missing:
            label = "%s (%d layer%s with zero or undefined rate not drawn)" % (label, missing, "s"[:missing > 1])
        style = dict(marker="os^vDP*X"[index % 8], markersize=5, linewidth=1.5, label=label)
        left.plot(x, [v if ok else float("nan") for v, ok in zip(means, drawn)], **style)
        right.plot(x, [v if ok else float("nan") for v, ok in zip(cvs, drawn)], **style)
    if positive:
        left.set_yscale("log")
    else:
        left.text(0.5, 0.5, "no defined change rate", transform=left.transAxes, ha="center")
    images = sorted({stats.get("images") for _, stats in models if stats.get("images")})
    left.set_title("(a) average change rate per layer")
    left.set_ylabel(r"mean change rate $\tilde{C}_k$ (log scale)" "\n"
                    r"[relative weight change $\|\partial\ell/\partial W\| / \|W\|$ per unit learning rate]",
                    fontsize=9)
    right.set_title("(b) coefficient of variation of the change rate within each layer")
    right.set_ylabel(r"std / mean of $\tilde{C}_{k,j}$ over the layer's inputs j" "\n[unitless ratio]", fontsize=9)
    right.set_ylim(bottom=0)
    for axis in (left, right):
        axis.set_xticks(x)
        axis.set_xticklabels(names, rotation=45 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center")
        axis.set_xlabel("layer (affine layers, input to output)")
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, title="model", title_fontsize=8)
    fig.suptitle("Change rate per layer (paper Fig. 1)%s\nplotted: %s" % (
        ", measured on %s images" % "/".join(str(n) for n in images) if images else "", RATE_NAMES[rate]),
        fontsize=10)
    fig.tight_layout()
    return fig


def write_png(stats_or_models, path, rate=PRIMARY_RATE):
    """Fig. 1 of the paper (``figure``), written atomically in the format of ``path``'s extension
    (png by default). ``stats_or_models``: one statistics dict or ``[(label, stats)]``."""
    plt = _pyplot(path)
    fig = figure(stats_or_models, rate=rate, plt=plt)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format=plot_format(path), dpi=110)
    finally:
        plt.close(fig)
