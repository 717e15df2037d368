"""magic_init.report (text table, JSON, the Fig. 1 figure) and the `stats` command that feeds it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from magic_init import report

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny.prototxt"
IMAGES = REPO / "examples" / "images" / "list.txt"


def _refuse(constant):
    raise ValueError("bare %s in the JSON" % constant)


def strict_json(text):
    """json.loads that refuses NaN, Infinity and -Infinity (Python's json accepts them by default)."""
    return json.loads(text, parse_constant=_refuse)


def fake_stats(rates, cvs, images=8):
    """Statistics shaped like measure_stat.measure's, with given gradient rates and CVs per layer."""
    layers = [{"layer": "l%d" % i, "type": "Convolution", "act_mean": 0.1, "act_std": 1.0, "act_cv": 0.0,
               "orig_rate_mean": r, "orig_rate_cv": c, "rate_mean": 2.0, "rate_cv": 0.5}
              for i, (r, c) in enumerate(zip(rates, cvs))]
    return {"layers": layers, "summary": {"rate_spread": 1.0, "orig_rate_spread": None, "max_act_cv": 0.0},
            "images": images}


def test_json_is_valid_with_non_finite_values():
    stats = fake_stats([float("nan"), float("inf"), 1.0], [float("-inf"), 0.2, 0.3])
    stats["summary"]["rate_spread"] = float("nan")
    for text in (report.to_json(stats), report.models_to_json([("a", stats), ("b", stats)])):
        assert "NaN" not in text and "Infinity" not in text
        strict_json(text)
    decoded = strict_json(report.to_json(stats))
    assert [l["orig_rate_mean"] for l in decoded["layers"]] == [None, None, 1.0]
    assert decoded["layers"][0]["orig_rate_cv"] is None and decoded["summary"]["rate_spread"] is None
    assert decoded["primary_rate"] == "orig_rate"
    models = strict_json(report.models_to_json([("a", stats), ("b", stats)]))
    assert [m["model"] for m in models["models"]] == ["a", "b"]


def test_table_shows_the_primary_rate_first_and_blank_for_undefined():
    text = report.table(fake_stats([3.0, None], [0.25, None]))
    header = text.splitlines()[0]
    assert header.index("grad rate") < header.index("eq4 rate")
    assert "gradient (primary)" in text.splitlines()[-1]
    row = [line for line in text.splitlines() if line.startswith("l1 ")][0]
    assert "3" not in row.split()[4:] and len(row.split()) == 6   # layer, 3 act columns, the eq4 pair


def _figure(models, **kw):
    pytest.importorskip("matplotlib")
    plt = report._pyplot("test")
    return plt, report.figure(models, plt=plt, **kw)


def test_figure_has_two_panels_log_rate_and_a_legend_entry_per_model():
    models = [("prototxt fillers", fake_stats([30.0, 10.0, 1.0], [0.1, 0.5, 1.2])),
              ("a.caffemodel", fake_stats([100.0, 110.0, 120.0], [0.1, 0.2, 0.3])),
              ("b.caffemodel", fake_stats([5.0, 0.0, 7.0], [0.1, 0.2, 0.3]))]
    plt, fig = _figure(models)
    try:
        left, right = fig.axes            # exactly two panels, no colorbar or extra axes
        assert left.get_yscale() == "log" and right.get_yscale() == "linear"
        texts = [t.get_text() for t in left.get_legend().get_texts()]
        assert len(texts) == 3 and texts[0] == "prototxt fillers" and texts[1] == "a.caffemodel"
        assert texts[2].startswith("b.caffemodel") and "not drawn" in texts[2]   # its zero rate cannot be on a log axis
        assert len(left.get_lines()) == len(right.get_lines()) == 3
        for axis in (left, right):
            assert axis.get_xlabel() and axis.get_ylabel() and axis.get_title()
            assert [t.get_text() for t in axis.get_xticklabels()] == ["l0", "l1", "l2"]
        assert "log scale" in left.get_ylabel() and "learning rate" in left.get_ylabel()
        assert "unitless" in right.get_ylabel()
        title = fig._suptitle.get_text()
        assert "gradient definition" in title and "8 images" in title
        # the plotted values are the primary (gradient) rates, not Eq. 4's constant 2.0
        np.testing.assert_allclose(left.get_lines()[1].get_ydata(), [100.0, 110.0, 120.0])
        assert math.isnan(left.get_lines()[2].get_ydata()[1]) and math.isnan(right.get_lines()[2].get_ydata()[1])
    finally:
        plt.close(fig)
    plt, fig = _figure(models[:1], rate="rate")
    try:
        assert "Eq. (4)" in fig._suptitle.get_text()
        np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [2.0, 2.0, 2.0])
    finally:
        plt.close(fig)


