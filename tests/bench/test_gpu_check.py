"""bench/gpu_check.sh: valid bash, says what is missing on a machine without a GPU, and its test
selection and reference subset run here on the CPU (the CUDA variants are the same tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_it_stops_with_one_line_naming_the_cause(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "gpu_check: torch sees no CUDA device"


def test_an_interpreter_without_torch_is_named(tmp_path):
    """PYTHON without torch (here: this interpreter without its site-packages) stops with one line."""
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\nexec "%s" -S "$@"\n' % sys.executable)
    python.chmod(0o755)
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=str(python)))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "gpu_check: %s has no torch (PYTHON=/path/to/python with torch)" % python)


def test_the_selected_conformance_tests_exist():
    text = SCRIPT.read_text()
    for name in ("tests/engine/test_engine_cuda.py", "tests/engine/conformance/test_conformance_layers.py",
                 "tests/engine/conformance/test_conformance_cases.py",
                 "tests/engine/conformance/test_conformance_dropout.py", "tests/test_torch.py",
                 "models/caffenet.prototxt"):
        assert name in text and (REPO / name).exists(), name
