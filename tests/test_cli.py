"""The command line: bad input gives one line, a non-zero exit and no traceback; nothing is overwritten."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny.prototxt"
IMAGES = REPO / "examples" / "images" / "list.txt"

pytest.importorskip("torch")


def run_cli(*args, cwd=None):
    """Run `python -m magic_init ARGS` in a fresh process, as a user would."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "magic_init", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def assert_clean_error(result, *needles):
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    last = lines[-1]
    for needle in needles:
        assert needle in last, last


def test_initializes_the_tiny_net_and_writes_a_loadable_model(tmp_path):
    out = tmp_path / "tiny.caffemodel"
    result = run_cli(TINY, out, "--data", IMAGES, "--init", "kmeans", "--num-images", 8, "--batch-size", 4, "-q",
                     "--backend", "torch")
    assert result.returncode == 0, result.stderr
    from magic_init.io import read_caffemodel

    weights = read_caffemodel(out).weights
    conv1 = weights["conv1"][0]
    assert conv1.shape[0] == 16 and np.abs(conv1).sum() > 0 and np.isfinite(conv1).all()


def test_missing_prototxt(tmp_path):
    assert_clean_error(run_cli(tmp_path / "nope.prototxt", tmp_path / "o.caffemodel", "--data", IMAGES),
                       "nope.prototxt")


def test_prototxt_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "data"\n  type: "Input"\n  top: "data"\n  top: : 3\n}\n')
    assert_clean_error(run_cli(bad, tmp_path / "o.caffemodel", "--data", IMAGES), "bad.prototxt:6")


def test_missing_data_source(tmp_path):
    assert_clean_error(run_cli(TINY, tmp_path / "o.caffemodel", "--data", tmp_path / "missing.txt"), "missing.txt")
    assert not (tmp_path / "o.caffemodel").exists()


def test_empty_data_source(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli(TINY, tmp_path / "o.caffemodel", "--data", empty), "empty")


def test_output_folder_missing(tmp_path):
    assert_clean_error(run_cli(TINY, tmp_path / "no" / "o.caffemodel", "--data", IMAGES), "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_output_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert_clean_error(run_cli(TINY, ro / "o.caffemodel", "--data", IMAGES), "not writable")


def test_output_equal_to_load_is_refused_and_untouched(tmp_path):
    model = tmp_path / "m.caffemodel"
    first = run_cli(TINY, model, "--data", IMAGES, "--num-images", 4, "--batch-size", 4, "-q", "--backend", "torch")
    assert first.returncode == 0, first.stderr
    before = model.read_bytes()
    result = run_cli(TINY, model, "--load", model, "--data", IMAGES)
    assert_clean_error(result, "--overwrite")
    assert model.read_bytes() == before


def test_truncated_model_is_a_clean_error(tmp_path):
    model = tmp_path / "m.caffemodel"
    model.write_bytes(b"\x0a\x05tin")
    assert_clean_error(run_cli(TINY, tmp_path / "o.caffemodel", "--load", model, "--data", IMAGES), "m.caffemodel")


def test_unsupported_layer_is_named(tmp_path):
    proto = tmp_path / "odd.prototxt"
    proto.write_text(TINY.read_text().replace('type: "ReLU"', 'type: "Swish"', 1))
    assert_clean_error(run_cli(proto, tmp_path / "o.caffemodel", "--data", IMAGES), "Swish")


def test_shape_mismatch_names_layer_and_shapes(tmp_path):
    model = tmp_path / "m.caffemodel"
    first = run_cli(TINY, model, "--data", IMAGES, "--num-images", 4, "--batch-size", 4, "-q", "--backend", "torch")
    assert first.returncode == 0, first.stderr
    wider = tmp_path / "wider.prototxt"
    wider.write_text(TINY.read_text().replace("num_output: 16", "num_output: 24", 1))
    result = run_cli(wider, tmp_path / "o.caffemodel", "--load", model, "--data", IMAGES, "--backend", "torch")
    assert_clean_error(result, "conv1", "m.caffemodel")
    assert not (tmp_path / "o.caffemodel").exists()
