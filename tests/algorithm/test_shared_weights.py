"""Weights shared between layers (Caffe's ``param { name: "w" }``): one blob, initialized once.

Algorithm 1 draws a shared weight blob once, from the first layer using it, and normalizes that
layer's outputs; later users keep it and center their outputs with their own bias. Algorithm 2 ties
the users into one scale group and scales the blob once.
"""
from __future__ import annotations

import numpy as np
import pytest

from batched import forward_batches
from fakenet import FakeNet, small_convnet
from magic_init.algorithm import initialize, rescale
from magic_init.adapters.caffe import shared_params
from magic_init.algorithm.runner import SampleRunner
from magic_init.algorithm.within_layer import WithinLayer, accumulate_channels, channel_moments
from magic_init.errors import NetDefinitionError

BETA = 0.1

#: conv_a and conv_c share their weights (and, with ``shared_b``, their bias); conv_b sits between.
SHARED = """
name: "Shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "conv_a"
  param { name: "shared_w" } %(bias_a)s
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu_a" type: "ReLU" bottom: "conv_a" top: "conv_a" }
layer { name: "conv_b" type: "Convolution" bottom: "conv_a" top: "conv_b"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "conv_c" type: "Convolution" bottom: "conv_b" top: "conv_c"
  param { name: "shared_w" } %(bias_c)s
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu_c" type: "ReLU" bottom: "conv_c" top: "conv_c" }
layer { name: "fc" type: "InnerProduct" bottom: "conv_c" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def shared_prototxt(shared_bias=True):
    bias = 'param { name: "shared_b" }' if shared_bias else "param { }"
    return SHARED % {"bias_a": bias, "bias_c": bias}


def engine_net(shared_bias=True, zero=True):
    pytest.importorskip("torch")
    from magic_init.engine import Net
    from magic_init.io import parse_prototxt
    param = parse_prototxt(shared_prototxt(shared_bias))
    param.force_backward = True
    net = Net(param, input_shapes={"data": (8, 3, 8, 8)}, seed=0)
    if zero:
        for blobs in net.params.values():
            for blob in blobs:
                blob.data[...] = 0
    return net


def sample(n=40):
    return (np.random.default_rng(1).standard_normal((n, 3, 8, 8)) * 5 + 1).astype(np.float32)


def channel_stats(net, x, layer):
    sums = None
    for i in range(0, len(x), 8):
        net.blobs["data"].data[...] = x[i:i + 8]
        net.forward(end=layer)
        sums = accumulate_channels(net.blobs[layer].data, sums)
    return channel_moments(sums)


@pytest.mark.parametrize("shared_bias", [True, False])
def test_a_shared_weight_blob_is_drawn_once_and_normalizes_its_first_layer(shared_bias):
    """conv_a's outputs have mean β and std 1 (the later user conv_c must not redraw the blob); with its
    own bias conv_c's outputs are centered at β."""
    net, x = engine_net(shared_bias), sample()
    assert net.params["conv_a"][0] is net.params["conv_c"][0]             # the engine shares the blob
    reports = {r["layer"]: r for r in initialize(net, x, batch_size=8, between_layer=False, normalize="channel",
                                                 stats_dropout=False)["WithinLayer"]}
    assert [reports[n]["action"] for n in ("conv_a", "conv_b", "conv_c", "fc")] == \
        ["initialized", "initialized", "shared", "initialized"]
    assert reports["conv_c"]["shared_with"] == "conv_a"
    for layer in ("conv_a", "conv_b", "fc"):
        mean, std = channel_stats(net, x, layer)
        np.testing.assert_allclose(mean, BETA, atol=0.02, err_msg=layer)
        np.testing.assert_allclose(std, 1.0, atol=0.02, err_msg=layer)
    if not shared_bias:
        np.testing.assert_allclose(channel_stats(net, x, "conv_c")[0], BETA, atol=0.02)


