"""Algorithm 2 (magic_init.algorithm.between_layer) on the numpy fake net."""
from __future__ import annotations

import numpy as np
import pytest

from batched import forward_batches
from fakenet import FakeNet, small_convnet
from magic_init.algorithm import rescale
from magic_init.algorithm.between_layer import BetweenLayer, spread
from magic_init.algorithm.rates import RateMeter
from magic_init.algorithm.runner import SampleRunner
from magic_init.algorithm.scale_graph import ScaleGraph


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
    report = rescale(net, x, batch_size=8)["BetweenLayer"]
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
    """Structure only (ScaleGraph never runs a layer): (name, type, bottoms, tops) and blob shapes."""
    from types import SimpleNamespace
    blobs = {name: SimpleNamespace(data=np.zeros(shape)) for name, shape in shapes.items()}
    return SimpleNamespace(layer_names=[l[0] for l in layers], layer_types=[l[1] for l in layers],
                           bottom_names={l[0]: l[2] for l in layers}, top_names={l[0]: l[3] for l in layers},
                           blobs=blobs, inputs=["data"],
                           params={l[0]: [] for l in layers if l[1] in ("Convolution", "InnerProduct")})


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
    assert warned[:2] == ["between-layer: layer '%s' held fixed: no gradient reaches it (lr_mult 0 without "
                          "force_backward?)" % name for name in ("conv1", "conv2")]
