"""A tiny numpy net with magic_init's Net interface, for algorithm unit tests without an engine.

Layers: Input, Convolution (pad, stride, group 1), InnerProduct, ReLU, Sigmoid, Eltwise SUM,
Pooling AVE 2x2/2 (non-overlapping), SoftmaxWithLoss (never run). Forward/backward follow Caffe's
rules that matter here: in-place tops share a blob, blob diffs are overwritten, param diffs add up.
"""
from __future__ import annotations

import functools
from collections import OrderedDict

import numpy as np

from magic_init.adapters.caffe import describe
from magic_init.proto import caffe_pb2


class Blob:
    def __init__(self, shape=(1,)):
        self.reshape(*shape)

    def reshape(self, *shape):
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)

    @property
    def shape(self):
        return self.data.shape


def _conv(x, w, pad, stride):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    cols = np.stack([xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                     for i in range(kh) for j in range(kw)], axis=2)  # n c k oh ow
    return cols, np.einsum("nckhw,ock->nohw", cols, w.reshape(o, c, kh * kw))


class FakeNet:
    """``layers``: list of (name, type, bottoms, tops, options). Call ``build(input_shape)``."""

    @functools.cached_property
    def description(self):
        """Described by the Caffe adapter, like the real backends."""
        return describe(self)

    def __init__(self, layers, input_shape):
        self.specs = layers
        self.net_param = caffe_pb2.NetParameter()
        self.layer_names = [s[0] for s in layers]
        self.layer_types = [s[1] for s in layers]
        self.bottom_names = OrderedDict((s[0], list(s[2])) for s in layers)
        self.top_names = OrderedDict((s[0], list(s[3])) for s in layers)
        self.inputs = [s[3][0] for s in layers if s[1] == "Input"]
        self.blobs = OrderedDict()
        self.params = OrderedDict()
        for name, kind, bottoms, tops, opt in layers:
            p = self.net_param.layer.add(name=name, type=kind)
            if kind == "Convolution":
                p.convolution_param.kernel_size.extend(opt["weight"][2:])
                p.convolution_param.pad.append(opt.get("pad", 0))
                p.convolution_param.stride.append(opt.get("stride", 1))
            for t in tops:
                self.blobs.setdefault(t, Blob())
        self.blobs[self.inputs[0]].reshape(*input_shape)
        self._setup_params()
        self.reshape()

    def _setup_params(self):
        for name, kind, bottoms, tops, opt in self.specs:
            if kind in ("Convolution", "InnerProduct"):
                self.params[name] = [Blob(opt["weight"]), Blob((opt["weight"][0],))]

    def reshape(self):
        for name, kind, bottoms, tops, opt in self.specs:
            if kind in ("Input", "SoftmaxWithLoss"):
                continue
            out = self._run(kind, name, [self.blobs[b].data for b in bottoms], opt)[0]
            if tops[0] not in bottoms:
                self.blobs[tops[0]].reshape(*out.shape)

    def _run(self, kind, name, xs, opt):
        x = xs[0]
        if kind == "Convolution":
            w, b = (p.data for p in self.params[name])
            cols, y = _conv(x, w, opt.get("pad", 0), opt.get("stride", 1))
            return y + b[None, :, None, None], cols
        if kind == "InnerProduct":
            w, b = (p.data for p in self.params[name])
            return x.reshape(len(x), -1).dot(w.T) + b, None
        if kind == "ReLU":
            return np.maximum(x, 0), None
        if kind == "Sigmoid":
            return 1 / (1 + np.exp(-x)), None
        if kind == "Eltwise":
            return sum(xs), None
        if kind == "Pooling":
            n, c, h, wd = x.shape
            return x.reshape(n, c, h // 2, 2, wd // 2, 2).mean(axis=(3, 5)), None
        raise ValueError(kind)

    def _index(self, name, default):
        return default if name is None else self.layer_names.index(name)

    def forward(self, start=None, end=None, **inputs):
        for i in range(self._index(start, 0), self._index(end, len(self.specs) - 1) + 1):
            name, kind, bottoms, tops, opt = self.specs[i]
            if kind in ("Input", "SoftmaxWithLoss"):
                continue
            y, _ = self._run(kind, name, [self.blobs[b].data for b in bottoms], opt)
            self.blobs[tops[0]].data[...] = y
        return {}

    def backward(self, start=None, end=None, **diffs):
        self._saved = {}
        for i in range(self._index(start, len(self.specs) - 1), self._index(end, 0) - 1, -1):
            name, kind, bottoms, tops, opt = self.specs[i]
            if kind in ("Input", "SoftmaxWithLoss"):
                continue
            self._backward_layer(name, kind, bottoms, tops, opt)
        return {}

    def _backward_layer(self, name, kind, bottoms, tops, opt):
        top, x = self.blobs[tops[0]], self.blobs[bottoms[0]]
        dy = top.diff.copy()
        if kind == "Convolution":
            w, b = self.params[name]
            pad, stride = opt.get("pad", 0), opt.get("stride", 1)
            cols, _ = _conv(x.data, w.data, pad, stride)
            o, c, kh, kw = w.shape
            w.diff += np.einsum("nckhw,nohw->ock", cols, dy).reshape(w.shape)
            b.diff += dy.sum(axis=(0, 2, 3))
            dcols = np.einsum("ock,nohw->nckhw", w.data.reshape(o, c, kh * kw), dy)
            n, _, h, wd = x.shape
            dxp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad), np.float32)
            oh, ow = dy.shape[2:]
            for k, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
                dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += dcols[:, :, k]
            x.diff[...] = dxp[:, :, pad:pad + h, pad:pad + wd]
        elif kind == "InnerProduct":
            w, b = self.params[name]
            flat = x.data.reshape(len(x.data), -1)
            w.diff += dy.T.dot(flat)
            b.diff += dy.sum(axis=0)
            x.diff[...] = dy.dot(w.data).reshape(x.shape)
        elif kind == "ReLU":
            x.diff[...] = dy * (top.data > 0)
        elif kind == "Sigmoid":
            x.diff[...] = dy * top.data * (1 - top.data)
        elif kind == "Eltwise":
            for bname in bottoms:
                self.blobs[bname].diff[...] = dy
        elif kind == "Pooling":
            x.diff[...] = np.repeat(np.repeat(dy, 2, axis=2), 2, axis=3) / 4

    def clear_param_diffs(self):
        for blobs in self.params.values():
            for blob in blobs:
                blob.diff[...] = 0


def small_convnet(batch=8, channels=3, size=12, seed=0):
    """conv(8, 3x3 pad 1) relu pool conv(12, 3x3 stride 2) relu fc(10) relu fc(5) loss."""
    layers = [
        ("data", "Input", [], ["data"], {}),
        ("conv1", "Convolution", ["data"], ["conv1"], {"weight": (8, channels, 3, 3), "pad": 1}),
        ("relu1", "ReLU", ["conv1"], ["conv1"], {}),
        ("pool1", "Pooling", ["conv1"], ["pool1"], {}),
        ("conv2", "Convolution", ["pool1"], ["conv2"], {"weight": (12, 8, 3, 3), "stride": 2}),
        ("relu2", "ReLU", ["conv2"], ["conv2"], {}),
        ("fc3", "InnerProduct", ["conv2"], ["fc3"], {"weight": (10, 12 * 2 * 2)}),
        ("relu3", "ReLU", ["fc3"], ["fc3"], {}),
        ("fc4", "InnerProduct", ["fc3"], ["fc4"], {"weight": (5, 10)}),
        ("loss", "SoftmaxWithLoss", ["fc4", "label"], ["loss"], {}),
    ]
    return FakeNet(layers, (batch, channels, size, size))
