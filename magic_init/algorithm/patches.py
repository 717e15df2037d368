"""Input patches of an affine layer, gathered from its bottom blob at sampled locations.

A Convolution output at (b, y, x) of group g reads the patch
    x[b, g·C/G + c, y·s_h - p_h + i·d_h, x·s_w - p_w + j·d_w]   (zero outside the image),
for c < C/G, i < k_h, j < k_w, flattened in (c, i, j) order — the column order of Caffe's
weight blob (out, C/G, k_h, k_w). InnerProduct reads the bottom flattened from ``axis``.
"""
from __future__ import annotations

import numpy as np


def conv_output_size(size, kernel, pad, stride, dilation):
    """Caffe's conv output extent: (size + 2p - (d(k-1)+1)) // s + 1."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def sample_locations(batch, height, width, count, rng):
    """``count`` random (image, y, x) output locations (with replacement), as three int arrays."""
    return (rng.integers(0, batch, count), rng.integers(0, height, count), rng.integers(0, width, count))


def conv_patches(bottom, geometry, count, rng):
    """Patches at ``count`` sampled output locations: list over groups of (count × C/G·k_h·k_w) float32."""
    kh, kw = geometry.kernel
    (ph, pw), (sh, sw), (dh, dw) = geometry.pad, geometry.stride, geometry.dilation
    batch, channels, height, width = bottom.shape
    out_h = conv_output_size(height, kh, ph, sh, dh)
    out_w = conv_output_size(width, kw, pw, sw, dw)
    images, ys, xs = sample_locations(batch, out_h, out_w, count, rng)
    padded = np.pad(bottom, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    rows = ys[:, None] * sh + np.arange(kh)[None, :] * dh          # count × kh (padded coordinates)
    cols = xs[:, None] * sw + np.arange(kw)[None, :] * dw          # count × kw
    patch = padded[images[:, None, None, None], np.arange(channels)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]  # count × C × kh × kw
    per_group = channels // geometry.group
    return [patch[:, g * per_group:(g + 1) * per_group].reshape(count, -1).astype(np.float32)
            for g in range(geometry.group)]


def vector_patches(bottom, axis=1):
    """InnerProduct inputs: the bottom flattened from ``axis`` (one row per leading index)."""
    lead = int(np.prod(bottom.shape[:axis]))
    return bottom.reshape(lead, -1).astype(np.float32)


def row_budget(columns, max_rows, max_mb):
    """Rows to gather: at most ``max_rows`` and at most ``max_mb`` MiB of float32 (columns wide)."""
    return int(max(1, min(max_rows, max_mb * 2 ** 20 // (4 * max(1, columns)))))