def test_rescaling_scales_a_shared_blob_once_and_keeps_the_function():
    """One factor for conv_a and conv_c (their blob is scaled once); conv_b feeds the shared weights
    whose other use reads the net input, so it is held. The homogeneous net's output only changes by
    one positive factor."""
    net, x = engine_net(zero=False), sample()
    weight = net.params["conv_a"][0].data.copy()
    before = forward_batches(net, x, "fc", 8)
    report = rescale(net, x, batch_size=8, max_iter=30, factors="layer")["BetweenLayer"]
    assert report["scale"]["conv_a"] == report["scale"]["conv_c"] != 1.0
    assert "'conv_a' and 'conv_c' share" in report["held"]["conv_b"]
    np.testing.assert_allclose(net.params["conv_a"][0].data, weight * report["scale"]["conv_a"], rtol=1e-5)
    np.testing.assert_allclose(forward_batches(net, x, "fc", 8), before * report["output_scale"],
                               rtol=1e-3, atol=1e-5 * np.abs(before).max())


def test_a_kept_layer_keeps_the_weights_it_shares():
    """conv_c is not to be initialized (e.g. given by a loaded model): the blob it shares with conv_a stays."""
    net, x = engine_net(), sample()
    net.params["conv_a"][0].data[...] = np.random.default_rng(2).standard_normal((6, 3, 3, 3))
    weight = net.params["conv_a"][0].data.copy()
    reports = initialize(net, x, batch_size=8, between_layer=False, normalize="channel",
                         layers=["conv_a", "conv_b", "fc"])["WithinLayer"]
    assert [r["action"] for r in reports] == ["shared", "initialized", "kept", "initialized"]
    np.testing.assert_array_equal(net.params["conv_c"][0].data, weight)


def name_params(net, names):
    """Give layer ``names[layer]`` its ParamSpec names, as a prototxt's ``param { name: ... }`` does."""
    for layer in net.net_param.layer:
        for spec_name in names.get(layer.name, ()):
            layer.param.add(name=spec_name)
    return net


def test_sharing_between_layer_types_or_shapes_is_refused_naming_the_layers():
    net = name_params(small_convnet(), {"conv2": ["w"], "fc3": ["w"]})
    with pytest.raises(NetDefinitionError, match="layers 'conv2' .* and 'fc3' .* share parameter 'w'"):
        WithinLayer()(net, SampleRunner(net, np.zeros((8, 3, 12, 12), np.float32), 8))


def test_sharing_only_a_bias_is_refused():
    net = FakeNet([("data", "Input", [], ["data"], {}),
                   ("fc2", "InnerProduct", ["data"], ["fc2"], {"weight": (6, 5)}),
                   ("fc3", "InnerProduct", ["fc2"], ["fc3"], {"weight": (6, 6)})], (8, 5))
    net = name_params(net, {"fc2": ["", "b"], "fc3": ["", "b"]})
    assert shared_params(net) == {("fc3", 1): ("fc2", 1)}
    x = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    with pytest.raises(NetDefinitionError, match="layer 'fc3' shares its bias with 'fc2' but not its weights"):
        WithinLayer()(net, SampleRunner(net, x, 8))


def test_per_channel_rescaling_scales_a_shared_blob_once_and_keeps_the_function():
    """Per-channel factors: conv_a's and conv_c's output channels are tied unit by unit, the shared
    blob is scaled once (both layers still read one array) and the output is unchanged."""
    net, x = engine_net(zero=False), sample()
    weight = net.params["conv_a"][0].data.copy()
    before = forward_batches(net, x, "fc", 8)
    report = rescale(net, x, batch_size=8)["BetweenLayer"]
    assert report["factors"] == "per channel" and report["output_scale"] == 1.0
    assert report["scale"]["conv_a"] == report["scale"]["conv_c"]
    np.testing.assert_array_equal(net.params["conv_a"][0].data, net.params["conv_c"][0].data)
    ratio = net.params["conv_a"][0].data / weight
    assert not np.allclose(ratio, 1.0)                  # it moved, by one factor per output channel
    np.testing.assert_allclose(ratio, ratio[:, :1, :1, :1] * np.ones_like(ratio), rtol=1e-5)
    np.testing.assert_allclose(forward_batches(net, x, "fc", 8), before, rtol=1e-3, atol=1e-5 * np.abs(before).max())
