"""scripts/fetch-sample-images.sh: N distinct seeded JPEGs plus a list our loader reads."""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys

import pytest

from magic_init.data import Transform, load_sample

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "fetch-sample-images.sh")


def have_photos():
    if glob.glob("/usr/share/backgrounds/**/*.webp", recursive=True):
        return True
    import importlib.util
    return importlib.util.find_spec("skimage") is not None


def run_script(outdir, n, size):
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", SCRIPT, str(outdir), str(n), str(size)], check=True, env=env,
                   capture_output=True, timeout=300)
    return sorted(glob.glob(os.path.join(str(outdir), "*.jpg")))


@pytest.mark.skipif(not have_photos(), reason="no photos: install gnome-backgrounds or scikit-image")
def test_script_writes_distinct_seeded_images_and_a_list(tmp_path):
    files = run_script(tmp_path / "a", 6, 64)
    assert len(files) == 6
    digests = [hashlib.sha1(open(f, "rb").read()).hexdigest() for f in files]
    assert len(set(digests)) == 6
    again = run_script(tmp_path / "b", 6, 64)
    assert digests == [hashlib.sha1(open(f, "rb").read()).hexdigest() for f in again]
    sample = load_sample(str(tmp_path / "a" / "list.txt"), Transform.imagenet())
    assert sample.data.shape == (6, 3, 64, 64) and sample.labels is not None