def _run_stats(monkeypatch, args):
    """`magic_init stats ARGS` in this process; returns (exit code, stdout, stderr, models plotted)."""
    from click.testing import CliRunner

    from magic_init.cli import cli

    plotted = []
    real = report.write_png
    monkeypatch.setattr(report, "write_png", lambda models, path, **kw: (plotted.append(models),
                                                                          real(models, path, **kw)))
    try:
        runner = CliRunner(mix_stderr=False)     # click < 8.2 mixes stderr into stdout by default
    except TypeError:
        runner = CliRunner()                     # click >= 8.2 keeps them apart, without the argument
    result = runner.invoke(cli, ["stats"] + [str(a) for a in args])
    return result, plotted


def _write_scaled_model(path, scale, seed):
    """A caffemodel of the tiny net with N(0, scale²) weights, bias 0."""
    from magic_init import load
    from magic_init.io import write_caffemodel

    model = load.read_model(str(TINY))
    net = load.build_net(model, backend="torch", batch_size=1)
    rng = np.random.default_rng(seed)
    weights = {name: [(rng.standard_normal(b[0].data.shape) * scale).astype(np.float32),
                      np.zeros(b[1].data.shape, np.float32)] for name, b in net.params.items()}
    write_caffemodel(str(path), model.net, weights)


SMALL = ["--data", IMAGES, "--num-images", 4, "--batch-size", 2, "--backend", "torch", "-q"]


def test_stats_without_load_measures_the_fillers_and_compares_loaded_models(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    result, plotted = _run_stats(monkeypatch, [TINY] + SMALL + ["--json", tmp_path / "one.json",
                                                                "--plot", tmp_path / "one.png"])
    assert result.exit_code == 0, result.stderr
    one = strict_json((tmp_path / "one.json").read_text())
    assert one["model"] == "prototxt fillers"
    assert all(l["orig_rate_mean"] > 0 and l["rate_mean"] > 0 for l in one["layers"])
    assert [label for label, _ in plotted[0]] == ["prototxt fillers"]

    _write_scaled_model(tmp_path / "a.caffemodel", 0.01, 1)
    _write_scaled_model(tmp_path / "b.caffemodel", 0.1, 2)
    args = [TINY] + SMALL + ["--load", tmp_path / "a.caffemodel", "--load", tmp_path / "b.caffemodel",
                             "--fillers", "--json", tmp_path / "all.json", "--plot", tmp_path / "all.png"]
    result, plotted = _run_stats(monkeypatch, args)
    assert result.exit_code == 0, result.stderr
    labels = ["prototxt fillers", "a.caffemodel", "b.caffemodel"]
    assert [label for label, _ in plotted[0]] == labels
    assert [line for line in result.stdout.splitlines() if line.startswith("==")] == ["== %s ==" % l for l in labels]
    every = strict_json((tmp_path / "all.json").read_text())
    assert [m["model"] for m in every["models"]] == labels
    # b is a with every layer 10x larger (another draw): with zero biases a homogeneous net's gradient
    # of layer k scales by 10^(L-1) and ‖W_k‖ by 10, so each of the L = 4 rates by 10^(L-2) = 100
    # (tiny's LRN is not homogeneous, and the draws differ: a wide band around 100)
    a, b = (every["models"][i]["layers"] for i in (1, 2))
    ratios = [y["orig_rate_mean"] / x["orig_rate_mean"] for x, y in zip(a, b)]
    assert all(30 < r < 300 for r in ratios), ratios
    plt, fig = _figure(plotted[0])
    try:
        assert len(fig.axes) == 2
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == labels
    finally:
        plt.close(fig)
    assert (tmp_path / "all.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_init_keeps_a_single_load():
    from magic_init.cli import init_command, stats_command

    assert not {p.name: p for p in init_command.params}["load"].multiple
    assert {p.name: p for p in stats_command.params}["load"].multiple
