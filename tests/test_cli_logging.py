"""Logs a user can steer (issue 12): what -q, (nothing), -v and -vv print on stderr.

    -q    warnings and errors only: no Caffe glog lines, no numpy RuntimeWarnings
    (none) one summary line per step, one result line per layer of Algorithm 1
    -v    + per-layer progress of Algorithm 1 and Algorithm 2 and each layer's result
    -vv   + debug output of the magic_init loggers only (other libraries stay at WARNING)

The runs go through click's CliRunner in this process (PyTorch is imported once: a run of the tiny
net on 4 images takes about a second); the Caffe one runs in the real-Caffe chroot.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from magic_init import cli as cli_module

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny.prototxt"
IMAGES = REPO / "examples" / "images" / "list.txt"
FAST = ["--num-images", "4", "--batch-size", "4", "--backend", "torch", "--rounds", "1", "--max-iter", "3"]
AFFINE = ["conv1", "conv2", "fc3", "fc4"]

pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    """The CLI sets up logging for the whole process: put it back after each test."""
    root, ours = logging.getLogger(), logging.getLogger("magic_init")
    handlers, root_level, our_level = list(root.handlers), root.level, ours.level
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(root_level)
    ours.setLevel(our_level)


def invoke(tmp_path, *args):
    """Run ``magic_init ARGS`` through CliRunner; returns (exit code, stderr lines)."""
    try:
        runner = CliRunner(mix_stderr=False)     # click < 8.2
    except TypeError:
        runner = CliRunner()                     # click >= 8.2: stderr is always apart
    result = runner.invoke(cli_module.cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


def init(tmp_path, *flags, prototxt=TINY):
    return invoke(tmp_path, prototxt, tmp_path / "out.caffemodel", "--data", IMAGES, *FAST, *flags)


def with_extra_logging(monkeypatch, effect):
    """Run ``effect()`` in the middle of a run (after the sample is read), as a library would."""
    from magic_init import load

    original = load.load_sample

    def load_sample(*args, **kwargs):
        effect()
        return original(*args, **kwargs)

    monkeypatch.setattr(load, "load_sample", load_sample)


# --- -v: per-layer progress and results ----------------------------------------------------------------

def test_v_adds_one_progress_and_one_result_line_per_layer_for_each_algorithm(tmp_path):
    code, default = init(tmp_path)
    assert code == 0, default
    code, verbose = init(tmp_path, "-v")
    assert code == 0, verbose
    assert not [line for line in default if line.startswith(("Algorithm 1:", "Algorithm 2:"))], default
    on_layer = [re.match(r"Algorithm 1: layer '(\w+)' \((\w+), (\d) of 4 affine layers\)", line) for line in verbose]
    assert [(m.group(1), m.group(3)) for m in on_layer if m] == [(n, str(i)) for i, n in enumerate(AFFINE, 1)], verbose
    stats = [line for line in verbose if re.match(r"Algorithm 1: layer '\w+': outputs before normalization", line)]
    assert len(stats) == 4, verbose
    results = [re.match(r"Algorithm 2: layer '(\w+)': scale x[0-9.e+-]+, change rate \S+ -> \S+ \(predicted\), "
                        r"\S+ \(measured\)", line) for line in verbose]
    assert [m.group(1) for m in results if m] == AFFINE, verbose
    assert any(line.startswith("Algorithm 2: round 1 of 1: measuring") for line in verbose), verbose
    # the default's lines are all still there, in the same order
    assert [line for line in verbose if line in default or "done in" in line or "spread" in line][:3] == \
        [line for line in default if line in verbose or "done in" in line or "spread" in line][:3]


# --- -vv: magic_init's debug output only ------------------------------------------------------------------

def test_vv_is_debug_output_of_magic_init_only(tmp_path, monkeypatch):
    def chatty_library():
        for name in ("matplotlib.font_manager", "PIL.PngImagePlugin", "thirdparty"):
            other = logging.getLogger(name)
            other.debug("%s debug line", name)
            other.info("%s info line", name)
        logging.getLogger("thirdparty").warning("thirdparty warning line")

    with_extra_logging(monkeypatch, chatty_library)
    code, lines = init(tmp_path, "-vv")
    assert code == 0, lines
    assert "magic_init.backends: backend torch (asked for torch), device cpu" in lines, lines   # our debug
    assert not [line for line in lines if "debug line" in line or "info line" in line], lines
    assert "thirdparty: thirdparty warning line" in lines, lines          # their warnings still show
    assert all(line.startswith(("magic_init", "thirdparty: thirdparty warning")) for line in lines), lines
    assert logging.getLogger("matplotlib").getEffectiveLevel() == logging.WARNING
    assert len(lines) < 60, len(lines)


def test_vv_in_a_real_process_does_not_print_matplotlibs_font_search(tmp_path):
    """The case the issue saw: -vv gave ~2,000 lines of matplotlib.font_manager debug (a findfont
    scores every installed font). Run as a user would, in a fresh process."""
    pytest.importorskip("matplotlib")
    script = ("import sys, magic_init.load as load\n"
              "original = load.load_sample\n"
              "def load_sample(*a, **k):\n"
              "    import matplotlib.font_manager as fm\n"
              "    fm.findfont('DejaVu Sans', rebuild_if_missing=False)\n"
              "    return original(*a, **k)\n"
              "load.load_sample = load_sample\n"
              "from magic_init.cli import main\n"
              "main(sys.argv[1:])\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLCONFIGDIR=str(tmp_path / "mpl"))
    result = subprocess.run([sys.executable, "-c", script, str(TINY), str(tmp_path / "out.caffemodel"), "--data",
                             str(IMAGES), *FAST, "-vv"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("magic_init") for line in lines), [l for l in lines if "magic_init" not in l][:5]
    assert len(lines) < 60, len(lines)


def test_debug_counts_every_spelling_of_two_v(monkeypatch):
    monkeypatch.delenv("MAGIC_INIT_DEBUG", raising=False)
    for args in (["-vv"], ["-v", "-v"], ["--verbose", "-v"], ["-qvv"], ["a.prototxt", "-vvv"]):
        assert cli_module._debug(args), args
    for args in (["-v"], ["--verbose"], [], ["--", "-vv"], ["-vq"]):
        assert not cli_module._debug(args), args


# --- -q: warnings and errors only; numpy warnings and Caffe's glog too ---------------------------------------

def divide_by_zero():
    return np.ones(2) / np.zeros(2)         # RuntimeWarning: divide by zero encountered in divide


def test_q_prints_nothing_for_a_clean_run_even_with_a_numpy_warning(tmp_path, monkeypatch):
    with_extra_logging(monkeypatch, divide_by_zero)
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        code, lines = init(tmp_path, "-q")
    assert code == 0 and lines == [], lines
    assert not [w for w in raw if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in raw]


def test_without_q_a_numpy_warning_is_one_logged_line_not_a_raw_python_warning(tmp_path, monkeypatch):
    with_extra_logging(monkeypatch, divide_by_zero)
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        code, lines = init(tmp_path)
    assert code == 0, lines
    assert not [w for w in raw if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in raw]
    warned = [line for line in lines if "divide by zero" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: RuntimeWarning: divide by zero"), lines
    assert not [line for line in lines if line.startswith(" ") or re.search(r"\.py:\d+: RuntimeWarning", line)], lines


def test_q_sets_caffes_glog_level_before_caffe_is_imported(tmp_path, monkeypatch):
    """GLOG_minloglevel is read when libcaffe loads: the CLI sets it before building the net."""
    for environment, flags, level in ((None, ["-q"], "2"), ("0", ["-q"], "2"),     # -q wins
                                      ("0", [], "0"), ("3", ["-v"], "3"),        # else the user's choice
                                      (None, [], "1"), (None, ["-vv"], "1")):    # default: Caffe's warnings
        if environment is None:
            monkeypatch.delenv("GLOG_minloglevel", raising=False)
        else:
            monkeypatch.setenv("GLOG_minloglevel", environment)
        assert init(tmp_path, *flags)[0] == 0
        assert os.environ["GLOG_minloglevel"] == level, (environment, flags)


@pytest.mark.caffe
def test_q_silences_caffes_glog_on_the_pycaffe_backend(caffe_env):
    """In the real-Caffe chroot, with GLOG_minloglevel unset (caffe-env sets it): -q prints nothing,
    the default no glog INFO lines (hundreds before)."""
    out = "/tmp/magic_init-test-logging.caffemodel"
    command = ("cd /src && env -u GLOG_minloglevel python3 -m magic_init models/tiny.prototxt %s --data "
               "examples/images/list.txt --num-images 4 --batch-size 4 --backend caffe --rounds 1 --max-iter 3 "
               % out)
    for flags, expect_empty in (("-q", True), ("", False)):
        result = subprocess.run([str(REPO / "scripts" / "caffe-env"), "run", "sh", "-c", command + flags],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        glog = [line for line in result.stderr.splitlines() if re.match(r"^[IWE]\d{4} |WARNING: Logging before", line)]
        assert not glog, glog[:5]
        assert (result.stderr.strip() == "") == expect_empty, result.stderr


# --- a data-driven init that falls back to gaussian is a warning -------------------------------------------

DECONV_NET = """
name: "deconv"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "up1" type: "Deconvolution" bottom: "conv1" top: "up1"
        convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
