"""Algorithm 2's least-squares step where layers are tied (residual nets rescaled exactly).

In exact rescaling a residual block's last layer must keep the trunk's factor (Eltwise SUM ties
it), so only the block's inner layers move freely. Updating each group alone towards the mean
rate then moves the last layer's rate the wrong way (on a random ResNet-50 it took the spread
from 11.6x to 27.5x); the least-squares step over all groups does not.
"""
from __future__ import annotations

import numpy as np
import pytest

from magic_init.algorithm.between_layer import _least_squares_step

pytest.importorskip("torch")

from batched import forward_batches  # noqa: E402
from magic_init.algorithm import rescale  # noqa: E402
from magic_init.engine import Net  # noqa: E402
from magic_init.io import parse_prototxt  # noqa: E402


def test_on_a_chain_the_step_is_the_papers_update_and_keeps_the_output_scale():
    """Chain: C̃_k ∝ Δ_k-1²/Δ_k² (Δ_out common), so log s_k = d_k/2 equalizes and Π s_k = 1."""
    k = 5
    model = -2 * np.eye(k) + 2 * np.eye(k, k=-1)
    rng = np.random.default_rng(0)
    d = rng.standard_normal(k)
    d -= d.mean()
    out = np.zeros(k)
    out[-1] = 1.0
    step = _least_squares_step(model - model.mean(axis=0), -d, out)
    steps = np.diff(np.concatenate([[0.0], step]))     # log s_k = u_k − u_{k-1}
    np.testing.assert_allclose(steps, d / 2, atol=1e-12)
    assert abs(steps.sum()) < 1e-12


def test_a_step_the_constraint_cannot_keep_still_equalizes():
    """Two groups whose every equalizing move changes the geometric mean: the step is still taken."""
    model = np.array([[-1.333, 0.667], [-1.333, 0.667], [2.667, -1.333]])
    d = np.array([-0.579, -0.579, 1.158])
    step = _least_squares_step(model - model.mean(axis=0), -d, np.array([-0.667, 0.333]))
    residual = (model - model.mean(axis=0)) @ step + d
    assert np.abs(residual).max() < 1e-6 < np.abs(step).max()


RESIDUAL = """
name: "residual"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv0" type: "Convolution" bottom: "data" top: "t0"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu0" type: "ReLU" bottom: "t0" top: "t0" }
%s
layer { name: "pool" type: "Pooling" bottom: "t%d" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
"""
BLOCK = """
layer { name: "b%(i)d_a" type: "Convolution" bottom: "t%(p)d" top: "b%(i)d_a"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "b%(i)d_relu_a" type: "ReLU" bottom: "b%(i)d_a" top: "b%(i)d_a" }
layer { name: "b%(i)d_b" type: "Convolution" bottom: "b%(i)d_a" top: "b%(i)d_b"
        convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "b%(i)d_sum" type: "Eltwise" bottom: "t%(p)d" bottom: "b%(i)d_b" top: "t%(i)d" }
layer { name: "b%(i)d_relu" type: "ReLU" bottom: "t%(i)d" top: "t%(i)d" }
"""


def residual_net(blocks=4, seed=0):
    text = RESIDUAL % ("".join(BLOCK % {"i": i, "p": i - 1} for i in range(1, blocks + 1)), blocks)
    param = parse_prototxt(text)
    param.force_backward = True
    net = Net(param, seed=seed)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        w = blobs[0].data
        w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / np.prod(w.shape[1:])) * 10.0 ** rng.uniform(-1, 1)
        blobs[1].data[...] = rng.normal(0, 0.1, blobs[1].data.shape)
    return net


def test_exact_rescaling_of_a_residual_net_lowers_the_spread_and_keeps_the_function():
    net = residual_net()
    x = np.random.default_rng(1).standard_normal((32, 3, 10, 10)).astype(np.float32)
    before = forward_batches(net, x, "fc", 8)
    report = rescale(net, x, batch_size=8, verify=True, max_iter=30, rounds=2)["BetweenLayer"]
    assert report["scale"]["b1_b"] == report["scale"]["b2_b"] == report["scale"]["b4_b"]  # tied to the trunk
    assert report["spread_measured"] < report["spread_before"] / 4
    assert report["spread_measured"] == pytest.approx(report["spread_predicted"], rel=1e-3)
    after = forward_batches(net, x, "fc", 8)
    np.testing.assert_allclose(after, before * report["output_scale"], rtol=1e-3, atol=1e-4 * np.abs(after).max())


def test_initializing_keeps_the_output_scale_even_where_the_rates_stay_apart():
    """The hard step (initializing) keeps constraint·x = 0: where every equalizing move changes the
    output's scale it takes none; where some part of the move keeps it, it takes that part."""
    model = np.array([[-4, 2], [-4, 2], [8, -4]]) / 3.0
    d = np.array([-0.579, -0.579, 1.158])
    constraint = np.array([-2, 1]) / 3.0
    step = _least_squares_step(model - model.mean(axis=0), -d, constraint, hard=True)
    np.testing.assert_allclose(step, 0.0, atol=1e-9)
    three = np.array([[-2, 0, 0], [2, -2, 0], [0, 2, -2], [1, 1, 0]], dtype=float)      # 4 layers, 3 groups
    d = np.array([0.5, -0.2, 0.4, -0.7])
    out = np.array([0.0, 0.0, 1.0])
    step = _least_squares_step(three - three.mean(axis=0), -d, out, hard=True)
    assert abs(out @ step) < 1e-12
    free = np.eye(3)[:, :2]                                          # by hand: x_3 = 0
    best = free @ np.linalg.lstsq((three - three.mean(axis=0)) @ free, -d, rcond=None)[0]
    np.testing.assert_allclose(step, best, atol=1e-12)


def test_on_a_chain_the_hard_step_is_the_papers_update():
    k = 5
    model = -2 * np.eye(k) + 2 * np.eye(k, k=-1)
    d = np.random.default_rng(1).standard_normal(k)
    d -= d.mean()
    out = np.zeros(k)
    out[-1] = 1.0
    soft = _least_squares_step(model - model.mean(axis=0), -d, out)
    np.testing.assert_allclose(_least_squares_step(model - model.mean(axis=0), -d, out, hard=True), soft, atol=1e-12)
