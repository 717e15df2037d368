"""Per-channel factors for exact rescaling (algorithm/channel_factors.py, scale_graph.ChannelGraph).

References are properties: F's gradient against finite differences, the predicted change rates
against a re-measurement with the same random draws, the net's output before and after, and the
per-layer floor of a residual net (what one factor per layer reaches) against what channel factors
reach.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from batched import forward_batches  # noqa: E402

from magic_init.algorithm import rescale  # noqa: E402
from magic_init.algorithm.channel_factors import ChannelFactors  # noqa: E402
from magic_init.algorithm.rates import RateMeter  # noqa: E402
from magic_init.algorithm.runner import SampleRunner  # noqa: E402
from magic_init.algorithm.scale_graph import ChannelGraph  # noqa: E402
from magic_init.engine import Net  # noqa: E402
from magic_init.io import parse_prototxt  # noqa: E402


HEAD = """
name: "bottleneck"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv0" type: "Convolution" bottom: "data" top: "t0"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "relu0" type: "ReLU" bottom: "t0" top: "t0" }
layer { name: "proj" type: "Convolution" bottom: "t0" top: "p0" convolution_param { num_output: 8 kernel_size: 1 } }
"""
#: ResNet's bottleneck: 1x1 -> 3x3 -> 1x1, added to the trunk (the first block to the projection ``proj``).
BLOCK = """
layer { name: "b%(i)d_a" type: "Convolution" bottom: "%(src)s" top: "b%(i)d_a"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "b%(i)d_relu_a" type: "ReLU" bottom: "b%(i)d_a" top: "b%(i)d_a" }
layer { name: "b%(i)d_b" type: "Convolution" bottom: "b%(i)d_a" top: "b%(i)d_b"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "b%(i)d_relu_b" type: "ReLU" bottom: "b%(i)d_b" top: "b%(i)d_b" }
layer { name: "b%(i)d_c" type: "Convolution" bottom: "b%(i)d_b" top: "b%(i)d_c"
        convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "b%(i)d_sum" type: "Eltwise" bottom: "%(short)s" bottom: "b%(i)d_c" top: "t%(i)d" }
layer { name: "b%(i)d_relu" type: "ReLU" bottom: "t%(i)d" top: "t%(i)d" }
"""
TAIL = """
layer { name: "pool" type: "Pooling" bottom: "t%d" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
"""


def bottleneck_net(blocks=3, seed=0):
    """He-scaled random weights, each conv output channel (row and bias) then scaled by 10^U(-0.5, 0.5),
    as folding a BatchNorm with uneven statistics does: the blocks' rates then differ."""
    blocks_text = "".join(BLOCK % {"i": i, "src": "t%d" % (i - 1), "short": "p0" if i == 1 else "t%d" % (i - 1)}
                          for i in range(1, blocks + 1))
    param = parse_prototxt(HEAD + blocks_text + TAIL % blocks)
    param.force_backward = True
    net = Net(param, seed=seed)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        w, b = blobs[0].data, blobs[1].data
        w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / np.prod(w.shape[1:]))
        b[...] = rng.normal(0, 0.1, b.shape)
        if w.ndim == 4:
            factor = 10.0 ** rng.uniform(-0.5, 0.5, w.shape[0])
            w[...] *= factor[:, None, None, None].astype(np.float32)
            b[...] *= factor.astype(np.float32)
    return net


def sample(n=32, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, 10, 10)).astype(np.float32)


def measured(net, x, seed=5):
    graph = ChannelGraph(net, net.description.last_compute_layer(), exact=True)
    rows = [name for name, units in zip(graph.names, graph.units) if len(units) > 1]
    rates = RateMeter(net, seed=seed, definition="gradient", rows=rows).measure(SampleRunner(net, x, 8))
    return graph, [rates[name] for name in graph.names]


def test_graph_ties_residual_channels_one_by_one():
    net = bottleneck_net(blocks=2)
    graph = ChannelGraph(net, net.description.last_compute_layer(), exact=True)
    units = dict(zip(graph.names, graph.units))
    assert [len(units[n]) for n in ("conv0", "proj", "b1_a", "b1_c", "fc")] == [6, 8, 4, 8, 1]
    for c in range(8):        # the Eltwise ties channel c of the trunk and of each block's last layer
        assert graph.group(units["proj"][c]) == graph.group(units["b1_c"][c]) == graph.group(units["b2_c"][c])
    assert graph.group(units["proj"][0]) != graph.group(units["proj"][1])
    assert len({graph.group(u) for u in units["b1_a"]}) == 4
    assert graph.held_reasons() == {}


def test_objective_gradient_matches_finite_differences():
    net = bottleneck_net()
    graph, layers = measured(net, sample())
    factors = ChannelFactors(net, graph, layers)
    rng = np.random.default_rng(0)
    x, direction = rng.normal(0, 0.3, factors.size), rng.standard_normal(factors.size)
    _, grad = factors.objective(x)
    eps = 1e-5
    numeric = (factors.objective(x + eps * direction)[0] - factors.objective(x - eps * direction)[0]) / (2 * eps)
    assert numeric == pytest.approx(float(grad @ direction), rel=1e-5)


def test_predicted_rates_are_what_a_new_measurement_finds_and_the_output_is_unchanged():
    net, x = bottleneck_net(), sample()
    before = forward_batches(net, x, "fc", 8)
    graph, layers = measured(net, x)
    factors = ChannelFactors(net, graph, layers)
    solution, iterations = factors.solve(tol=np.log(1.01))
    predicted = np.exp(factors.log_rates(solution))
    factors.apply(solution)
    _, again = measured(net, x)                  # same seed: the same η draws
    np.testing.assert_allclose([r.rate() for r in again], predicted, rtol=1e-4)
    assert predicted.max() / predicted.min() < 1.02 and iterations > 0
    np.testing.assert_allclose(forward_batches(net, x, "fc", 8), before, rtol=1e-4, atol=1e-5 * np.abs(before).max())


def test_channel_factors_go_below_the_per_layer_floor_of_a_residual_net():
    """One factor per layer cannot move Σ log C̃ of a block whose output is added to the trunk;
    channel factors can, and reach equal rates, with the output unchanged (a factor 1)."""
    x = sample()
    spreads = {}
    for factors in ("layer", "channel"):
        net = bottleneck_net()
        before = forward_batches(net, x, "fc", 8)
        report = rescale(net, x, batch_size=8, verify=True, max_iter=30, factors=factors)["BetweenLayer"]
        after = forward_batches(net, x, "fc", 8)
        np.testing.assert_allclose(after, before * report["output_scale"], rtol=1e-3, atol=1e-4 * np.abs(after).max())
        spreads[factors] = (report["spread_before"], report["spread_measured"])
    print("\nbottleneck net, uneven channels: spread per layer %.3g -> %.3g, per channel %.3g -> %.3g"
          % (spreads["layer"] + spreads["channel"]))
    assert spreads["layer"][1] > 1.3
    assert spreads["channel"][1] < 1.02
