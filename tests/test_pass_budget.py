"""How many forward and backward passes over the sample each configuration makes (issue 15's budget).

Every layer's forward and backward runs on the built-in engine are counted in images; one pass is
the whole sample through a layer once. The budget: Algorithm 1 forwards each layer once (its cache
carries the sample from layer to layer), each Algorithm 2 measurement is one forward and one
backward pass (the first round of two over ``--first-round-images`` = 16 images, so the whole
8-image sample here), ``-v`` adds one of each (the measured spread), and rescaling with per-channel
factors measures once. A change that adds a pass fails here, whatever the machine's speed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from magic_init import cli, timing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IMAGES = 8


@pytest.fixture
def passes():
    """Runs the CLI and gives (forward passes, backward passes): the most any layer ran, in samples
    (``timing.counting_passes``)."""
    def run(*args):
        with timing.counting_passes() as counted:
            try:
                cli.main([*map(str, args), "--data", str(REPO / "examples/images/list.txt"), "--num-images",
                          str(IMAGES), "--batch-size", "4", "--backend", "torch", "-q"])
            except SystemExit as error:          # main() exits only on an error
                pytest.fail("magic_init %s exited with %s" % (" ".join(map(str, args)), error.code))
            most = counted(IMAGES)
        return most["forward"], most["backward"]
    return run


@pytest.mark.parametrize("flags, expected", [
    ((), (3, 2)),                                  # Algorithm 1: 1 forward; Algorithm 2: 2 rounds
    (("--init", "kmeans"), (3, 2)),
    (("-v",), (4, 3)),                             # + the measured spread after the last step
    (("--first-round-images", "4"), (2.5, 1.5)),   # Algorithm 2's first round on half the sample
    (("--first-round-images", "0"), (3, 2)),       # every round on the whole sample
    (("--fast",), (2, 1)),                         # one Algorithm 2 round
    (("--no-between-layer",), (1, 0)),
], ids=["gaussian", "kmeans", "verbose", "first-round-half", "first-round-whole", "fast", "algorithm1-only"])
def test_initializing_makes_the_budgeted_passes(passes, tmp_path, flags, expected):
    assert passes(REPO / "models/tiny.prototxt", tmp_path / "out.caffemodel", *flags) == expected


@pytest.mark.parametrize("flags, expected", [
    ((), (1, 1)),                                  # per-channel factors: one measurement
    (("--factors", "layer"), (2, 2)),              # the paper's per-layer steps: 2 rounds
], ids=["per-channel", "per-layer"])
def test_rescaling_makes_the_budgeted_passes(passes, tmp_path, flags, expected):
    model = tmp_path / "model.caffemodel"
    passes(REPO / "models/tiny.prototxt", model)
    assert passes(REPO / "models/tiny.prototxt", tmp_path / "out.caffemodel", "--load", model, *flags) == expected
