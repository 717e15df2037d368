"""Caffe's fillers: statistics and exact closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import text_format

from magic_init.engine.fillers import fan_in_out, fill
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2


def _fill(text, shape, seed=0):
    filler = text_format.Merge(text, caffe_pb2.FillerParameter())
    return fill(filler, shape, np.random.default_rng(seed))


def test_fan_in_out_follow_caffe():
    assert fan_in_out((64, 32, 3, 5)) == (32 * 15, 64 * 15)
    assert fan_in_out((10,)) == (1, 10)


def test_constant_default_is_zero_and_value():
    assert not _fill("", (3, 4)).any()
    assert (_fill('type: "constant" value: 2.5', (7,)) == 2.5).all()


def test_gaussian_statistics_and_dtype():
    values = _fill('type: "gaussian" mean: 1 std: 0.5', (200, 300))
    assert values.dtype == np.float32 and values.shape == (200, 300)
    assert abs(values.mean() - 1) < 0.01 and abs(values.std() - 0.5) < 0.01


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    values = _fill('type: "gaussian" std: 1 sparse: 10', (100, 1000))
    assert abs((values != 0).mean() - 0.1) < 0.01


def test_uniform_range():
    values = _fill('type: "uniform" min: -2 max: 3', (10000,))
    assert values.min() >= -2 and values.max() <= 3 and abs(values.mean() - 0.5) < 0.1


@pytest.mark.parametrize("norm, n", [("FAN_IN", 32 * 9), ("FAN_OUT", 64 * 9),
                                     ("AVERAGE", (32 * 9 + 64 * 9) / 2)])
def test_xavier_and_msra_scale_by_variance_norm(norm, n):
    shape = (64, 32, 3, 3)
    xavier = _fill('type: "xavier" variance_norm: %s' % norm, shape)
    bound = math.sqrt(3.0 / n)
    assert np.abs(xavier).max() <= bound * (1 + 1e-6)
    assert abs(xavier.std() - bound / math.sqrt(3)) < 0.03 * bound
    msra = _fill('type: "msra" variance_norm: %s' % norm, shape)
    assert abs(msra.std() - math.sqrt(2.0 / n)) < 0.03 * math.sqrt(2.0 / n)


def test_positive_unitball_rows_sum_to_one():
    values = _fill('type: "positive_unitball"', (6, 2, 3, 3))
    assert (values >= 0).all()
    np.testing.assert_allclose(values.reshape(6, -1).sum(axis=1), 1, rtol=1e-5)


def test_bilinear_kernel_of_size_4():
    values = _fill('type: "bilinear"', (2, 1, 4, 4))
    line = np.array([0.25, 0.75, 0.75, 0.25], np.float32)      # f = 2, c = 0.75
    np.testing.assert_allclose(values[1, 0], np.outer(line, line), rtol=1e-6)


def test_seeded_and_unknown_type():
    np.testing.assert_array_equal(_fill('type: "gaussian"', (5,), 3), _fill('type: "gaussian"', (5,), 3))
    with pytest.raises(NetDefinitionError, match="bogus"):
        _fill('type: "bogus"', (5,))
