"""im2col at sampled locations (magic_init.algorithm.patches) against a direct convolution."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from magic_init.algorithm import patches
from magic_init.conv_geometry import ConvGeometry, conv_output_size
from magic_init.errors import NetDefinitionError


def direct_conv_at(x, w, geometry, b, y, xo):
    """Output of a grouped, padded, strided, dilated conv at (b, :, y, xo), by explicit loops."""
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = geometry.kernel, geometry.pad, geometry.stride, geometry.dilation
    groups, out = geometry.group, w.shape[0]
    cin_g = x.shape[1] // groups
    result = np.zeros(out)
    for o in range(out):
        g = o // (out // groups)
        for c in range(cin_g):
            for i in range(kh):
                for j in range(kw):
                    yy, xx = y * sh - ph + i * dh, xo * sw - pw + j * dw
                    if 0 <= yy < x.shape[2] and 0 <= xx < x.shape[3]:
                        result[o] += w[o, c, i, j] * x[b, g * cin_g + c, yy, xx]
    return result


def patches_checked_against_direct_conv(x, w, geometry, count, seed):
    """conv_patches(x) at ``count`` sampled locations; each patch, times the filters of its group,
    must give the direct convolution there. Returns the per-group patch matrices."""
    groups = patches.conv_patches(x, geometry, count, np.random.default_rng(seed))
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = geometry.kernel, geometry.pad, geometry.stride, geometry.dilation
    images, (ys, xs) = patches.sample_locations(x.shape[0], (conv_output_size(x.shape[2], kh, ph, sh, dh),
                                                             conv_output_size(x.shape[3], kw, pw, sw, dw)), count,
                                                np.random.default_rng(seed))
    per_group = w.shape[0] // geometry.group
    for n in range(count):
        got = np.concatenate([w[g * per_group:(g + 1) * per_group].reshape(per_group, -1).dot(groups[g][n])
                              for g in range(geometry.group)])
        np.testing.assert_allclose(got, direct_conv_at(x, w, geometry, images[n], ys[n], xs[n]),
                                   rtol=1e-5, atol=1e-5)
    return groups


def test_conv_patches_match_a_direct_convolution():
    rng = np.random.default_rng(0)
    geometry = ConvGeometry(kernel=(3, 2), pad=(2, 1), stride=(2, 3), dilation=(1, 2), group=2)
    x = rng.standard_normal((3, 4, 9, 11)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    groups = patches_checked_against_direct_conv(x, w, geometry, 25, 5)
    assert len(groups) == 2 and groups[0].shape == (25, 2 * 3 * 2)


@pytest.mark.parametrize("shape, kernel, pad, stride, dilation, group", [
    ((3, 4, 13), (3,), (2,), (2,), (2,), 2),                                   # 1-D (Conv1d)
    ((2, 2, 5, 6, 7), (3, 1, 2), (1, 0, 1), (1, 2, 3), (2, 1, 1), 1),          # 3-D (Conv3d)
])
def test_patches_over_one_or_three_spatial_axes_match_a_direct_convolution(shape, kernel, pad, stride, dilation, group):
    """Each sampled patch, times the filters of its group, is the convolution's output there (by loops
    over the kernel's indices)."""
    rng = np.random.default_rng(0)
    geometry = ConvGeometry(kernel, pad, stride, dilation, group)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((4, shape[1] // group) + kernel).astype(np.float32)
    groups = patches.conv_patches(x, geometry, 20, np.random.default_rng(1))
    images, coords = patches.sample_locations(shape[0], patches.output_extent(shape, geometry), 20,
                                              np.random.default_rng(1))
    per_group, cin_g = 4 // group, shape[1] // group
    for n in range(20):
        expected = np.zeros(4)
        for o in range(4):
            g = o // per_group
            for c in range(cin_g):
                for offset in itertools.product(*(range(k) for k in kernel)):
                    at = [co[n] * s - p + i * d for co, s, p, i, d in zip(coords, stride, pad, offset, dilation)]
                    if all(0 <= a < size for a, size in zip(at, shape[2:])):
                        expected[o] += w[(o, c) + offset] * x[(images[n], g * cin_g + c) + tuple(at)]
        got = np.concatenate([w[g * per_group:(g + 1) * per_group].reshape(per_group, -1) @ groups[g][n]
                              for g in range(group)])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(NetDefinitionError, match="kernel"):
        patches.output_extent((2, 3, 8, 8), geometry)


def test_vector_patches_flatten_from_axis():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert patches.vector_patches(x).shape == (2, 12)
    assert patches.vector_patches(x, axis=2).shape == (6, 4)


def test_row_budget_caps_memory():
    assert patches.row_budget(columns=1024, max_rows=10 ** 9, max_mb=1) == 256
    assert patches.row_budget(columns=4, max_rows=100, max_mb=1) == 100


def test_sampled_patches_do_not_depend_on_the_batching():
    """Locations are drawn over the image indices of the whole sample: any split into batches gives the
    same patches in the same order (Algorithm 1's data-driven inits, whatever the batch size)."""
    geometry = ConvGeometry(kernel=(3, 3), pad=(1, 1), stride=(2, 2), dilation=(1, 1), group=2)
    x = np.random.default_rng(0).standard_normal((10, 4, 7, 7)).astype(np.float32)
    whole = patches.sampled_conv_patches([x], geometry, 50, np.random.default_rng(3))
    for size in (1, 3, 4):
        split = patches.sampled_conv_patches([x[i:i + size] for i in range(0, 10, size)], geometry, 50,
                                             np.random.default_rng(3))
        for a, b in zip(whole, split):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole[1], patches.conv_patches(x, geometry, 50, np.random.default_rng(3))[1])


def test_depthwise_patches_are_one_channel_per_group():
    """Depthwise 3x3 (group = channels): one 9-dim patch matrix per channel, matching a direct conv."""
    rng = np.random.default_rng(1)
    geometry = ConvGeometry(kernel=(3, 3), pad=(1, 1), stride=(1, 1), dilation=(1, 1), group=5)
    x = rng.standard_normal((2, 5, 6, 6)).astype(np.float32)
    w = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    groups = patches_checked_against_direct_conv(x, w, geometry, 20, 4)
    assert len(groups) == 5 and all(g.shape == (20, 9) for g in groups)
