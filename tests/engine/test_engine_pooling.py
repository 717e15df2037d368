"""Pooling against a direct transcription of Caffe's PoolingLayer loops (both torch paths)."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from magic_init.engine import Net  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402


def caffe_pool(x, method, kernel, stride, pad):
    """Caffe's Forward_cpu, loop by loop."""
    n, c, h, w = x.shape
    out = []
    for size, k, s, p in zip((h, w), kernel, stride, pad):
        o = int(math.ceil((size + 2 * p - k) / float(s))) + 1
        if any(pad) and (o - 1) * s >= size + p:
            o -= 1
        out.append(o)
    y = np.zeros((n, c, out[0], out[1]), np.float64)
    for ph in range(out[0]):
        for pw in range(out[1]):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            if method == "MAX":       # Caffe starts from -FLT_MAX (empty windows keep it)
                y[:, :, ph, pw] = window.max(axis=(2, 3), initial=-np.finfo(np.float32).max)
            else:
                y[:, :, ph, pw] = window.sum(axis=(2, 3)) / area
    return y


CASES = [  # (h, w), kernel, stride, pad
    ((7, 6), (3, 2), (2, 1), (1, 0)),
    ((5, 5), (2, 2), (2, 2), (1, 1)),     # last window would start in the padding
    ((6, 7), (3, 3), (2, 2), (0, 0)),     # ceil overhang without padding
    ((5, 5), (1, 1), (3, 3), (0, 0)),     # stride > kernel: torch's size rule differs
    ((6, 6), (3, 3), (1, 1), (2, 2)),     # pad > kernel / 2: torch refuses, explicit path
    ((8, 9), (3, 3), (2, 2), (1, 1)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size, kernel, stride, pad", CASES)
def test_pooling_matches_caffe_loops(method, size, kernel, stride, pad):
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: %d dim: %d } } }
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
            pooling_param { pool: %s kernel_h: %d kernel_w: %d stride_h: %d stride_w: %d
                            pad_h: %d pad_w: %d } }
    """ % (size + (method,) + kernel + stride + pad)
    net = Net(text_format.Merge(text, caffe_pb2.NetParameter()))
    x = np.random.default_rng(0).standard_normal((2, 3) + size).astype(np.float32)
    out = net.forward(data=x)["pool"]
    expected = caffe_pool(x.astype(np.float64), method, kernel, stride, pad)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
