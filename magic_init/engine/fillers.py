"""Caffe's weight fillers (include/caffe/filler.hpp), in numpy, seeded.

``fill(filler_param, shape, rng)`` returns a float32 array. Fan-in and fan-out follow Caffe:
``fan_in = count / shape[0]`` and ``fan_out = count / shape[1]`` (``count`` for 1-D blobs), so a
convolution's fan-in is C_in/group * kh * kw. Values are not Caffe's bit for bit (different RNG).
"""
from __future__ import annotations

import math

import numpy as np

from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2

_FILLERS = {}
_VARIANCE_NORM = caffe_pb2.FillerParameter.VarianceNorm


def _filler(name):
    def register(function):
        _FILLERS[name] = function
        return function
    return register


def fill(filler, shape, rng=None, where="blob") -> np.ndarray:
    """Initial values of a blob of ``shape`` from a ``FillerParameter`` (type default "constant")."""
    rng = rng if rng is not None else np.random.default_rng()
    try:
        function = _FILLERS[filler.type]
    except KeyError:
        raise NetDefinitionError("%s: unknown filler type %r (known: %s)"
                                 % (where, filler.type, ", ".join(sorted(_FILLERS)))) from None
    shape = tuple(int(d) for d in shape)
    return np.asarray(function(filler, shape, rng), dtype=np.float32).reshape(shape)


def fan_in_out(shape):
    """Caffe's (fan_in, fan_out): count / shape[0] and count / shape[1] (count if 1-D)."""
    count = int(np.prod(shape)) if shape else 1
    fan_in = count // shape[0] if shape else 1
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(filler, shape):
    """n of Xavier/MSRA: fan_in (FAN_IN, default), fan_out (FAN_OUT) or their mean (AVERAGE)."""
    fan_in, fan_out = fan_in_out(shape)
    if filler.variance_norm == _VARIANCE_NORM.Value("FAN_OUT"):
        return fan_out
    if filler.variance_norm == _VARIANCE_NORM.Value("AVERAGE"):
        return (fan_in + fan_out) / 2.0
    return fan_in


def _normal(rng, mean, std, shape):
    """N(mean, std^2) drawn directly in float32 (no float64 copy of a large blob)."""
    values = rng.standard_normal(size=shape, dtype=np.float32)
    values *= np.float32(std)
    values += np.float32(mean)
    return values


def _uniform(rng, low, high, shape):
    """U(low, high) drawn directly in float32."""
    values = rng.random(size=shape, dtype=np.float32)
    values *= np.float32(high - low)
    values += np.float32(low)
    return values


@_filler("constant")
def constant(filler, shape, rng):
    """Every value = ``value`` (default 0)."""
    return np.full(shape, filler.value, dtype=np.float32)


@_filler("uniform")
def uniform(filler, shape, rng):
    """U(min, max), defaults U(0, 1)."""
    return _uniform(rng, filler.min, filler.max, shape)


@_filler("gaussian")
def gaussian(filler, shape, rng):
    """N(mean, std^2); with ``sparse`` s >= 0 each value is kept with probability s / shape[0]."""
    values = _normal(rng, filler.mean, filler.std, shape)
    if filler.sparse >= 0:
        keep = min(1.0, filler.sparse / float(shape[0]))
        values *= rng.random(size=shape, dtype=np.float32) < keep
    return values


@_filler("positive_unitball")
def positive_unitball(filler, shape, rng):
    """U(0, 1), then each of the shape[0] rows (count / shape[0] values) scaled to sum to 1."""
    values = rng.random(size=shape, dtype=np.float32).reshape(shape[0], -1)
    return values / values.sum(axis=1, keepdims=True)


@_filler("xavier")
def xavier(filler, shape, rng):
    """Glorot & Bengio (2010) as Caffe does it: U(-a, a) with a = sqrt(3 / n), n = fan_in by default."""
    scale = math.sqrt(3.0 / _variance_n(filler, shape))
    return _uniform(rng, -scale, scale, shape)


@_filler("msra")
def msra(filler, shape, rng):
    """He et al. (2015): N(0, 2 / n), n = fan_in by default."""
    return _normal(rng, 0.0, math.sqrt(2.0 / _variance_n(filler, shape)), shape)


@_filler("bilinear")
def bilinear(filler, shape, rng):
    """Bilinear upsampling kernel (for Deconvolution): with f = ceil(K / 2) and
    c = (2f - 1 - f mod 2) / (2f), w(y, x) = (1 - |x / f - c|) (1 - |y / f - c|)."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise NetDefinitionError("bilinear filler needs a 4-D blob with square kernels, got %s"
                                 % (shape,))
    size = shape[3]
    f = math.ceil(size / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    line = 1 - np.abs(np.arange(size) / f - c)
    return np.broadcast_to(np.outer(line, line), shape).copy()


def supported_fillers():
    return sorted(_FILLERS)
