"""Algorithm 1 (magic_init.algorithm.within_layer) on the numpy fake net."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from fakenet import small_convnet
from magic_init.algorithm import initialize
from magic_init.algorithm.runner import SampleRunner
from magic_init.algorithm.within_layer import (WithinLayer, accumulate_channels, channel_moments,
                                               normalize_rows)
from magic_init.errors import MagicInitError, NetDefinitionError

BETA = 0.1


def sample(n=40, seed=1):
    return (np.random.default_rng(seed).standard_normal((n, 3, 12, 12)) * 5 + 2).astype(np.float32)


def channel_stats(net, x, layer, batch=8):
    sums = None
    for i in range(0, len(x), batch):
        net.blobs["data"].data[...] = x[i:i + batch]
        net.forward(end=layer)
        sums = accumulate_channels(net.blobs[layer].data, sums)
    return channel_moments(sums)


@pytest.mark.parametrize("init", ["gaussian", "pca", "zca", "kmeans", "rand"])
def test_every_channel_has_mean_beta_and_unit_std(init):
    net, x = small_convnet(), sample()
    reports = WithinLayer(init=init, beta=BETA, normalize="channel")(net, SampleRunner(net, x, 8))
    assert [r["action"] for r in reports] == ["initialized"] * 4
    for layer in ("conv1", "conv2", "fc3", "fc4"):
        mean, std = channel_stats(net, x, layer)
        np.testing.assert_allclose(mean, BETA, atol=0.02)
        np.testing.assert_allclose(std, 1, atol=0.02)


def test_layer_normalization_gives_unit_mean_variance_and_keeps_relative_row_norms():
    """--normalize layer: one factor per layer (mean over channels of σ² = 1), per-channel centering
    at β, and the drawn rows' norms keep their ratios (the channel variant equalizes them instead)."""
    net, x = small_convnet(), sample()
    per_layer = WithinLayer(init="gaussian", beta=BETA, normalize="layer")
    per_layer(net, SampleRunner(net, x, 8))
    other = small_convnet()
    WithinLayer(init="gaussian", beta=BETA, normalize="channel")(other, SampleRunner(other, x, 8))
    for layer in ("conv1", "conv2", "fc3", "fc4"):
        mean, std = channel_stats(net, x, layer)
        np.testing.assert_allclose(mean, BETA, atol=0.02)
        assert np.mean(std ** 2) == pytest.approx(1, abs=0.03)
        assert std.std() > 0.05                               # channels are not equalized
    # conv1 sees the same input in both: the same drawn rows, divided by σ_L instead of σ(i)
    _, std1 = channel_stats(net, x, "conv1")
    rows = net.params["conv1"][0].data.reshape(len(std1), -1)
    rows_per_channel = other.params["conv1"][0].data.reshape(len(std1), -1)
    ratio = np.linalg.norm(rows, axis=1) / np.linalg.norm(rows_per_channel, axis=1)
    np.testing.assert_allclose(ratio, std1, rtol=1e-3)
    cosine = np.sum(rows * rows_per_channel, axis=1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(rows_per_channel, axis=1)
    np.testing.assert_allclose(cosine, 1, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown normalization"):
        WithinLayer(normalize="unit")


def test_conv_layer_normalization_is_per_layer_for_convolutions_and_per_channel_for_fc():
    net, x = small_convnet(), sample()
    WithinLayer(init="gaussian", beta=BETA, normalize="conv-layer")(net, SampleRunner(net, x, 8))
    for layer in ("conv1", "conv2"):
        std = channel_stats(net, x, layer)[1]
        assert np.mean(std ** 2) == pytest.approx(1, abs=0.03) and std.std() > 0.05
    for layer in ("fc3", "fc4"):
        np.testing.assert_allclose(channel_stats(net, x, layer)[1], 1, atol=0.02)


def test_a_layer_with_few_values_per_channel_is_normalized_as_a_whole():
    """fc3/fc4 see one value per image: on 8 images their σ per channel is noise, so one σ per layer;
    the convolutions (8 images x positions) stay per channel."""
    net, x = small_convnet(), sample(n=8)
    WithinLayer(init="gaussian", beta=BETA, normalize="channel")(net, SampleRunner(net, x, 4))
    for layer in ("conv1", "conv2"):
        np.testing.assert_allclose(channel_stats(net, x, layer, batch=4)[1], 1, atol=0.02)
    for layer in ("fc3", "fc4"):
        mean, std = channel_stats(net, x, layer, batch=4)
        np.testing.assert_allclose(mean, BETA, atol=0.02)
        assert np.mean(std ** 2) == pytest.approx(1, abs=0.03) and std.std() > 0.05


@pytest.mark.parametrize("init", ["gaussian", "kmeans"])
def test_a_layer_without_bias_has_rows_turned_to_a_non_negative_mean_output(init):
    """No bias to center with: a row whose mean output is negative is negated (its ReLU is not dead)."""
    pytest.importorskip("torch")
    from magic_init.engine import Net
    from magic_init.io import parse_prototxt
    param = parse_prototxt("""
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 12 dim: 12 } } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 16 kernel_size: 3 bias_term: false } }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
            convolution_param { num_output: 16 kernel_size: 3 bias_term: false } }""")
    net, x = Net(param, seed=0), sample() + 3
    WithinLayer(init=init, beta=BETA, normalize="channel")(net, SampleRunner(net, x, 8))
    for layer in ("conv1", "conv2"):
        mean, std = channel_stats(net, x, layer)
        assert (mean >= -1e-4).all(), (layer, mean)
        np.testing.assert_allclose(std, 1, atol=0.02)


def test_each_layer_runs_once_per_batch():
    net, x = small_convnet(), sample()
    runs = []
    original = net._run
    net._run = lambda kind, name, xs, opt: runs.append(name) or original(kind, name, xs, opt)
    WithinLayer()(net, SampleRunner(net, x, 8))
    assert runs.count("conv1") == 5 and runs.count("relu2") == 5 and runs.count("fc4") == 5


def test_stopping_below_the_first_layer_stores_no_copy_of_the_sample():
    """k-means reads conv1's input patches with the runner stopped below conv1: that input is the
    stored sample itself, so nothing is copied (the cache stays empty) and the batches read are the sample's."""
    net, x = small_convnet(), sample()
    runner = SampleRunner(net, x, 8, memory_mb=0)
    runner.advance(net.layer_names.index("conv1") - 1)
    assert len(runner.cache) == 0 and runner.cache.spill_files.folder is None
    np.testing.assert_array_equal(np.concatenate([b["data"] for b in runner.live_batches()]), x)
    WithinLayer(init="kmeans")(net, runner)
    assert len(runner.cache) == len(runner)        # the passes store from the first computed layer on


def test_dead_channels_get_beta_without_nan(caplog):
    net, x = small_convnet(), np.full((16, 3, 12, 12), 3.0, np.float32)
    with caplog.at_level(logging.WARNING):
        reports = WithinLayer()(net, SampleRunner(net, x, 8))
    fc3 = [r for r in reports if r["layer"] == "fc3"][0]      # every image identical: fc3 is constant
    assert fc3["dead_channels"] == 10 and "dead channel" in caplog.text
    for blobs in net.params.values():
        assert all(np.all(np.isfinite(b.data)) for b in blobs)
    mean, std = channel_stats(net, x, "fc3")
    np.testing.assert_allclose(mean, BETA, atol=1e-4)


def test_normalize_rows_handles_zero_std():
    scale, bias, dead = normalize_rows(np.array([1.0, 2.0]), np.array([2.0, 0.0]), 0.1)
    np.testing.assert_allclose(scale, [0.5, 1.0])
    np.testing.assert_allclose(bias, [0.1 - 0.5, 0.1 - 2.0])
    assert dead.tolist() == [False, True]


def test_too_few_samples_fall_back_to_gaussian():
    net, x = small_convnet(), sample(n=8)           # 8 images < 10 outputs of fc3
    reports = WithinLayer(init="kmeans", data_driven_fc=True)(net, SampleRunner(net, x, 8))
    fc3 = [r for r in reports if r["layer"] == "fc3"][0]
    assert fc3["init"] == "gaussian" and "too few" in fc3["reason"]
    assert reports[0]["init"] == "kmeans"


@pytest.mark.parametrize("init", ["pca", "kmeans"])
def test_data_driven_inits_apply_to_convolutions_unless_data_driven_fc(init):
    """Paper §3.3: data-driven inits on the convolutional layers; fully connected ones get gaussian
    rows by default, and the data-driven init with data_driven_fc (40 images >= 10 outputs)."""
    net, x = small_convnet(), sample()
    default = {r["layer"]: r for r in WithinLayer(init=init)(net, SampleRunner(net, x, 8))}
    assert [default[n]["init"] for n in ("conv1", "conv2", "fc3", "fc4")] == [init, init, "gaussian", "gaussian"]
    assert "fully connected" in default["fc3"]["reason"]
    net = small_convnet()
    every = {r["layer"]: r for r in WithinLayer(init=init, data_driven_fc=True)(net, SampleRunner(net, x, 8))}
    assert [every[n]["init"] for n in ("conv1", "conv2", "fc3", "fc4")] == [init] * 4


def test_only_the_named_layers_are_initialized_even_all_zero_ones():
    """``layers`` is the list to initialize; a layer outside it keeps its weights, even all-zero ones
    (e.g. a zero-initialized last residual layer of a loaded model)."""
    net, x = small_convnet(), sample()
    net.params["conv1"][0].data[...] = 0.5
    net.params["fc3"][0].data[...] = 0
    reports = WithinLayer(layers=["conv2", "fc4"])(net, SampleRunner(net, x, 8))
    assert [r["action"] for r in reports] == ["kept", "initialized", "kept", "initialized"]
    assert np.all(net.params["conv1"][0].data == 0.5) and not np.any(net.params["fc3"][0].data)
    reports = WithinLayer()(net, SampleRunner(net, x, 8))
    assert all(r["action"] == "initialized" for r in reports)
    with pytest.raises(NetDefinitionError, match="'relu1'"):
        WithinLayer(layers=["relu1"])(net, SampleRunner(net, x, 8))


def test_fixed_seed_gives_identical_weights():
    results = []
    for _ in range(2):
        net = small_convnet()
        initialize(net, sample(), init="kmeans", batch_size=8, seed=7)
        results.append([b.data.copy() for blobs in net.params.values() for b in blobs])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("init", ["gaussian", "kmeans"])     # input checked while forwarding / from the cache
@pytest.mark.parametrize("where", ["conv1", "sample"])
def test_a_nonfinite_input_raises_naming_the_layer(where, init):
    """A NaN in a kept (loaded) layer below, or an Inf in the sample, would make μ, σ and so the weights NaN."""
    net, x = small_convnet(), sample()
    layers = ["conv2", "fc3", "fc4"] if where == "conv1" else None
    if where == "conv1":
        net.params["conv1"][0].data[...] = 0.1
        net.params["conv1"][0].data[2, 1, 1, 1] = np.nan
    else:
        x[5, 0, 2, 2] = -np.inf
    first = "conv2" if where == "conv1" else "conv1"
    with pytest.raises(MagicInitError, match="layer '%s': its input .* is not finite" % first):
        WithinLayer(init=init, layers=layers)(net, SampleRunner(net, x, 8))


@pytest.mark.parametrize("init", ["gaussian", "kmeans"])
def test_the_batch_size_does_not_change_the_weights(init):
    """Patch locations are drawn per image index, not per batch: batch size is a memory knob."""
    results = []
    for batch in (3, 8, 40):
        net = small_convnet()
        WithinLayer(init=init, seed=7)(net, SampleRunner(net, sample(), batch))
        results.append([b.data.copy() for blobs in net.params.values() for b in blobs])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("prototxt, unit", [
    ("fashion_small_deploy.prototxt", "channel"),       # 2 convolutions
    ("fashion_caffenet_deploy.prototxt", "conv-layer"),  # 5
    ("fashion_vgg_deploy.prototxt", "conv-layer"),       # 8
])
def test_auto_normalizes_deep_convolution_stacks_per_layer_and_shallow_ones_per_channel(prototxt, unit):
    pytest.importorskip("torch")
    from pathlib import Path

    from magic_init.algorithm.within_layer import auto_unit
    from magic_init.engine import Net
    from magic_init.io import read_prototxt

    net = Net(read_prototxt(str(Path(__file__).resolve().parents[2] / "models" / prototxt)), input_shapes=None)
    assert auto_unit(net) == auto_unit(net, "gaussian") == unit
    for init in ("pca", "zca", "kmeans", "rand"):      # whitened rows: every channel on its own
        assert auto_unit(net, init) == "channel"


def test_auto_is_the_default_and_on_a_shallow_net_gives_every_channel_unit_std():
    net, x = small_convnet(), sample()            # two convolutions: per channel
    WithinLayer(init="gaussian", beta=BETA)(net, SampleRunner(net, x, 8))
    _, std = channel_stats(net, x, "conv2")
    np.testing.assert_allclose(std, 1.0, atol=0.02)
