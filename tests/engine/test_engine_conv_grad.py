"""The space-to-depth input gradient equals torch's own convolution input gradient on random 2-D
geometries (Caffe's values are checked by the conformance suite, e.g. conv_group_stride_gt_kernel
and CaffeNet's conv1; this sweeps geometries the suite does not list)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from magic_init.conv_geometry import ConvGeometry
from magic_init.engine.layers.conv_grad import convolution_gradients, input_gradient_space_to_depth, \
    space_to_depth_pays


def _random_geometry(rng):
    group = int(rng.choice([1, 2, 3]))
    kernel = tuple(int(k) for k in rng.integers(1, 8, size=2))
    stride = tuple(int(s) for s in rng.integers(1, 5, size=2))
    pad = tuple(int(rng.integers(0, k)) for k in kernel)
    size = tuple(int(k + rng.integers(0, 12)) for k in kernel)
    return group, ConvGeometry(kernel=kernel, stride=stride, pad=pad, dilation=(1, 1)), size


@pytest.mark.parametrize("seed", range(40))
def test_space_to_depth_input_gradient_equals_torch(seed):
    rng = np.random.default_rng(seed)
    group, window, size = _random_geometry(rng)
    x = torch.randn(2, group * int(rng.integers(1, 4)), *size, dtype=torch.float64)
    weight = torch.randn(group * 2, x.shape[1] // group, *window.kernel, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, weight, None, window.stride, window.pad, 1, group)
    dy = torch.randn_like(y)
    expected = torch.ops.aten.convolution_backward(dy, x, weight, None, list(window.stride), list(window.pad),
                                                   [1, 1], False, [0, 0], group, [True, False, False])[0]
    got = input_gradient_space_to_depth(dy, weight, x.shape, window, group)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_rewrite_is_used_only_for_strided_convolutions_over_few_channels():
    image = torch.zeros(1, 3, 16, 16)
    assert space_to_depth_pays(image, ConvGeometry(kernel=(11, 11), stride=(4, 4), pad=(0, 0), dilation=(1, 1)), 1)
    assert not space_to_depth_pays(image, ConvGeometry(kernel=(3, 3), stride=(1, 1), pad=(1, 1), dilation=(1, 1)), 1)
    assert not space_to_depth_pays(image, ConvGeometry(kernel=(3, 3), stride=(2, 2), pad=(1, 1), dilation=(2, 2)), 1)
    assert not space_to_depth_pays(torch.zeros(1, 64, 16, 16),
                                   ConvGeometry(kernel=(3, 3), stride=(2, 2), pad=(1, 1), dilation=(1, 1)), 1)


def test_gradients_not_asked_for_are_none():
    torch.manual_seed(0)
    x, weight = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    dy = torch.randn(2, 4, 4, 4)
    window = ConvGeometry(kernel=(3, 3), stride=(2, 2), pad=(0, 0), dilation=(1, 1))
    dx, dw, db = convolution_gradients(dy, x, weight, window, 1, False, True, False)
    assert dx is None and db is None and dw.shape == weight.shape
    dx, dw, db = convolution_gradients(dy, x, weight, window, 1, True, False, True)
    # float32 sums in another order: a relative tolerance, not allclose's default absolute 1e-8
    assert dw is None and dx.shape == x.shape and torch.allclose(db, dy.sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
