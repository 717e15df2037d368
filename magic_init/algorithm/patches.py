"""Input patches of an affine layer, gathered from its bottom blob at sampled locations.

A 2-D Convolution output at (b, y, x) of group g reads the patch
    x[b, g·C/G + c, y·s_h - p_h + i·d_h, x·s_w - p_w + j·d_w]   (zero outside the image),
for c < C/G, i < k_h, j < k_w, flattened in (c, i, j) order — the column order of Caffe's
weight blob (out, C/G, k_h, k_w); a convolution over 1 or 3 spatial axes likewise, one kernel index
per axis. InnerProduct reads the bottom flattened from ``axis``.
The geometry (a ``magic_init.conv_geometry.ConvGeometry``) and the output size come from
``magic_init.conv_geometry``.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from magic_init.conv_geometry import conv_output_size
from magic_init.errors import NetDefinitionError


def sample_locations(batch, extent, count, rng):
    """``count`` random output locations (with replacement): the image indices and one index array per
    spatial axis of ``extent`` (the output's spatial size), drawn in that order."""
    return rng.integers(0, batch, count), tuple(rng.integers(0, size, count) for size in extent)


def output_extent(shape, geometry):
    """The output's spatial size of the convolution of ``geometry`` on a bottom of ``shape`` (N, C, ...)."""
    if len(geometry.kernel) != len(shape) - 2:
        raise NetDefinitionError("a %d-D kernel %s cannot slide over a bottom of shape %s"
                                 % (len(geometry.kernel), tuple(geometry.kernel), tuple(shape)))
    return tuple(conv_output_size(size, k, p, s, d) for size, k, p, s, d in
                 zip(shape[2:], geometry.kernel, geometry.pad, geometry.stride, geometry.dilation))


def patches_at(bottom, geometry, images, coords):
    """Patches at output locations (images[n], coords[0][n], ...): list over groups of (n × C/G·Πk) float32.

    Gathered from a strided view of the padded bottom whose element (b, c, y, x, i, j) is
    padded[b, c, y + i·d_h, x + j·d_w] (for two spatial axes; likewise for others), with no copy but
    the padding, so only the patches are copied."""
    kernel, pad, stride, dilation = geometry.kernel, geometry.pad, geometry.stride, geometry.dilation
    padded = bottom
    if any(pad):
        padded = np.pad(bottom, ((0, 0), (0, 0)) + tuple((p, p) for p in pad))
    padded = np.ascontiguousarray(padded)
    strides = padded.strides
    windows = as_strided(padded, padded.shape[:2] + tuple(size - (k - 1) * d for size, k, d in
                                                           zip(padded.shape[2:], kernel, dilation)) + tuple(kernel),
                         strides + tuple(st * d for st, d in zip(strides[2:], dilation)), writeable=False)
    patch = windows[(images, slice(None)) + tuple(c * s for c, s in zip(coords, stride))]   # count × C × kernel
    per_group = bottom.shape[1] // geometry.group
    return [patch[:, g * per_group:(g + 1) * per_group].reshape(len(images), -1).astype(np.float32, copy=False)
            for g in range(geometry.group)]


def conv_patches(bottom, geometry, count, rng):
    """Patches at ``count`` sampled output locations: list over groups of (count × C/G·Πk) float32."""
    return patches_at(bottom, geometry, *sample_locations(len(bottom), output_extent(bottom.shape, geometry),
                                                          count, rng))


def sampled_conv_patches(bottoms, geometry, count, rng, sizes=None, shape=None):
    """conv_patches over the images of all ``bottoms`` (consecutive batches) as if they were one array:
    the locations are drawn over the image indices of the whole sample, so the patches (and their
    order) do not depend on how the sample is cut into batches.

    Args:
        bottoms: the batches' bottom arrays (N_b, C, ...), in order; any iterable, read once.
        geometry: the convolution's ``ConvGeometry``.
        count: patches to gather.
        rng: numpy Generator for the locations.
        sizes: images per batch, when ``bottoms`` is not a list (then ``shape`` is needed too).
        shape: the bottom's shape (any N), when ``bottoms`` is not a list.

    Returns:
        list over groups of (count × C/G·Πk) float32 arrays.
    """
    if sizes is None:
        bottoms = list(bottoms)
        sizes, shape = [len(b) for b in bottoms], bottoms[0].shape
    images, coords = sample_locations(sum(sizes), output_extent(shape, geometry), count, rng)
    starts = np.cumsum([0] + list(sizes))
    result = None
    for b, bottom in enumerate(bottoms):
        pick = np.flatnonzero((images >= starts[b]) & (images < starts[b + 1]))
        groups = patches_at(bottom, geometry, images[pick] - starts[b], tuple(c[pick] for c in coords))
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
