"""Algorithm 2 (magic_init.algorithm.between_layer) on the numpy fake net."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from batched import forward_batches
from fakenet import FakeNet, small_convnet
from magic_init.adapters.caffe import describe
from magic_init.algorithm import rescale
from magic_init.algorithm.between_layer import BetweenLayer, spread
from magic_init.algorithm.rates import RateMeter
from magic_init.algorithm.runner import SampleRunner
from magic_init.algorithm.scale_graph import NO_GRADIENT, ZERO_INPUT, ZERO_WEIGHTS, ScaleGraph
from magic_init.errors import MagicInitError


def sample(n=40, seed=1, shape=(3, 12, 12)):
    return (np.random.default_rng(seed).standard_normal((n,) + shape) * 5 + 2).astype(np.float32)


def gaussian_net(net, std=0.01, seed=0, boost=None):
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        blobs[0].data[...] = rng.standard_normal(blobs[0].data.shape) * std * (boost or {}).get(name, 1)
        blobs[1].data[...] = 0.01
    return net


def measured_rates(net, x, seed=3, definition="gradient"):
    meter = RateMeter(net, seed=seed, definition=definition)
    return {k: v.rate() for k, v in meter.measure(SampleRunner(net, x, 8)).items()}


def test_rates_within_2x_after_rescaling_a_gaussian_init():
    net, x = gaussian_net(small_convnet(), boost={"conv1": 30.0, "fc3": 0.1}), sample()
    before = measured_rates(net, x)
    assert spread(before) > 100
    report = rescale(net, x, batch_size=8, factors="layer")["BetweenLayer"]
    assert spread(measured_rates(net, x)) < 2 and report["iterations"] == 20


def test_homogeneous_net_keeps_its_function_up_to_a_positive_factor():
    net, x = gaussian_net(small_convnet(), boost={"conv1": 30.0}), sample()
    before = forward_batches(net, x, "fc4", 8)
    report = rescale(net, x, batch_size=8, max_iter=30)["BetweenLayer"]
    ratio = forward_batches(net, x, "fc4", 8) / before
    np.testing.assert_allclose(ratio, report["output_scale"], rtol=1e-3)
    assert report["output_scale"] > 0
    assert max(report["scale"].values()) / min(report["scale"].values()) > 2      # it did rescale


@pytest.mark.parametrize("definition", ["gradient", "eq4"])
def test_analytic_update_matches_remeasurement(definition):
    net, x = gaussian_net(small_convnet(), boost={"conv2": 20.0}), sample()
    report = BetweenLayer(max_iter=5, seed=3, rounds=1, rate=definition)(net, SampleRunner(net, x, 8))
    remeasured = measured_rates(net, x, seed=3, definition=definition)
    for layer, predicted in report["rate_after"].items():
        np.testing.assert_allclose(remeasured[layer], predicted, rtol=1e-3)


def test_converged_net_stops_early():
    net, x = gaussian_net(small_convnet()), sample()
    rescale(net, x, batch_size=8, max_iter=60, tol=1e-3, rounds=1)     # same η draw in both calls
    report = rescale(net, x, batch_size=8, tol=np.log(1.01), rounds=1)["BetweenLayer"]
    assert report["iterations"] == 0


def sigmoid_net():
    layers = [("data", "Input", [], ["data"], {}),
              ("fc1", "InnerProduct", ["data"], ["fc1"], {"weight": (6, 5)}),
              ("sig", "Sigmoid", ["fc1"], ["fc1"], {}),
              ("fc2", "InnerProduct", ["fc1"], ["fc2"], {"weight": (6, 6)}),
              ("relu", "ReLU", ["fc2"], ["fc2"], {}),
              ("fc3", "InnerProduct", ["fc2"], ["fc3"], {"weight": (3, 6)})]
    return FakeNet(layers, (8, 5))


def test_layer_below_a_sigmoid_is_pinned_and_function_kept():
    net, x = gaussian_net(sigmoid_net(), std=0.3), sample(shape=(5,))
    before = forward_batches(net, x, "fc3", 8)
    report = rescale(net, x, batch_size=8)["BetweenLayer"]
    assert report["pinned"] == ["fc1"] and report["scale"]["fc1"] == 1.0
    np.testing.assert_allclose(forward_batches(net, x, "fc3", 8) / before, report["output_scale"], rtol=1e-3)


def residual_net():
    layers = [("data", "Input", [], ["data"], {}),
              ("fc1", "InnerProduct", ["data"], ["fc1"], {"weight": (6, 5)}),
              ("fc2", "InnerProduct", ["fc1"], ["fc2"], {"weight": (6, 6)}),
              ("relu", "ReLU", ["fc2"], ["fc2"], {}),
              ("fc3", "InnerProduct", ["fc2"], ["fc3"], {"weight": (6, 6)}),
              ("sum", "Eltwise", ["fc1", "fc3"], ["sum"], {}),
              ("fc4", "InnerProduct", ["sum"], ["fc4"], {"weight": (2, 6)})]
    return FakeNet(layers, (8, 5))


def test_eltwise_ties_the_summed_layers_and_keeps_the_function():
    net, x = gaussian_net(residual_net(), std=0.3, boost={"fc2": 50.0}), sample(shape=(5,))
    graph = ScaleGraph(net, len(net.layer_names) - 1)
    assert graph.group(0) == graph.group(2) != graph.group(1)
    before = forward_batches(net, x, "fc4", 8)
    report = rescale(net, x, batch_size=8)["BetweenLayer"]
    assert report["scale"]["fc1"] == report["scale"]["fc3"]
    np.testing.assert_allclose(forward_batches(net, x, "fc4", 8) / before, report["output_scale"], rtol=1e-3)


def test_columns_of_an_inner_product_follow_the_flattened_channels():
    net = small_convnet()
    graph = ScaleGraph(net, len(net.layer_names) - 2)
    assert graph.columns["fc3"].tolist() == [1] * 48 and graph.columns["conv1"].tolist() == [-1] * 3


def stub_net(layers, shapes):
    """Structure only (ScaleGraph never runs a layer): (name, type, bottoms, tops) and blob shapes;
    1x1 convolutions and fully connected layers get weights of the shapes those imply, and the net
    its description from the Caffe adapter."""
    from types import SimpleNamespace
    blobs = {name: SimpleNamespace(data=np.zeros(shape), shape=tuple(shape)) for name, shape in shapes.items()}

    def weight(bottom, top, kind):
        columns = (shapes[bottom][1], 1, 1) if kind == "Convolution" else (int(np.prod(shapes[bottom][1:])),)
        return [SimpleNamespace(data=np.zeros((shapes[top][1],) + columns, np.float32))]

    net = SimpleNamespace(layer_names=[l[0] for l in layers], layer_types=[l[1] for l in layers],
                          bottom_names={l[0]: l[2] for l in layers}, top_names={l[0]: l[3] for l in layers},
                          blobs=blobs, inputs=["data"],
                          params={l[0]: weight(l[2][0], l[3][0], l[1]) for l in layers
                                  if l[1] in ("Convolution", "InnerProduct")})
    net.description = describe(net)
    return net


def test_concat_columns_keep_their_producers_and_tanh_pins():
    net = stub_net([("data", "Input", [], ["data"]),
                    ("a", "Convolution", ["data"], ["a"]),
                    ("b", "Convolution", ["data"], ["b"]),
                    ("cat", "Concat", ["a", "b"], ["cat"]),
                    ("relu", "ReLU", ["cat"], ["cat"]),
                    ("c", "Convolution", ["cat"], ["c"]),
                    ("t", "TanH", ["c"], ["t"]),
                    ("d", "InnerProduct", ["t"], ["d"])],
                   {"data": (2, 3, 4, 4), "a": (2, 2, 4, 4), "b": (2, 3, 4, 4), "cat": (2, 5, 4, 4),
                    "c": (2, 4, 4, 4), "t": (2, 4, 4, 4), "d": (2, 6)})
    graph = ScaleGraph(net, 7)
    assert graph.columns["c"].tolist() == [0, 0, 1, 1, 1]
    assert graph.columns["d"].tolist() == [-1] * 64
    assert [graph.pinned(k) for k in range(4)] == [False, False, True, False]


def test_a_crop_of_the_spatial_axes_passes_a_scale_and_one_of_the_channels_blocks_it():
    def crop_net(channels_out):
        return stub_net([("data", "Input", [], ["data"]),
                         ("a", "Convolution", ["data"], ["a"]),
                         ("crop", "Crop", ["a", "data"], ["crop"]),
                         ("b", "Convolution", ["crop"], ["b"])],
                        {"data": (2, 3, 4, 4), "a": (2, 4, 6, 6), "crop": (2, channels_out, 4, 4),
                         "b": (2, 5, 4, 4)})

    spatial, channels = ScaleGraph(crop_net(4), 3), ScaleGraph(crop_net(3), 3)
    assert spatial.columns["b"].tolist() == [0] * 4 and not spatial.pinned(0)
    assert channels.columns["b"].tolist() == [-1] * 3
    assert channels.held_reasons()["a"] == "scale cannot pass layer 'crop' (Crop, changes the number of channels)"


def two_head_net():
    return stub_net([("data", "Input", [], ["data"]),
                     ("a", "Convolution", ["data"], ["a"]),
                     ("relu", "ReLU", ["a"], ["a"]),
                     ("norm", "LRN", ["a"], ["norm"]),
                     ("b", "Convolution", ["norm"], ["b"]),
                     ("c", "Convolution", ["data"], ["c"])],
                    {"data": (2, 3, 4, 4), "a": (2, 2, 4, 4), "norm": (2, 2, 4, 4), "b": (2, 3, 4, 4),
                     "c": (2, 5, 4, 4)})


def test_exact_graph_makes_lrn_a_barrier_and_ties_the_outputs():
    approximate, exact = ScaleGraph(two_head_net(), 5), ScaleGraph(two_head_net(), 5, exact=True)
    assert approximate.held_reasons() == {} and approximate.columns["b"].tolist() == [0, 0]
    assert approximate.group(1) != approximate.group(2)          # each output keeps its own factor
    assert exact.held_reasons() == {"a": "scale cannot pass layer 'norm' (LRN, not homogeneous)"}
    assert exact.columns["b"].tolist() == [-1, -1]
    assert exact.group(1) == exact.group(2)                      # one factor on the whole output


def test_held_reasons_name_the_blocking_layer_or_the_tie():
    net = stub_net([("data", "Input", [], ["data"]),
                    ("a", "Convolution", ["data"], ["a"]),
                    ("b", "Convolution", ["data"], ["b"]),
                    ("t", "TanH", ["a"], ["t"]),
                    ("sum", "Eltwise", ["a", "b"], ["sum"]),
                    ("c", "Convolution", ["data"], ["c"]),
                    ("sum2", "Eltwise", ["c", "data"], ["sum2"]),
                    ("d", "Convolution", ["sum"], ["d"]),
                    ("odd", "Exotic", ["d"], ["odd"])],
                   {"data": (2, 3, 4, 4), "a": (2, 3, 4, 4), "b": (2, 3, 4, 4), "t": (2, 3, 4, 4),
                    "sum": (2, 3, 4, 4), "c": (2, 3, 4, 4), "sum2": (2, 3, 4, 4), "d": (2, 3, 4, 4),
                    "odd": (2, 3, 4, 4)})
    held = ScaleGraph(net, 8).held_reasons()
    assert held == {"a": "scale cannot pass layer 't' (TanH, not homogeneous)",
                    "b": "shares one factor with 'a', which is held: "
                         "scale cannot pass layer 't' (TanH, not homogeneous)",
                    "c": "layer 'sum2' (Eltwise) combines its channels with channels that carry no factor",
                    "d": "scale cannot pass layer 'odd' (Exotic, not known to be homogeneous)"}


def test_layers_no_gradient_reaches_are_held_with_that_reason(caplog):
    net, x = gaussian_net(small_convnet()), sample()
    net.params["conv2"][1].data[...] = -1e6            # relu2 is 0 everywhere: nothing flows back to conv1/conv2
    with caplog.at_level("INFO", logger="magic_init"):
        report = rescale(net, x, batch_size=8)["BetweenLayer"]
    assert report["held"]["conv1"] == report["held"]["conv2"] == "no gradient reaches it"
    assert report["held"]["fc3"] == "its weight gradient is zero (so is its input)"      # reads relu2's zeros
    assert report["pinned"] == list(report["held"]) and report["scale"]["conv1"] == 1.0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "held fixed" in r.getMessage()]
    assert warned[:2] == ["between-layer: layer '%s' held fixed: no gradient reaches it (the layers above it "
                          "pass no gradient back on the sample, e.g. a ReLU that is zero on every image)" % name
                          for name in ("conv1", "conv2")]


def test_a_layer_held_behind_an_all_zero_layer_names_it(caplog):
    """The hint names the all-zero affine layer that blocks the signal, not a guess about lr_mult."""
    net, x = gaussian_net(small_convnet()), sample()
    net.params["fc3"][0].data[...] = 0
    with caplog.at_level("INFO", logger="magic_init"):
        rescale(net, x, batch_size=8)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "held fixed" in r.getMessage()]
    assert warned and all("all-zero weights block the signal: fc3" in m for m in warned), warned


def test_an_all_zero_layer_is_held_and_every_factor_stays_finite():
    """A kept all-zero layer (e.g. a zero-initialized last residual layer) has no rate (‖W‖ = 0): it is
    held, the layers below it (no gradient passes W = 0) too, and nothing overflows or becomes NaN."""
    net, x = gaussian_net(small_convnet(), boost={"conv1": 30.0}), sample()
    net.params["fc3"][0].data[...] = 0
    bias = net.params["fc3"][1].data.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        report = rescale(net, x, batch_size=8)["BetweenLayer"]
    assert report["held"] == {"conv1": NO_GRADIENT, "conv2": NO_GRADIENT, "fc3": ZERO_WEIGHTS}
    assert report["rate_before"]["fc3"] is None and report["scale"]["fc3"] == 1.0
    assert not np.any(net.params["fc3"][0].data) and np.array_equal(net.params["fc3"][1].data, bias)
    assert all(np.all(np.isfinite(b.data)) for blobs in net.params.values() for b in blobs)


def test_a_zero_layer_without_bias_holds_the_layers_above_for_zero_input(caplog):
    """conv2 = 0 (weights and bias): fc3 reads zeros (held: zero input), conv1 gets no gradient;
    both hints name conv2, the layer that blocks the signal."""
    net, x = gaussian_net(small_convnet()), sample()
    for blob in net.params["conv2"]:
        blob.data[...] = 0
    with caplog.at_level("INFO", logger="magic_init"):
        report = rescale(net, x, batch_size=8)["BetweenLayer"]
    assert report["held"] == {"conv1": NO_GRADIENT, "conv2": ZERO_WEIGHTS, "fc3": ZERO_INPUT}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and all("all-zero weights block the signal: conv2" in m for m in warned), warned
    assert all(np.all(np.isfinite(b.data)) for blobs in net.params.values() for b in blobs)


@pytest.mark.parametrize("where, message", [("conv2", "layer 'conv2' blob 0 contains NaN"),
                                            ("sample", "the input of layer 'conv1' is not finite")])
def test_nonfinite_weights_or_sample_raise_naming_the_layer(where, message):
    net, x = gaussian_net(small_convnet()), sample()
    if where == "sample":
        x[3, 1, 4, 4] = np.inf
    else:
        net.params[where][0].data[0, 0, 0, 0] = np.nan
    with pytest.raises(MagicInitError, match=message):
        rescale(net, x, batch_size=8)


@pytest.mark.parametrize("bad", [0.0, np.inf, np.nan, 1e300])
def test_apply_refuses_a_factor_that_is_not_a_finite_positive_float32(bad):
    net, x = gaussian_net(small_convnet()), sample()
    graph = ScaleGraph(net, len(net.layer_names) - 2)
    layers = BetweenLayer.measure(RateMeter(net, definition="gradient"), graph, SampleRunner(net, x, 8))
    before = [b.data.copy() for blobs in net.params.values() for b in blobs]
    with pytest.raises(MagicInitError, match="refusing to scale layer 'conv2'"):
        BetweenLayer.apply(net, graph, layers, np.array([1.0, bad, 1.0, 1.0]))
    assert all(np.array_equal(a, b.data) for a, b in zip(before, (b for bl in net.params.values() for b in bl)))


@pytest.mark.parametrize("definition", ["gradient", "eq4"])
def test_the_batch_size_does_not_change_the_rates_or_the_weights(definition):
    """η is drawn per image (seeded by its index) and weight gradients are summed over fixed blocks of
    images, so batches of 3, 8 or the whole sample measure the same rates and give the same weights."""
    rates, weights = [], []
    for batch in (3, 8, 40):
        net, x = gaussian_net(small_convnet(), boost={"conv1": 30.0}), sample()
        meter = RateMeter(net, seed=3, definition=definition)
        rates.append({k: v.rate() for k, v in meter.measure(SampleRunner(net, x, batch)).items()})
        BetweenLayer(rate=definition, seed=3)(net, SampleRunner(net, x, batch))
        weights.append([b.data.copy() for blobs in net.params.values() for b in blobs])
    for other in rates[1:]:
        for layer, rate in rates[0].items():
            assert other[layer] == pytest.approx(rate, rel=1e-5)
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
