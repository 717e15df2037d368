"""Window geometry of convolution and pooling layers, as Caffe resolves it (torch-free).

The one place that reads kernel/pad/stride/dilation: the engine's Convolution, Deconvolution and
Pooling layers, the algorithm (through ``adapters.caffe``) and through it the patch
gatherer (``algorithm.patches``) all call it.

ConvolutionParameter (``BaseConvolutionLayer::LayerSetUp``): ``kernel_size``, ``pad``, ``stride``,
``dilation`` are repeated fields, given once (for every spatial axis) or once per spatial axis;
defaults pad 0, stride 1, dilation 1 (kernel has none). For 2-D only, ``kernel_h/_w``,
``pad_h/_w``, ``stride_h/_w`` give the two axes instead (exclusive with the repeated field; a
missing one of the pair is 0, which Caffe then refuses for kernel). Caffe's checks are kept, with
its messages, prefixed by the layer. Two degenerate cases Caffe does not check are refused too,
because nothing can compute them: a zero ``stride_h``/``stride_w`` (Caffe divides by it) and a zero
dilation.

Output size: Convolution ``(in + 2·pad − (dilation·(k − 1) + 1)) / stride + 1`` with C's
truncating division (``ConvolutionLayer::compute_output_shape``), Deconvolution its inverse
``stride·(in − 1) + dilation·(k − 1) + 1 − 2·pad``.

PoolingParameter (``PoolingLayer::LayerSetUp``/``Reshape``) is 2-D with scalar fields and the
same ``_h/_w`` overrides; its output size rounds up (``round_mode``) and drops a last window that
would start in the padding.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from magic_init.errors import NetDefinitionError


class ConvGeometry(NamedTuple):
    """One value per spatial axis for each field (pooling: dilation 1, group 1)."""
    kernel: tuple
    pad: tuple
    stride: tuple
    dilation: tuple
    group: int = 1


def _fail(where, message):
    raise NetDefinitionError("%s: %s" % (where, message))


def _axis_values(param, field, num_spatial, default, where):
    """Caffe's resolution of one field: ``field_h``/``field_w`` (2-D, exclusive with the repeated
    ``field``), else the repeated field once or per axis (``default`` when empty, if it has one)."""
    repeated = "kernel_size" if field == "kernel" else field
    values = list(getattr(param, repeated))
    if field != "dilation" and (param.HasField(field + "_h") or param.HasField(field + "_w")):
        if num_spatial != 2:
            _fail(where, "%s_h & %s_w can only be used for 2D convolution." % (field, field))
        if values:
            _fail(where, "Either %s or %s_h/w should be specified; not both." % (repeated, field))
        return (int(getattr(param, field + "_h")), int(getattr(param, field + "_w")))
    allowed = (1, num_spatial) if default is None else (0, 1, num_spatial)
    if len(values) not in allowed:
        _fail(where, "%s must be specified once, or once per spatial dimension (%s specified %d times; "
              "%d spatial dims)." % (repeated, repeated, len(values), num_spatial))
    if not values:
        return (default,) * num_spatial
    return tuple(int(values[0 if len(values) == 1 else i]) for i in range(num_spatial))


def convolution(param, num_spatial: int, where: str = "convolution") -> ConvGeometry:
    """Geometry of a ConvolutionParameter over ``num_spatial`` spatial axes (NetDefinitionError
    with Caffe's message, prefixed by ``where``, when Caffe would refuse it)."""
    if num_spatial < 0:
        _fail(where, "the bottom has fewer axes than the channel axis needs")
    kernel = _axis_values(param, "kernel", num_spatial, None, where)
    if min(kernel, default=1) <= 0:
        _fail(where, "Filter dimensions must be nonzero.")
    stride = _axis_values(param, "stride", num_spatial, 1, where)
    if min(stride, default=1) <= 0:
        _fail(where, "Stride dimensions must be nonzero.")
    pad = _axis_values(param, "pad", num_spatial, 0, where)
    dilation = _axis_values(param, "dilation", num_spatial, 1, where)
    if min(dilation, default=1) <= 0:
        _fail(where, "dilation must be positive (Caffe accepts 0; no engine computes it)")
    return ConvGeometry(kernel, pad, stride, dilation, int(param.group))


def kernel_extent(kernel: int, dilation: int) -> int:
    """Input span of a dilated kernel: dilation·(kernel − 1) + 1."""
    return dilation * (kernel - 1) + 1


def conv_output_size(size: int, kernel: int, pad: int, stride: int, dilation: int = 1) -> int:
    """Caffe's Convolution output extent of one axis: (size + 2·pad − extent) / stride + 1, the
    division truncating toward zero as in C (only differs from floor when the window does not fit)."""
    span = size + 2 * pad - kernel_extent(kernel, dilation)
    return (abs(span) // stride) * (1 if span >= 0 else -1) + 1


def deconv_output_size(size: int, kernel: int, pad: int, stride: int, dilation: int = 1) -> int:
    """Caffe's Deconvolution output extent of one axis: stride·(size − 1) + extent − 2·pad."""
    return stride * (size - 1) + kernel_extent(kernel, dilation) - 2 * pad


def output_spatial(geometry: ConvGeometry, spatial, transposed: bool = False, where: str = "convolution"):
    """Output extents over the spatial axes of an input of extents ``spatial`` (Convolution, or
    Deconvolution when ``transposed``); NetDefinitionError when the window does not fit (a padded
    input shorter than the kernel's extent, or an output smaller than 1)."""
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) != len(geometry.kernel):
        _fail(where, "%d spatial axes in the input, %d in the window" % (len(spatial), len(geometry.kernel)))
    size_of = deconv_output_size if transposed else conv_output_size
    out = tuple(size_of(spatial[i], geometry.kernel[i], geometry.pad[i], geometry.stride[i], geometry.dilation[i])
                for i in range(len(spatial)))
    fits = transposed or all(spatial[i] + 2 * geometry.pad[i] >= kernel_extent(geometry.kernel[i],
                                                                            geometry.dilation[i])
                             for i in range(len(spatial)))
    if not fits or min(out, default=1) < 1:
        _fail(where, "the window does not fit the input %s (output %s)" % (spatial, out))
    return out


# ----------------------------------------------------------------------------- pooling

def _pool_pair(param, name, where, both_required=False):
    has_h, has_w = param.HasField(name + "_h"), param.HasField(name + "_w")
    if not (has_h or has_w):
        return None
    if both_required and not (has_h and has_w):
        _fail(where, "give both %s_h and %s_w" % (name, name))
    return (int(getattr(param, name + "_h")), int(getattr(param, name + "_w")))


def pool_window(param, spatial_shape, where: str = "pooling") -> ConvGeometry:
    """Kernel, pad, stride of a 2-D PoolingParameter (``global_pooling`` = whole input)."""
    if param.global_pooling:
        return ConvGeometry(tuple(spatial_shape), (0, 0), (1, 1), (1, 1))
    if param.HasField("kernel_size"):
        kernel = (int(param.kernel_size),) * 2
    else:
        kernel = _pool_pair(param, "kernel", where, both_required=True)
        if kernel is None:
            _fail(where, "kernel_size (or kernel_h and kernel_w) is required")
    stride = _pool_pair(param, "stride", where, both_required=True) or (int(param.stride),) * 2
    pad = _pool_pair(param, "pad", where, both_required=True) or (int(param.pad),) * 2
    if min(kernel) <= 0 or min(stride) <= 0:
        _fail(where, "kernel and stride must be positive")
    return ConvGeometry(kernel, pad, stride, (1, 1))


def pooled_size(size, kernel, stride, pad, ceil=True, padded=None) -> int:
    """Caffe's pooled size: ceil((size + 2 pad - kernel) / stride) + 1, minus one when the layer
    is padded (on any axis: ``padded``) and the last window would start in the padding
    ((out - 1) * stride >= size + pad)."""
    padded = bool(pad) if padded is None else padded
    rounding = math.ceil if ceil else math.floor
    out = int(rounding((size + 2 * pad - kernel) / float(stride))) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out
