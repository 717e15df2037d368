"""Fixtures of the conformance suite: real-Caffe references (generated once, cached) and devices.

References are produced by ``tests/caffe_ref/generate.py`` in the Caffe chroot, in one run for
all cases, and cached under ``~/.cache/magic_init/caffe-refs/<digest>/``; the digest covers the
case definitions, the model prototxts and the generator code, so any change regenerates them.
``MAGIC_INIT_CAFFE_REFS=DIR`` points at an already generated folder instead (for machines without
the chroot, e.g. a GPU box): the values still come only from Caffe.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for caffe_ref
from caffe_ref.cases import all_cases, cases_digest  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "magic_init" / "caffe-refs"
KEEP_GENERATIONS = 3  # each is ~0.8 GB; older digests (earlier case definitions) are deleted


def _generate(caffe_env, target):
    """Run the generator for every case in the chroot and move its output to `target`."""
    host_dir, chroot_dir = caffe_env.tmpdir()
    caffe_env.run("python3", "-m", "tests.caffe_ref.generate", chroot_dir, timeout=1800)
    partial = target.with_name("%s.partial-%d" % (target.name, os.getpid()))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(host_dir), str(partial))
    try:
        os.replace(partial, target)
    except OSError:  # a concurrent session finished the same digest first
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / "DONE").exists():
            raise
    _prune(target.parent)


def _prune(cache):
    """Keep the KEEP_GENERATIONS most recently generated reference folders."""
    folders = sorted((p for p in cache.iterdir() if "." not in p.name and (p / "DONE").exists()),
                     key=lambda p: (p / "DONE").stat().st_mtime, reverse=True)
    for old in folders[KEEP_GENERATIONS:]:
        shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="session")
def caffe_refs(request):
    """Folder of <case>.npz references from real Caffe (see module docstring)."""
    given = os.environ.get("MAGIC_INIT_CAFFE_REFS")
    if given:
        folder = Path(given)
        if not (folder / "DONE").exists():
            pytest.fail("MAGIC_INIT_CAFFE_REFS=%s holds no generated references" % given)
        return folder
    folder = CACHE / cases_digest(all_cases())
    if not (folder / "DONE").exists():
        _generate(request.getfixturevalue("caffe_env"), folder)
    return folder


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Every conformance test runs on the CPU and on CUDA (skipped where there is none)."""
    if request.param == "cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch.cuda.is_available() is False: no CUDA device on this machine")
    return request.param
