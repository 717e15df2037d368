"""Shared fixtures. Tests marked `caffe` need the real-Caffe environment (scripts/caffe-env).

Where that environment is missing they are skipped, unless MAGIC_INIT_REQUIRE_CAFFE=1 (set by
.ci/run), which turns the skip into a failure: CI never skips the real-Caffe tests silently.
Tests marked `cuda` need a CUDA device and skip with a reason otherwise.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from caffe_env import CaffeEnv, caffe_env_ready  # noqa: E402

_caffe_tests_run = []

#: The published nets of ../shared/realnets/ (never copied into the project); MAGIC_INIT_REALNETS
#: points elsewhere.
REALNETS = os.environ.get("MAGIC_INIT_REALNETS") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "realnets")


@pytest.fixture(scope="session")
def realnets():
    """The folder of the real-nets corpus (skips where this checkout has none beside it)."""
    from pathlib import Path

    if not os.path.isfile(os.path.join(REALNETS, "SOURCES.tsv")):
        pytest.skip("the real-nets corpus is not at %s (set MAGIC_INIT_REALNETS)" % REALNETS)
    return Path(REALNETS)


def pytest_configure(config):
    config.addinivalue_line("markers", "caffe: compares against real Caffe (needs scripts/caffe-env)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def caffe_env():
    if not caffe_env_ready():
        message = "real-Caffe environment not built: run scripts/caffe-env build (as root)"
        if os.environ.get("MAGIC_INIT_REQUIRE_CAFFE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    env = CaffeEnv()
    yield env
    env.cleanup()


@pytest.fixture
def cuda_device():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return "cuda"


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and "caffe" in report.keywords:
        _caffe_tests_run.append(report.nodeid)


def pytest_collection_modifyitems(items):
    for item in items:
        if "caffe_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.caffe)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line("real-Caffe tests executed and passed: %d" % len(_caffe_tests_run))
