"""``Net.releasing``: freeing blobs and records during a pass leaves what is read unchanged."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from magic_init.engine import Net  # noqa: E402
from magic_init.errors import BackendError  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402

# in-place ReLUs (hand-written backward from the top), a leaky ReLU (from the bottom), a branch that
# two layers read, and a Scale (autograd)
NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "leaky" type: "ReLU" bottom: "conv2" top: "leaky" relu_param { negative_slope: 0.1 } }
layer { name: "scale" type: "Scale" bottom: "conv1" top: "scaled" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "leaky" bottom: "scaled" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
"""
AFFINE_TOPS = ["conv1", "conv2", "ip"]


def _run(release):
    net = Net(text_format.Merge(NET, caffe_pb2.NetParameter()), seed=3)
    rng = np.random.default_rng(0)
    data = rng.standard_normal(net.blobs["data"].shape).astype(np.float32)
    eta = rng.standard_normal(net.blobs["ip"].shape).astype(np.float32)
    seen = {}
    with net.releasing(keep=["ip"]) if release else _nothing():
        net.forward(data=data, end="relu1")
        seen["conv1 data"] = net.blobs["conv1"].data.copy()   # read before its last reader (a Split) ran
        net.forward(start=net.layer_names[net.layer_names.index("relu1") + 1])
        seen["ip data"] = net.blobs["ip"].data.copy()
        net.blobs["ip"].diff[...] = eta
        net.backward(start="ip", end="ip")          # a diff is read before its writer runs backward
        seen["ip diff"] = net.blobs["ip"].diff.copy()
        seen["pool diff"] = net.blobs["pool"].diff.copy()
        net.backward(start="pool", end="leaky")
        seen["conv2 diff"] = net.blobs["conv2"].diff.copy()
        net.backward(start="conv2", end="relu1")
        seen["conv1 diff"] = net.blobs["conv1"].diff.copy()      # before conv1's backward drops it
        net.backward(start="conv1")
    for name, blobs in net.params.items():
        for j, blob in enumerate(blobs):
            seen["%s[%d] diff" % (name, j)] = blob.diff.copy()
    return net, seen


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_releasing_keeps_outputs_and_gradients_equal():
    _, plain = _run(release=False)
    net, released = _run(release=True)
    assert sorted(plain) == sorted(released)
    for key in plain:
        np.testing.assert_array_equal(released[key], plain[key], err_msg=key)
    assert any(np.any(v) for v in released.values())


def test_releasing_frees_what_no_one_reads():
    net, _ = _run(release=True)
    assert all(record is None for record in net._records[1:])        # every record dropped after backward
    assert net.blobs["leaky"]._data_mirror is None                     # read by "sum", its last reader
    assert net.blobs["sum"]._diff is None                             # written by "sum", which ran backward
    assert net.blobs["ip"]._diff is not None                          # kept
    assert net.blobs["data"]._data_mirror is not None                 # net inputs are kept


def test_a_second_backward_after_releasing_raises():
    net, _ = _run(release=True)
    with pytest.raises(BackendError, match="needs a forward"):
        net.backward(start="ip")