"""


def test_a_deconvolution_falling_back_to_gaussian_is_a_warning_that_q_shows(tmp_path):
    net = tmp_path / "deconv.prototxt"
    net.write_text(DECONV_NET)
    code, lines = init(tmp_path, "--init", "kmeans", "--no-between-layer", "-q", prototxt=net)
    assert code == 0, lines
    assert lines == ["layer 'up1': kmeans init impossible: no data-driven init for Deconvolution; "
                     "falling back to gaussian"], lines


def test_too_few_samples_for_a_data_driven_init_is_a_warning_naming_layer_and_reason(tmp_path):
    code, lines = init(tmp_path, "--init", "pca", "--data-driven-fc", "--num-images", "2", "--batch-size", "2", "-q")
    assert code == 0, lines
    assert lines == ["layer 'fc3': pca init impossible: 2 sample rows for 64 outputs (too few samples); falling back "
                     "to gaussian",
                     "layer 'fc4': pca init impossible: 2 sample rows for 10 outputs (too few samples); falling back "
                     "to gaussian"], lines


def test_the_fallback_warning_reaches_python_api_users(tmp_path, caplog):
    from magic_init.algorithm import initialize
    from magic_init.backends import get_net

    net_path = tmp_path / "deconv.prototxt"
    net_path.write_text(DECONV_NET)
    net = get_net(str(net_path), backend="torch")
    sample = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        initialize(net, sample, init="kmeans", between_layer=False, batch_size=4)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["layer 'up1': kmeans init impossible: no data-driven init for Deconvolution; "
                      "falling back to gaussian"], warned


# --- --device --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["gpu", "cuda:x", "GPU:0", "cuda:"])
def test_a_bad_device_is_a_usage_error_naming_the_valid_forms(tmp_path, device):
    code, lines = init(tmp_path, "--device", device)
    assert code == 2, lines
    errors = [line for line in lines if line.startswith("Error:")]
    assert errors == [lines[-1]] and "Traceback" not in "\n".join(lines), lines
    assert "'--device'" in errors[0] and repr(device) in errors[0] and "cpu, cuda or cuda:N" in errors[0], errors
    assert not (tmp_path / "out.caffemodel").exists()
