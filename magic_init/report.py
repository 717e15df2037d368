"""Render magic_init.measure_stat statistics: a text table, JSON, and a Fig.-1-style PNG.

Computing lives in measure.py; nothing here touches a net. matplotlib is optional and only
imported by ``write_png`` and ``check_plot_format`` (a MagicInitError explains how to get it when it is missing).
"""
from __future__ import annotations

import json
import os

from magic_init.errors import MagicInitError
from magic_init.io import atomic_write

COLUMNS = (("layer", "%-20s", "layer"), ("act_mean", "%9.3f", "act mean"), ("act_std", "%9.3f", "act std"),
           ("act_cv", "%8.3f", "act cv"), ("rate_mean", "%11.4g", "rate mean"), ("rate_cv", "%8.3f", "rate cv"),
           ("orig_rate_mean", "%11.4g", "orig mean"), ("orig_rate_cv", "%8.3f", "orig cv"))


def _width(fmt):
    return int(fmt.strip("%-").split(".")[0].rstrip("sfg"))


def _cell(key, fmt, value):
    if value is None:
        return " " * _width(fmt)
    return fmt % (value[:_width(fmt)] if key == "layer" else value)


def table(stats):
    """Fixed-width text table, one row per affine layer, and a summary line."""
    header = "  ".join((title.ljust if key == "layer" else title.rjust)(_width(fmt)) for key, fmt, title in COLUMNS)
    rows = ["  ".join(_cell(key, fmt, layer.get(key)) for key, fmt, _ in COLUMNS) for layer in stats["layers"]]
    summary = stats.get("summary", {})
    tail = "change-rate spread (max/min of layer means): eq.4 %s, measure_stat %s" % (
        _fmt(summary.get("rate_spread")), _fmt(summary.get("orig_rate_spread")))
    return "\n".join([header, "-" * len(header)] + rows + ["", tail])


def _fmt(value):
    return "n/a" if value is None else "%.3gx" % value


def to_json(stats, per_channel=False):
    """JSON text; per-channel lists are dropped unless ``per_channel``."""
    layers = [{k: v for k, v in layer.items() if per_channel or not k.startswith("channel_")}
              for layer in stats["layers"]]
    return json.dumps(dict(stats, layers=layers), indent=2, sort_keys=True)


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


def write_png(stats, path):
    """Fig. 1 of the paper: (a) mean change rate per layer (log scale), (b) its coefficient of variation.

    Written atomically, in the format of ``path``'s extension (png by default)."""
    plt = _pyplot(path)
    layers = [l for l in stats["layers"] if "rate_mean" in l]
    names = [l["layer"] for l in layers]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, [l["rate_mean"] for l in layers])
    left.set_yscale("log")
    left.set_title("(a) average change rate per layer")
    right.bar(names, [l["rate_cv"] for l in layers])
    right.set_title("(b) coefficient of variation of the change rate")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    with atomic_write(path) as f:
        figure.savefig(f, format=plot_format(path))
    plt.close(figure)
