"""The command line against a hostile user (issue 10): partial --load, non-finite values, output
safety, signals, clean errors. Every case runs `python -m magic_init` in a fresh process."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from magic_init.io import read_caffemodel, read_prototxt, write_caffemodel  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny.prototxt"
IMAGES = REPO / "examples" / "images" / "list.txt"
AFFINE = ("conv1", "conv2", "fc3", "fc4")
SMALL = ("--data", IMAGES, "--num-images", 4, "--batch-size", 4, "--backend", "torch")


def run_cli(*args, code=None):
    """`python -m magic_init ARGS` (or ``python -c CODE ARGS``) in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    head = ["-c", code] if code else ["-m", "magic_init"]
    return subprocess.run([sys.executable, *head, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def assert_one_line_error(result, code, *needles):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last


def tiny_weights(seed=0):
    """Random weights for every affine layer of models/tiny.prototxt, shaped as Caffe stores them."""
    from magic_init.load import build_net, read_model

    net = build_net(read_model(str(TINY)), backend="torch", batch_size=1)
    rng = np.random.default_rng(seed)
    return {name: [(rng.standard_normal(b.data.shape) * 0.1).astype(np.float32) for b in net.params[name]]
            for name in AFFINE}


def write_model(path, weights, rename=""):
    """Write ``weights`` as a caffemodel of tiny.prototxt, its layers renamed with the prefix ``rename``."""
    net = read_prototxt(str(TINY))
    for layer in net.layer:
        layer.name = rename + layer.name
    write_caffemodel(str(path), net, {rename + k: v for k, v in weights.items()})
    return path


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


# --- --load and partial initialization --------------------------------------------------------------

def test_load_of_a_model_without_the_new_layers_initializes_them(tmp_path):
    """Fine-tuning: fc4 is new. It gets Algorithm 1; the loaded layers keep their weights up to
    Algorithm 2's positive factor; nothing is left at zero."""
    weights = tiny_weights()
    del weights["fc4"]
    model = write_model(tmp_path / "pre.caffemodel", weights)
    out = tmp_path / "out.caffemodel"
    result = run_cli(TINY, out, "--load", model, *SMALL)
    assert result.returncode == 0, result.stderr
    assert "Algorithm 1 initializes 'fc4'" in result.stderr, result.stderr
    written = read_caffemodel(str(out)).weights
    assert np.abs(written["fc4"][0]).max() > 0 and np.isfinite(written["fc4"][0]).all()
    for name in ("conv1", "conv2", "fc3"):
        assert cosine(written[name][0], weights[name][0]) > 0.9999, name


def test_load_of_a_model_that_matches_no_layer_warns_and_initializes_all(tmp_path):
    model = write_model(tmp_path / "other.caffemodel", tiny_weights(), rename="other_")
    out = tmp_path / "out.caffemodel"
    result = run_cli(TINY, out, "--load", model, *SMALL, "-v")
    assert result.returncode == 0, result.stderr
    assert "shares no affine layer name with the net: nothing was loaded" in result.stderr, result.stderr
    assert "'other_conv1'" in result.stderr                        # -v lists the model's unmatched layers
    written = read_caffemodel(str(out)).weights
    assert all(np.abs(written[name][0]).max() > 0 for name in AFFINE)


def test_zero_from_without_load_initializes_every_layer(tmp_path):
    out = tmp_path / "out.caffemodel"
    result = run_cli(TINY, out, "--zero-from", "fc3", *SMALL)
    assert result.returncode == 0, result.stderr
    assert "without --load: every affine layer is initialized" in result.stderr
    written = read_caffemodel(str(out)).weights
    assert all(np.abs(written[name][0]).max() > 0 for name in AFFINE)


@pytest.mark.parametrize("flags, needle", [
    (("--zero-all", "--zero-from", "fc3"), "exclude each other"),
    (("--load", "PARTIAL", "--no-within-layer"), "would leave 'fc4' at zero"),
])
def test_contradictory_partial_init_flags_are_usage_errors(tmp_path, flags, needle):
    weights = tiny_weights()
    del weights["fc4"]
    model = write_model(tmp_path / "part.caffemodel", weights)
    out = tmp_path / "out.caffemodel"
    result = run_cli(TINY, out, *[model if f == "PARTIAL" else f for f in flags], *SMALL)
    assert_one_line_error(result, 2, needle)
    assert not out.exists()


# --- nothing non-finite in, nothing non-finite out -----------------------------------------------------

@pytest.mark.parametrize("option", [("--beta", "nan"), ("--beta", "inf"), ("--scale", "nan"), ("--mean", "nan,1,2"),
                                    ("--alpha", "nan"), ("--tol", "-1"), ("--tol", "inf"), ("--seed", "-1"),
                                    ("--seed", str(2 ** 40)), ("--device", "gpu"), ("--device", "garbage"),
                                    ("--whitening-eps", "nan")])
def test_bad_option_values_are_usage_errors(tmp_path, option):
    out = tmp_path / "out.caffemodel"
    result = run_cli(TINY, out, *SMALL, *option)
    assert_one_line_error(result, 2, option[0])
    assert not out.exists()


def test_a_nan_in_the_loaded_model_is_named(tmp_path):
    weights = tiny_weights()
    weights["conv2"][1][3] = np.nan
    model = write_model(tmp_path / "nan.caffemodel", weights)
    out = tmp_path / "out.caffemodel"
    result = run_cli(TINY, out, "--load", model, *SMALL)
    assert_one_line_error(result, 1, "layer 'conv2' blob 1 (bias) has 1 non-finite value")
    assert not out.exists()


# --- output safety ----------------------------------------------------------------------------------------

def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    for target, kind in ((fifo, "a FIFO"), (folder, "folder"), (Path("/dev/null"), "character device")):
        result = run_cli(TINY, target, *SMALL)
        assert_one_line_error(result, 1 if target != folder else result.returncode, kind)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_symlinked_output_is_written_through(tmp_path):
    target, link = tmp_path / "real.caffemodel", tmp_path / "link.caffemodel"
    target.write_bytes(b"old")
    link.symlink_to(target)
    result = run_cli(TINY, link, *SMALL, "--no-between-layer")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert set(read_caffemodel(str(target)).weights) >= set(AFFINE)


def test_no_output_may_be_an_input(tmp_path):
    prototxt, listing = tmp_path / "net.prototxt", tmp_path / "list.txt"
    prototxt.write_bytes(TINY.read_bytes())
    listing.write_text("".join("%s 0\n" % (IMAGES.parent / name) for name in ("rocket.jpg", "coffee.jpg")))
    before = prototxt.read_bytes(), listing.read_bytes()
    cases = [("stats", prototxt, "--json", prototxt), ("stats", prototxt, "--plot", listing),
             (prototxt, listing), (prototxt, prototxt)]
    for args in cases:
        result = run_cli(*args, "--data", listing, "--num-images", 2, "--batch-size", 2, "--backend", "torch")
        assert_one_line_error(result, 1, "refusing to overwrite an input")
    assert (prototxt.read_bytes(), listing.read_bytes()) == before


def test_stats_json_dash_writes_json_to_stdout(tmp_path):
    model = write_model(tmp_path / "m.caffemodel", tiny_weights())
    result = run_cli("stats", TINY, "--load", model, *SMALL, "--json", "-")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert [layer["layer"] for layer in stats["layers"]] == list(AFFINE)
    assert not (Path.cwd() / "-").exists()


def test_stats_plot_with_an_unknown_format_fails_before_any_work(tmp_path):
    pytest.importorskip("matplotlib")
    result = run_cli("stats", TINY, *SMALL, "--plot", tmp_path / "fig.xyz")
    assert_one_line_error(result, 1, "cannot write '.xyz' files")
    assert "sample:" not in result.stderr and list(tmp_path.iterdir()) == []


# --- signals --------------------------------------------------------------------------------------------

SIGNAL_DURING_WRITE = r"""
import os, signal, sys
# SIGINT as in a terminal: a process started in the background by a non-interactive shell inherits
# SIGINT ignored (POSIX), and Python then keeps ignoring it
signal.signal(signal.SIGINT, signal.default_int_handler)
import magic_init.io.caffemodel as caffemodel
from magic_init.cli import main
write_layer = caffemodel._write_layer
def write_then_signal(f, layer, blobs):
    write_layer(f, layer, blobs)
    if blobs:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
caffemodel._write_layer = write_then_signal
main(sys.argv[2:])
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_during_the_write_leaves_no_temporary_file_and_the_old_output(tmp_path, name):
    out = tmp_path / "out.caffemodel"
    out.write_bytes(b"previous model")
    result = run_cli(name, TINY, out, *SMALL, "--no-between-layer", code=SIGNAL_DURING_WRITE)
    assert result.returncode == 128 + getattr(signal, name), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.caffemodel"]


# --- clean errors for ordinary mistakes ----------------------------------------------------------------

NETS = {
    "no_affine": ("layer { name: 'relu' type: 'ReLU' bottom: 'data' top: 'r' }", "has no Convolution"),
    "duplicate": ("layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c1' convolution_param { num_output: 2 "
                  "kernel_size: 3 } }\nlayer { name: 'c' type: 'Convolution' bottom: 'c1' top: 'c2' "
                  "convolution_param { num_output: 2 kernel_size: 3 } }", "two layers are named 'c'"),
    "no_bottom": ("layer { name: 'c' type: 'Convolution' bottom: 'dta' top: 'c1' convolution_param { num_output: 2 "
                  "kernel_size: 3 } }", "unknown bottom blob 'dta'"),
    "too_large": ("layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'f' inner_product_param { "
                  "num_output: 100000000 } }", "layer 'fc' (InnerProduct): its parameters"),
}


@pytest.mark.parametrize("case", sorted(NETS) + ["two_axis"])
def test_ordinary_net_mistakes_are_one_line(tmp_path, case):
    if case == "two_axis":
        text = ("input: 'data'\ninput_shape { dim: 1 dim: 10 }\nlayer { name: 'fc' type: 'InnerProduct' "
                "bottom: 'data' top: 'f' inner_product_param { num_output: 4 } }")
        needle = "need a 4-axis (N, C, H, W) input"
    else:
        text = "input: 'data'\ninput_shape { dim: 1 dim: 3 dim: 16 dim: 16 }\n" + NETS[case][0]
        needle = NETS[case][1]
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    result = run_cli(prototxt, tmp_path / "out.caffemodel", *SMALL)
    assert_one_line_error(result, 1, needle)
    assert not (tmp_path / "out.caffemodel").exists()
