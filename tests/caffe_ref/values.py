"""Seeded values for inputs, parameters and top diffs, shared by the Caffe side and the host side.

Parameters of the big nets are too large to ship in every .npz, so both sides regenerate them here
from (case seed, layer name, blob index) with numpy's legacy ``RandomState``, whose streams NumPy
keeps frozen across versions; the generator also stores a hash of every parameter blob and
the host checks it before comparing anything, so a drifting generator fails loudly.
"""
from __future__ import annotations

import hashlib
import zlib

import numpy as np

BATCHNORM_SCALE_FACTOR = 2.5  # third BatchNorm blob: mean = blob0 / s, var = blob1 / s


def rng_for(*keys):
    """A RandomState seeded by a tuple of ints/strings (strings through crc32)."""
    ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.RandomState([i & 0xFFFFFFFF for i in ints])


def input_values(rng, kind, shape):
    """'gaussian' N(0,1), 'positive' U(0.5, 2), 'uniform' U(0, 1), 'labels:K' integers in [0, K)."""
    if kind == "gaussian":
        values = rng.standard_normal(shape)
    elif kind == "positive":
        values = rng.uniform(0.5, 2.0, shape)
    elif kind == "uniform":
        values = rng.uniform(0.0, 1.0, shape)
    elif kind.startswith("labels:"):
        values = rng.randint(0, int(kind.split(":")[1]), size=shape)
    else:
        raise ValueError("unknown input fill %r" % kind)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def case_param_values(case, layer_name, layer_type, index, shape):
    """The value both sides give parameter blob `index` of a layer in `case`."""
    if layer_name in case.zero_params:
        return np.zeros(shape, dtype=np.float32)
    return param_values(case.seed, layer_name, layer_type, index, shape)


def param_values(seed, layer_name, layer_type, index, shape):
    """Parameter blob `index` of a layer: He-scaled weights so deep nets keep O(1) activations.

    BatchNorm: blob0 = s * mean, blob1 = s * var (var in [0.5, 2]), blob2 = s (Caffe's scale factor).
    Scale: multipliers in [0.5, 1.5]. Weights (>= 2 axes): N(0, 2 / fan_in), fan_in = count / shape[0].
    Other 1-axis blobs (biases, PReLU slopes): N(0, 0.2^2).
    """
    rng = rng_for(seed, layer_name, index)
    shape = tuple(shape)
    s = BATCHNORM_SCALE_FACTOR
    if layer_type == "BatchNorm":
        values = [lambda: rng.standard_normal(shape) * 0.5 * s, lambda: rng.uniform(0.5, 2.0, shape) * s,
                  lambda: np.full(shape, s)][index]()
    elif layer_type == "Scale" and index == 0:
        values = rng.uniform(0.5, 1.5, shape)
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    else:
        values = rng.standard_normal(shape) * 0.2
    return np.asarray(values, dtype=np.float32).reshape(shape)


def fingerprint(array):
    """SHA-256 of the float32 little-endian bytes: exact, and independent of numpy's summation order."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return np.array(hashlib.sha256(a.tobytes()).hexdigest())
