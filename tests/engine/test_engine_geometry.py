"""Caffe window geometry: repeated vs *_h/*_w fields, asymmetric values, pooled sizes."""
from __future__ import annotations

import pytest
from google.protobuf import text_format

from magic_init.engine.layers.geometry import conv_window, pool_window, pooled_size
from magic_init.errors import NetDefinitionError
from magic_init.proto import caffe_pb2


def _conv(text):
    return text_format.Merge(text, caffe_pb2.ConvolutionParameter())


def _pool(text):
    return text_format.Merge(text, caffe_pb2.PoolingParameter())


def test_conv_h_w_fields_are_kept_per_axis():
    w = conv_window(_conv("kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1"), 2)
    assert w.kernel == (3, 5) and w.pad == (1, 2) and w.stride == (2, 1) and w.dilation == (1, 1)


def test_conv_repeated_fields_one_or_per_axis():
    w = conv_window(_conv("kernel_size: 3 kernel_size: 7 pad: 0 pad: 3 stride: 4 dilation: 2"), 2)
    assert w.kernel == (3, 7) and w.pad == (0, 3) and w.stride == (4, 4) and w.dilation == (2, 2)
    w3 = conv_window(_conv("kernel_size: 3"), 3)
    assert w3.kernel == (3, 3, 3) and w3.pad == (0, 0, 0) and w3.stride == (1, 1, 1)


def test_conv_only_pad_h_given_leaves_pad_w_zero():
    assert conv_window(_conv("kernel_size: 3 pad_h: 2"), 2).pad == (2, 0)


def test_conv_bad_geometry_raises():
    with pytest.raises(NetDefinitionError):
        conv_window(_conv("pad: 1"), 2)                          # no kernel
    with pytest.raises(NetDefinitionError):
        conv_window(_conv("kernel_size: 3 kernel_size: 3 kernel_size: 3"), 2)
    with pytest.raises(NetDefinitionError):
        conv_window(_conv("kernel_h: 3"), 2)                     # kernel_w missing
    with pytest.raises(NetDefinitionError):
        conv_window(_conv("kernel_h: 3 kernel_w: 3"), 3)         # _h/_w on 3-D


def test_pool_h_w_and_global():
    w = pool_window(_pool("kernel_h: 2 kernel_w: 4 stride_h: 1 stride_w: 3 pad_h: 1 pad_w: 0"), (9, 9))
    assert w.kernel == (2, 4) and w.stride == (1, 3) and w.pad == (1, 0)
    g = pool_window(_pool("global_pooling: true kernel_size: 3 pad: 1"), (6, 7))
    assert g.kernel == (6, 7) and g.stride == (1, 1) and g.pad == (0, 0)
    with pytest.raises(NetDefinitionError):
        pool_window(_pool("kernel_size: 3 pad_h: 1"), (9, 9))   # Caffe wants pad_h and pad_w


@pytest.mark.parametrize("size, kernel, stride, pad, expected", [
    (55, 3, 2, 0, 27),       # CaffeNet pool1: exact
    (13, 3, 2, 0, 6),        # CaffeNet pool5
    (112, 3, 2, 0, 56),      # GoogLeNet pool1: ceil rounds up (floor would give 55)
    (6, 2, 2, 1, 4),         # ceil gives 4 windows; the 4th starts at 6 - 1 = 5 < 6 + 1: kept
    (5, 2, 2, 1, 3),         # ceil gives 4, but the 4th window starts at 3 * 2 = 6 >= 5 + 1: 3
])
def test_pooled_size_matches_caffe_formula(size, kernel, stride, pad, expected):
    import math
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    assert pooled_size(size, kernel, stride, pad) == out == expected


def test_pooled_size_drops_window_starting_in_padding():
    # ceil((4 + 2 - 2) / 2) + 1 = 3, but (3 - 1) * 2 = 4 >= 4 + 1? no; with stride 3:
    # ceil((4 + 2 - 2) / 3) + 1 = 3 and (3 - 1) * 3 = 6 >= 4 + 1 -> 2
    assert pooled_size(4, 2, 3, 1) == 2
    # without padding Caffe does not apply the correction
    assert pooled_size(5, 1, 3, 0) == 3
    assert pooled_size(5, 1, 3, 1, padded=False) == 3
    assert pooled_size(7, 3, 2, 0, ceil=False) == 3
