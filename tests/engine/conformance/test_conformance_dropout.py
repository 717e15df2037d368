"""Dropout in TRAIN: masks come from different random generators, so values cannot be compared
with Caffe's. Both Caffe and our engine must give y in {0, x / (1 - p)}, keep a fraction 1 - p of
the units (within 5 standard deviations of a Bernoulli count), and backpropagate through the same
mask: dx = dy / (1 - p) where kept, 0 elsewhere. Checking Caffe too confirms the premise.
Values agree to 1e-6 relative (one float32 multiplication each)."""
from __future__ import annotations

import numpy as np
import pytest

from conformance_util import Reference, build_net

pytestmark = pytest.mark.caffe

P = 0.3  # dropout_ratio of the dropout_train case


def assert_dropout_semantics(x, y, dy, dx, who):
    kept = y != 0
    n = x.size
    fraction = kept.mean()
    sigma = np.sqrt(P * (1 - P) / n)
    assert abs(fraction - (1 - P)) < 5 * sigma, "%s keeps %.4f of units, expected %.2f" % (who, fraction, 1 - P)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - P), rtol=1e-6, atol=1e-7, err_msg=who + " forward")
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - P), 0), rtol=1e-6, atol=1e-7,
                               err_msg=who + " backward")


def test_caffe_dropout_train_semantics(caffe_refs):
    ref = Reference(caffe_refs, "dropout_train")
    assert_dropout_semantics(ref.data("x"), ref.data("y"), ref.top_diff("y"), ref.diff("x"), "Caffe")


def test_dropout_train_semantics(device, caffe_refs):
    ref = Reference(caffe_refs, "dropout_train")
    net = build_net(ref, device)
    net.forward()
    y = np.array(net.blobs["y"].data)
    net.blobs["y"].diff[...] = ref.top_diff("y")
    net.backward()
    assert_dropout_semantics(ref.data("x"), y, ref.top_diff("y"), np.array(net.blobs["x"].diff), "ours")


def test_dropout_train_masks_differ_between_passes(device, caffe_refs):
    ref = Reference(caffe_refs, "dropout_train")
    net = build_net(ref, device)
    first = np.array(net.forward()["y"])
    second = np.array(net.forward()["y"])
    assert not np.array_equal(first != 0, second != 0)
