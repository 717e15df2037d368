"""Caffe's window geometry: kernel/pad/stride/dilation of convolutions and poolings.

ConvolutionParameter gives each as a repeated field (one value for all spatial axes, or one per
axis) or, for 2-D only, as ``*_h``/``*_w`` (which win when set; kernel needs both). Defaults:
pad 0, stride 1, dilation 1 (BaseConvolutionLayer::LayerSetUp). PoolingParameter uses scalar
fields with the same ``*_h``/``*_w`` overrides. Pooling output size follows PoolingLayer::Reshape.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from magic_init.errors import NetDefinitionError


class Window(NamedTuple):
    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple


def _repeated(values, num_spatial, default, what, where):
    values = list(values)
    if not values:
        return (default,) * num_spatial
    if len(values) == 1:
        return (int(values[0]),) * num_spatial
    if len(values) == num_spatial:
        return tuple(int(v) for v in values)
    raise NetDefinitionError("%s: %s must be given once or %d times, got %d values"
                             % (where, what, num_spatial, len(values)))


def _h_w_override(param, name, values, num_spatial, where, both_required=False):
    has_h, has_w = param.HasField(name + "_h"), param.HasField(name + "_w")
    if not (has_h or has_w):
        return values
    if num_spatial != 2:
        raise NetDefinitionError("%s: %s_h/%s_w are only for 2-D windows" % (where, name, name))
    if both_required and not (has_h and has_w):
        raise NetDefinitionError("%s: give both %s_h and %s_w" % (where, name, name))
    return (getattr(param, name + "_h"), getattr(param, name + "_w"))


def conv_window(param, num_spatial, where="convolution") -> Window:
    """Kernel, stride, pad, dilation of a ConvolutionParameter, one value per spatial axis."""
    kernel = _repeated(param.kernel_size, num_spatial, None, "kernel_size", where)
    kernel = _h_w_override(param, "kernel", kernel, num_spatial, where, both_required=True)
    if kernel[0] is None:
        raise NetDefinitionError("%s: kernel_size (or kernel_h and kernel_w) is required" % where)
    stride = _h_w_override(param, "stride", _repeated(param.stride, num_spatial, 1, "stride", where),
                           num_spatial, where)
    pad = _h_w_override(param, "pad", _repeated(param.pad, num_spatial, 0, "pad", where),
                        num_spatial, where)
    dilation = _repeated(param.dilation, num_spatial, 1, "dilation", where)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise NetDefinitionError("%s: kernel and stride must be positive" % where)
    return Window(tuple(kernel), tuple(stride), tuple(pad), tuple(dilation))


def pool_window(param, spatial_shape, where="pooling") -> Window:
    """Kernel, stride, pad of a 2-D PoolingParameter (``global_pooling`` = whole input)."""
    if param.global_pooling:
        return Window(tuple(spatial_shape), (1, 1), (0, 0), (1, 1))
    if param.HasField("kernel_size"):
        kernel = (param.kernel_size,) * 2
    else:
        kernel = _h_w_override(param, "kernel", (None, None), 2, where, both_required=True)
    if kernel[0] is None:
        raise NetDefinitionError("%s: kernel_size (or kernel_h and kernel_w) is required" % where)
    stride = _h_w_override(param, "stride", (param.stride,) * 2, 2, where, both_required=True)
    pad = _h_w_override(param, "pad", (param.pad,) * 2, 2, where, both_required=True)
    return Window(tuple(kernel), tuple(stride), tuple(pad), (1, 1))


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
