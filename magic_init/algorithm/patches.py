"""Input patches of an affine layer, gathered from its bottom blob at sampled locations.

A Convolution output at (b, y, x) of group g reads the patch
    x[b, g·C/G + c, y·s_h - p_h + i·d_h, x·s_w - p_w + j·d_w]   (zero outside the image),
for c < C/G, i < k_h, j < k_w, flattened in (c, i, j) order — the column order of Caffe's
weight blob (out, C/G, k_h, k_w). InnerProduct reads the bottom flattened from ``axis``.
The geometry (a ``magic_init.conv_geometry.ConvGeometry``) and the output size come from
``magic_init.conv_geometry``.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from magic_init.conv_geometry import conv_output_size
from magic_init.errors import NetDefinitionError


def sample_locations(batch, height, width, count, rng):
    """``count`` random (image, y, x) output locations (with replacement), as three int arrays."""
    return (rng.integers(0, batch, count), rng.integers(0, height, count), rng.integers(0, width, count))


def output_extent(shape, geometry):
    """(out_h, out_w) of the convolution of ``geometry`` on a bottom of ``shape`` (N, C, H, W)."""
    if len(geometry.kernel) != 2 or len(shape) != 4:
        raise NetDefinitionError("patches are gathered from 2-D convolutions only (kernel %s, bottom %s)"
                                 % (tuple(geometry.kernel), tuple(shape)))
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = geometry.kernel, geometry.pad, geometry.stride, geometry.dilation
    return conv_output_size(shape[2], kh, ph, sh, dh), conv_output_size(shape[3], kw, pw, sw, dw)


def patches_at(bottom, geometry, images, ys, xs):
    """Patches at output locations (images[n], ys[n], xs[n]): list over groups of (n × C/G·k_h·k_w) float32.

    Gathered from a strided view of the padded bottom whose element (b, c, y, x, i, j) is
    padded[b, c, y + i·d_h, x + j·d_w] (no copy but the padding), so only the patches are copied."""
    kh, kw = geometry.kernel
    (ph, pw), (sh, sw), (dh, dw) = geometry.pad, geometry.stride, geometry.dilation
    padded = np.ascontiguousarray(np.pad(bottom, ((0, 0), (0, 0), (ph, ph), (pw, pw))))
    n, c, height, width = padded.shape
    s0, s1, s2, s3 = padded.strides
    windows = as_strided(padded, (n, c, height - (kh - 1) * dh, width - (kw - 1) * dw, kh, kw),
                         (s0, s1, s2, s3, s2 * dh, s3 * dw), writeable=False)
    patch = windows[images, :, ys * sh, xs * sw]                    # count × C × kh × kw
    per_group = bottom.shape[1] // geometry.group
    return [patch[:, g * per_group:(g + 1) * per_group].reshape(len(images), -1).astype(np.float32, copy=False)
            for g in range(geometry.group)]


def conv_patches(bottom, geometry, count, rng):
    """Patches at ``count`` sampled output locations: list over groups of (count × C/G·k_h·k_w) float32."""
    out_h, out_w = output_extent(bottom.shape, geometry)
    return patches_at(bottom, geometry, *sample_locations(len(bottom), out_h, out_w, count, rng))


def sampled_conv_patches(bottoms, geometry, count, rng, sizes=None, shape=None):
    """conv_patches over the images of all ``bottoms`` (consecutive batches) as if they were one array:
    the locations are drawn over the image indices of the whole sample, so the patches (and their
    order) do not depend on how the sample is cut into batches.

    Args:
        bottoms: the batches' bottom arrays (N_b, C, H, W), in order; any iterable, read once.
        geometry: the convolution's ``ConvGeometry``.
        count: patches to gather.
        rng: numpy Generator for the locations.
        sizes: images per batch, when ``bottoms`` is not a list (then ``shape`` is needed too).
        shape: the bottom's shape (any N), when ``bottoms`` is not a list.

    Returns:
        list over groups of (count × C/G·k_h·k_w) float32 arrays.
    """
    if sizes is None:
        bottoms = list(bottoms)
        sizes, shape = [len(b) for b in bottoms], bottoms[0].shape
    out_h, out_w = output_extent(shape, geometry)
    images, ys, xs = sample_locations(sum(sizes), out_h, out_w, count, rng)
    starts = np.cumsum([0] + list(sizes))
    result = None
    for b, bottom in enumerate(bottoms):
        pick = np.flatnonzero((images >= starts[b]) & (images < starts[b + 1]))
        groups = patches_at(bottom, geometry, images[pick] - starts[b], ys[pick], xs[pick])
        if result is None:
            result = [np.empty((count, g.shape[1]), np.float32) for g in groups]
        for whole, part in zip(result, groups):
            whole[pick] = part
    return result


def vector_patches(bottom, axis=1):
    """InnerProduct inputs: the bottom flattened from ``axis`` (one row per leading index)."""
    lead = int(np.prod(bottom.shape[:axis]))
    return bottom.reshape(lead, -1).astype(np.float32)


def first_vector_patches(bottoms, axis, count):
    """The first ``count`` rows of the ``vector_patches`` of consecutive batches (fewer when the sample
    has fewer), read batch by batch: the rows ``np.concatenate`` of all batches would give, cut at ``count``.

    Args:
        bottoms: the batches' bottom arrays, in order (any iterable; reading stops once enough rows are in).
        axis: InnerProduct's flatten axis.
        count: rows wanted.

    Returns:
        (rows × columns) float32 array.
    """
    rows, total = [], 0
    for bottom in bottoms:
        part = vector_patches(bottom, axis)[:count - total]
        rows.append(part)
        total += len(part)
        if total >= count:
            break
    return np.concatenate(rows)


def row_budget(columns, max_rows, max_mb):
    """Rows to gather: at most ``max_rows`` and at most ``max_mb`` MiB of float32 (columns wide)."""
    return int(max(1, min(max_rows, max_mb * 2 ** 20 // (4 * max(1, columns)))))
