"""The layer protocol: what a forward hands to a hand-written backward lives in the net's record of
that forward, never on the layer object; errors about unknown names list the known ones."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from magic_init.engine import Net  # noqa: E402
from magic_init.engine.layers.base import LAYER_TYPES, Layer  # noqa: E402
from magic_init.errors import NetDefinitionError  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402

# Every hand-written backward, and each of Pooling's and LRN's paths: torch's MAX / AVE op (saved
# indices / window), the explicitly padded MAX (pad > kernel / 2: autograd inside backward), LRN
# across channels (saved scale) and within a channel (autograd inside backward).
NET = """
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "lrn_across" type: "LRN" bottom: "conv" top: "lrn_across"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "pool_max" type: "Pooling" bottom: "lrn_across" top: "pool_max"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "lrn_within" type: "LRN" bottom: "pool_max" top: "lrn_within"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }
layer { name: "pool_padded" type: "Pooling" bottom: "lrn_within" top: "pool_padded"
        pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 2 } }
layer { name: "pool_ave" type: "Pooling" bottom: "pool_padded" top: "pool_ave"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool_ave" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "constant" value: 0.2 } } }
"""
HAND_WRITTEN = ["conv", "lrn_across", "pool_max", "lrn_within", "pool_padded", "pool_ave", "ip"]


def make_net():
    return Net(text_format.Merge(NET, caffe_pb2.NetParameter()), seed=3)


def _input(net, seed):
    return np.random.default_rng(seed).standard_normal(net.blobs["data"].shape).astype(np.float32)


def _top_diff(net):
    return np.random.default_rng(7).standard_normal(net.blobs["ip"].shape).astype(np.float32)


def _gradients(net):
    grads = {"data": net.blobs["data"].diff.copy()}
    for name in HAND_WRITTEN:
        grads[name] = net.blobs[name].diff.copy()
    for name, blobs in net.params.items():
        for j, blob in enumerate(blobs):
            grads["%s[%d]" % (name, j)] = blob.diff.copy()
    return grads


def test_the_net_uses_every_hand_written_backward():
    net = make_net()
    assert [name for name, layer in net.layer_dict.items()
            if layer.has_hand_written_backward()] == HAND_WRITTEN


def test_layers_keep_no_per_forward_state():
    net = make_net()
    before = {name: dict(vars(layer)) for name, layer in net.layer_dict.items()}
    for seed in (0, 1):
        net.forward(data=_input(net, seed))
        net.backward(ip=_top_diff(net))
    with net.no_grad():
        net.forward(data=_input(net, 2))
    for name, layer in net.layer_dict.items():
        after = vars(layer)
        assert sorted(after) == sorted(before[name]), name
        for key, value in before[name].items():
            assert after[key] is value, (name, key)


def test_backward_uses_the_last_forward_exactly():
    net = make_net()
    net.forward(data=_input(net, 0))
    net.forward(data=_input(net, 1))
    net.backward(ip=_top_diff(net))
    fresh = make_net()
    fresh.forward(data=_input(fresh, 1))
    fresh.backward(ip=_top_diff(fresh))
    got, expected = _gradients(net), _gradients(fresh)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


@pytest.mark.parametrize("name", ["pool_max", "lrn_across", "pool_ave"])
def test_saved_state_belongs_to_its_own_forward(name):
    """A forward's ``saved`` still gives that forward's gradient after another forward ran."""
    layer = make_net().layer_dict[name]
    shape = (2, 6, 9, 9) if name != "pool_ave" else (2, 6, 6, 6)
    generator = torch.Generator().manual_seed(5)
    first, second = (torch.randn(shape, generator=generator) for _ in range(2))
    with torch.no_grad():
        tops, saved = layer.forward_for_backward([first], [])
        layer.forward_for_backward([second], [])
    assert saved is not None
    dy = torch.randn(tops[0].shape, generator=generator)
    got = layer.backward([first], [], tops, saved, [dy], [True], [])[0]
    leaf = first.clone().requires_grad_(True)
    expected, = torch.autograd.grad(layer.forward([leaf], [])[0], [leaf], [dy])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_backward_is_declared_on_the_base_class():
    assert hasattr(Layer, "backward") and Layer.backward.__doc__
    assert not Layer.has_hand_written_backward()
    hand_written = {kind for kind, cls in LAYER_TYPES.items() if cls.has_hand_written_backward()}
    assert {"Convolution", "InnerProduct", "Pooling", "LRN", "ReLU"} <= hand_written
    assert "Sigmoid" not in hand_written and "Deconvolution" not in hand_written
    layer = LAYER_TYPES["Sigmoid"](text_format.Merge('name: "r" type: "Sigmoid"', caffe_pb2.LayerParameter()),
                                   "test")
    with pytest.raises(NotImplementedError, match="'r'"):
        layer.backward([], [], [], None, [], [], [])


# ---------------------------------------------------------------------- unknown names
def test_unknown_layer_error_lists_the_layers():
    net = make_net()
    with pytest.raises(NetDefinitionError) as error:
        net.forward(end="pool")
    message = str(error.value)
    assert "no layer named 'pool' in the net" in message and "\n" not in message
    assert "'data', 'conv', 'lrn_across', 'pool_max'" in message and "more" not in message
    with pytest.raises(NetDefinitionError, match="'pool_max'"):
        net.backward(start="nope")


def test_unknown_blob_error_lists_the_blobs():
    net = make_net()
    with pytest.raises(NetDefinitionError) as error:
        net.forward(dat=_input(net, 0))
    message = str(error.value)
    assert "no blob named 'dat' in the net" in message and "\n" not in message
    assert "'data', 'conv', 'lrn_across'" in message and "'ip'" in message


def test_many_names_are_cut_after_twenty():
    layers = ['layer { name: "data" type: "Input" top: "x0" input_param { shape { dim: 1 dim: 2 } } }']
    layers += ['layer { name: "p%d" type: "Power" bottom: "x%d" top: "x%d" }' % (i, i - 1, i)
               for i in range(1, 25)]
    net = Net(text_format.Merge("\n".join(layers), caffe_pb2.NetParameter()))
    with pytest.raises(NetDefinitionError) as error:
        net.forward(start="p25")
    message = str(error.value)
    assert "\n" not in message
    assert "'data', 'p1', " in message and "'p19'" in message and "'p20'" not in message
    assert message.endswith("... and 5 more)")
    with pytest.raises(NetDefinitionError) as error:
        net.set_blob_data("x25", np.zeros((1, 2), np.float32))
    message = str(error.value)
    assert "'x0', 'x1', " in message and "'x19'" in message and "'x20'" not in message
    assert message.endswith("... and 5 more)")
