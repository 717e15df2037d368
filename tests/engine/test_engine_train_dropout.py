"""Net.train_dropout: Dropout runs as in TRAIN phase inside the context, and only there."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from magic_init.engine import Net  # noqa: E402
from magic_init.io import parse_prototxt  # noqa: E402

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 1000 } } }
layer { name: "drop" type: "Dropout" bottom: "data" top: "out" dropout_param { dropout_ratio: 0.25 } }
"""


def run(net, x):
    net.blobs["data"].data[...] = x
    net.forward()
    return np.array(net.blobs["out"].data)


def test_dropout_is_active_only_inside_and_seeded():
    net = Net(parse_prototxt(NET))
    x = np.random.default_rng(0).uniform(1, 2, (4, 1000)).astype(np.float32)
    np.testing.assert_array_equal(run(net, x), x)
    with net.train_dropout(seed=3):
        first = run(net, x)
    with net.train_dropout(seed=3):
        again = run(net, x)
    with net.train_dropout(seed=4):
        other = run(net, x)
    np.testing.assert_array_equal(run(net, x), x)          # TEST behaviour is back
    kept = first != 0
    assert 0.70 < kept.mean() < 0.80                        # keep probability 1 - p = 0.75
    np.testing.assert_allclose(first[kept], x[kept] / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)
