"""Per-channel sums of a batch, in float64 without a float64 copy of the batch.

For an array z of shape (N, C, ...) (images, channels, positions) they are, per channel c,
Σ_{n,p} z[n, c, p] and Σ_{n,p} z[n, c, p]²: the sums behind Algorithm 1's per-channel mean and
standard deviation (paper §3.1) and behind the change rates' squared norms (Eq. 4). ``einsum`` casts
the float32 input to float64 block by block while it sums (a batch of conv1 outputs at 16 images is
37 MB in float64). ``channel_squares_per_image`` is the faster variant for sums of squares that no
subtraction follows.
"""
from __future__ import annotations

import numpy as np


def _channels(array):
    """The array as (N, C, positions)."""
    return array.reshape(array.shape[0], array.shape[1], -1)


def channel_sums(array):
    """Σ of ``array`` over axis 0 and the axes after 1, per index of axis 1 (float64).

    Args:
        array: (N, C, ...) values, any float dtype.

    Returns:
        (C,) float64 sums.
    """
    return np.einsum("nck->c", _channels(array), dtype=np.float64)


def channel_squares(array):
    """Σ of ``array``² over axis 0 and the axes after 1, per index of axis 1 (float64).

    Args:
        array: (N, C, ...) values, any float dtype.

    Returns:
        (C,) float64 sums of squares.
    """
    flat = _channels(array)
    return np.einsum("nck,nck->c", flat, flat, dtype=np.float64)


def channel_squares_per_image(array):
    """``channel_squares`` with each image's sum over its positions taken in the array's own dtype
    (vectorized, several times faster on float32) and only those N·C partial sums added in float64.

    For sums of squares that nothing subtracts from (the change rates' squared norms, Eq. 4): each
    term is positive, so the float32 partial sums carry a relative error of about 1e-7 and no
    cancellation can magnify it. A variance (Algorithm 1's E[z²] − μ²) needs ``channel_squares``.

    Args:
        array: (N, C, ...) values, any float dtype.

    Returns:
        (C,) float64 sums of squares.
    """
    flat = _channels(array)
    return np.einsum("nck,nck->nc", flat, flat).astype(np.float64).sum(axis=0)
