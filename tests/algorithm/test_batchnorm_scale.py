"""Algorithm 2 on BatchNorm/Scale nets: the Scale layers' γ and β are what it rescales.

TEST-phase BatchNorm, y = (x − μ)/σ with stored statistics, is not homogeneous, so no factor passes it
and the conv before it is held. A Scale with one bottom and a learned per-channel γ,
y_c = γ_c·x_c + β_c, is affine with a diagonal weight: γ, β ← Δ·γ, Δ·β multiplies its output by Δ,
which passes ReLU, pooling and Eltwise SUM (tied) to the next conv's columns, where it is undone.
So a --load model rescaled by Algorithm 2 alone computes z_N' = c·z_N, one c > 0.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from batched import forward_batches  # noqa: E402
from magic_init.algorithm import rescale  # noqa: E402
from magic_init.algorithm.rates import RateMeter  # noqa: E402
from magic_init.algorithm.runner import SampleRunner  # noqa: E402
from magic_init.algorithm.scale_graph import ScaleGraph  # noqa: E402
from magic_init.engine import Net  # noqa: E402
from magic_init.io import parse_prototxt  # noqa: E402

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 10 dim: 10 } } }\n'


def conv_bn_scale(name, bottom, top, channels, kernel=3, relu=True, in_place=True):
    """conv -> BatchNorm -> Scale (-> ReLU) with output blob ``top``; ``in_place``: all but the conv in
    place on ``top`` (as in ResNet), else each on its own blob."""
    blobs = (top,) * 3 if in_place else (top + "_conv", top + "_bn", top)
    text = ('layer { name: "%(n)s" type: "Convolution" bottom: "%(b)s" top: "%(t0)s" '
            'convolution_param { num_output: %(c)d kernel_size: %(k)d pad: %(p)d } }\n'
            'layer { name: "bn_%(n)s" type: "BatchNorm" bottom: "%(t0)s" top: "%(t1)s" }\n'
            'layer { name: "scale_%(n)s" type: "Scale" bottom: "%(t1)s" top: "%(t2)s" '
            'scale_param { bias_term: true } }\n'
            % {"n": name, "b": bottom, "t0": blobs[0], "t1": blobs[1], "t2": blobs[2], "c": channels, "k": kernel,
               "p": kernel // 2})
    if relu:
        text += 'layer { name: "relu_%s" type: "ReLU" bottom: "%s" top: "%s" }\n' % (name, top, top)
    return text


def chain_text(in_place=True):
    return (INPUT + conv_bn_scale("conv1", "data", "c1", 8, in_place=in_place)
            + conv_bn_scale("conv2", "c1", "c2", 6, in_place=in_place)
            + 'layer { name: "fc" type: "InnerProduct" bottom: "c2" top: "fc" '
            'inner_product_param { num_output: 5 } }\n')


CHAIN = chain_text()


def residual_text(blocks=2):
    """conv0 and ``blocks`` bottleneck-like blocks; block 1 has a projection shortcut (conv-BN-Scale on
    both branches: its Eltwise SUM ties scale_b1_short and scale_b1_b), the later ones an identity
    shortcut (tied to the trunk too)."""
    text = INPUT + conv_bn_scale("conv0", "data", "t0", 8)
    for i in range(1, blocks + 1):
        shortcut = "t%d" % (i - 1)
        if i == 1:
            text += conv_bn_scale("b1_short", shortcut, "b1_short", 8, kernel=1, relu=False)
            shortcut = "b1_short"
        text += conv_bn_scale("b%d_a" % i, "t%d" % (i - 1), "b%d_a" % i, 6)
        text += conv_bn_scale("b%d_b" % i, "b%d_a" % i, "b%d_b" % i, 8, kernel=1, relu=False)
        text += ('layer { name: "b%(i)d_sum" type: "Eltwise" bottom: "%(s)s" bottom: "b%(i)d_b" top: "t%(i)d" }\n'
                 'layer { name: "b%(i)d_relu" type: "ReLU" bottom: "t%(i)d" top: "t%(i)d" }\n'
                 % {"i": i, "s": shortcut})
    return text + ('layer { name: "pool" type: "Pooling" bottom: "t%d" top: "pool" '
                   'pooling_param { pool: AVE global_pooling: true } }\n'
                   'layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
                   'inner_product_param { num_output: 5 } }\n' % blocks)


def build(text, seed=0, gamma=None):
    """Engine net with random weights, random BatchNorm statistics and Scale γ (``gamma``: a factor per
    Scale layer, default 1), β small."""
    param = parse_prototxt(text)
    param.force_backward = True
    net = Net(param, seed=seed)
    rng = np.random.default_rng(seed)
    types = dict(zip(net.layer_names, net.layer_types))
    for name, blobs in net.params.items():
        shape = blobs[0].data.shape
        if types[name] == "BatchNorm":
            blobs[0].data[...] = rng.normal(0, 0.5, shape)
            blobs[1].data[...] = rng.uniform(0.5, 2.0, shape)
            blobs[2].data[...] = 1.0
        elif types[name] == "Scale":
            blobs[0].data[...] = rng.uniform(0.5, 1.5, shape) * (gamma or {}).get(name, 1.0)
            blobs[1].data[...] = rng.normal(0, 0.1, shape) * (gamma or {}).get(name, 1.0)
        else:
            blobs[0].data[...] = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
            blobs[1].data[...] = rng.normal(0, 0.1, blobs[1].data.shape)
    return net


def sample(seed=1, n=32):
    return np.random.default_rng(seed).standard_normal((n, 3, 10, 10)).astype(np.float32)


def moving(report):
    return [name for name in report["scale"] if name not in report["held"]]


def test_scale_layers_are_rescalable_but_not_initialized_by_algorithm_1():
    net = build(CHAIN)
    names = net.layer_names
    assert [names[i] for i in net.description.affine_layers()] == ["conv1", "conv2", "fc"]
    assert [names[i] for i in net.description.rescalable_layers()] == ["conv1", "scale_conv1", "conv2", "scale_conv2", "fc"]
    graph = ScaleGraph(net, len(names) - 1, exact=True)
    assert graph.held_reasons() == {
        "conv1": "scale cannot pass layer 'bn_conv1' (BatchNorm, not homogeneous)",
        "conv2": "scale cannot pass layer 'bn_conv2' (BatchNorm, not homogeneous)"}


@pytest.mark.parametrize("definition", ["gradient", "eq4"])
def test_in_place_scale_rates_are_measured_on_its_own_input_and_output(definition):
    """scale_conv1 runs in place between BatchNorm and ReLU: its bottom is the BatchNorm output and its
    top gradient the ReLU's input gradient, not what the shared blob holds after the full pass. The
    rates equal those of the same net with every layer on its own blob."""
    x = sample(n=16)
    measured = []
    for in_place in (True, False):
        net = build(chain_text(in_place))
        measured.append(RateMeter(net, seed=0, definition=definition).measure(SampleRunner(net, x, 8)))
    assert list(measured[0]) == ["conv1", "scale_conv1", "conv2", "scale_conv2", "fc"]
    for name, rates in measured[0].items():
        other = measured[1][name]
        for field in ("col_sq", "y_sq", "col_w2", "col_g2"):
            np.testing.assert_allclose(getattr(rates, field), getattr(other, field), rtol=1e-5, err_msg=name)
    r, gamma = measured[0]["scale_conv1"], net.params["scale_conv1"][0].data.astype(np.float64)
    assert r.col_sq.shape == r.y_sq.shape == (8,) and r.rows == 1 and r.taps == 1 and r.group == 8
    np.testing.assert_allclose(r.col_w2, gamma ** 2, rtol=1e-6)
    if definition == "gradient":          # C̃_{k,j} = |∂ℓ/∂γ_j| / sqrt(mean γ²)
        np.testing.assert_allclose(r.column_rates(), np.sqrt(r.col_g2 / np.mean(gamma ** 2)))


def test_a_batchnorm_chain_is_calibrated_through_its_scale_layers():
    gamma = {"scale_conv1": 10.0, "scale_conv2": 0.1}
    net = build(CHAIN, gamma=gamma)
    x = sample()
    before = forward_batches(net, x, "fc", 8)
    gammas = {name: net.params[name][0].data.copy() for name in gamma}
    convs = {name: net.params[name][0].data.copy() for name in ("conv1",)}
    report = rescale(net, x, batch_size=8, verify=True, max_iter=30, rounds=2)["BetweenLayer"]
    assert moving(report) == ["scale_conv1", "scale_conv2", "fc"]
    assert report["held"] == {"conv1": "scale cannot pass layer 'bn_conv1' (BatchNorm, not homogeneous)",
                              "conv2": "scale cannot pass layer 'bn_conv2' (BatchNorm, not homogeneous)"}
    assert report["spread_before"] > 10
    assert report["spread_measured"] < 1.3
    for name in gamma:
        assert not np.allclose(net.params[name][0].data, gammas[name])
        ratio = net.params[name][0].data / gammas[name]          # one factor per Scale layer
        np.testing.assert_allclose(ratio, report["scale"][name], rtol=1e-5)
    np.testing.assert_array_equal(net.params["conv1"][0].data, convs["conv1"])  # nothing in front of it
    after = forward_batches(net, x, "fc", 8)
    np.testing.assert_allclose(after, before * report["output_scale"], rtol=1e-4,
                               atol=1e-5 * np.abs(after).max())


def test_a_residual_batchnorm_net_ties_the_scales_its_sum_adds():
    """Eltwise SUM ties the Scales of both branches (and the identity shortcut's trunk): they share one
    factor, so the spread among them is what remains; the other Scales and fc are brought into it."""
    gamma = {"scale_conv0": 10.0, "scale_b1_a": 0.1, "scale_b2_a": 10.0}
    net = build(residual_text(2), gamma=gamma)
    x = sample()
    before = forward_batches(net, x, "fc", 8)
    report = rescale(net, x, batch_size=8, verify=True, max_iter=30, rounds=2)["BetweenLayer"]
    scale, measured = report["scale"], report["rate_measured"]
    tied = ("scale_b1_short", "scale_b1_b", "scale_b2_b")
    assert len({scale[name] for name in tied}) == 1 and scale["scale_b1_b"] != 1.0
    assert set(moving(report)) == {"scale_conv0", "scale_b1_short", "scale_b1_a", "scale_b1_b", "scale_b2_a",
                                   "scale_b2_b", "fc"}
    for conv in ("conv0", "b1_short", "b1_a", "b1_b", "b2_a", "b2_b"):
        assert report["held"][conv] == "scale cannot pass layer 'bn_%s' (BatchNorm, not homogeneous)" % conv
    assert report["spread_before"] > 100
    assert report["spread_measured"] < report["spread_before"] / 10
    within_tie = max(measured[name] for name in tied) / min(measured[name] for name in tied)
    assert report["spread_measured"] < 1.05 * within_tie           # the tie's own spread is all that is left
    assert report["spread_measured"] == pytest.approx(report["spread_predicted"], rel=1e-3)
    after = forward_batches(net, x, "fc", 8)
    np.testing.assert_allclose(after, before * report["output_scale"], rtol=1e-4,
                               atol=1e-5 * np.abs(after).max())


SECOND_BOTTOM = INPUT + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "conv_s" type: "Convolution" bottom: "data" top: "s" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "mul" type: "Scale" bottom: "c1" bottom: "s" top: "m" scale_param { axis: 0 } }
layer { name: "shared_a" type: "Scale" bottom: "m" top: "a" param { name: "g" } }
layer { name: "shared_b" type: "Scale" bottom: "a" top: "b" param { name: "g" } }
layer { name: "fixed" type: "Scale" bottom: "b" top: "f" param { lr_mult: 0 } }
layer { name: "fc" type: "InnerProduct" bottom: "f" top: "fc" inner_product_param { num_output: 3 } }
"""


def test_a_scale_from_a_second_bottom_or_with_a_shared_or_fixed_gamma_is_a_barrier():
    param = parse_prototxt(SECOND_BOTTOM)
    param.force_backward = True
    net = Net(param, seed=0)
    names = net.layer_names
    assert [names[i] for i in net.description.rescalable_layers()] == ["conv1", "conv_s", "fc"]
    held = ScaleGraph(net, len(names) - 1).held_reasons()
    assert held == {"conv1": "scale cannot pass layer 'mul' (Scale, not homogeneous: its scale is a second bottom, "
                             "y = x·s)",
                    "conv_s": "scale cannot pass layer 'mul' (Scale, not homogeneous: its scale is a second bottom, "
                              "y = x·s)"}
    assert net.description.op("shared_a").why.endswith("shares a parameter blob with another layer")
    assert net.description.op("fixed").why.endswith("not learned (lr_mult: 0)")


CAFFE_CODE = r'''
import json, sys, numpy as np
from magic_init.backends.pycaffe import PycaffeNet
from magic_init.algorithm import rescale
from magic_init.algorithm.rates import RateMeter
from magic_init.algorithm.runner import SampleRunner

proto, arrays = sys.argv[1], np.load(sys.argv[2])
n = PycaffeNet(proto, input_shapes={"data": (8, 3, 10, 10)})
for name, blobs in n.params.items():
    for j, b in enumerate(blobs):
        b.data[...] = arrays["%s.%d" % (name, j)]
x = arrays["x"]
rates = RateMeter(n, seed=0, definition="gradient").measure(SampleRunner(n, x, 8))

def forward():
    out = []
    for i in range(0, len(x), 8):
        n.blobs["data"].data[...] = x[i:i + 8]
        n.forward()
        out.append(n.blobs["fc"].data.copy())
    return np.concatenate(out)

before = forward()
report = rescale(n, x, batch_size=8, max_iter=30)["BetweenLayer"]
after = forward()
print(json.dumps({"rates": {k: {f: getattr(r, f).tolist() for f in ("col_sq", "y_sq", "col_g2")}
                            for k, r in rates.items()},
                  "error": float(np.abs(after - before * report["output_scale"]).max() / np.abs(after).max()),
                  "scale": report["scale"], "held": report["held"]}))
'''


def test_in_place_scale_rates_and_exact_rescaling_on_real_caffe(caffe_env):
    """Caffe overwrites in-place blobs as the engine does: the same rates (its Scale layers measured
    between their BatchNorm and ReLU) and the same exact rescaling."""
    import json

    net = build(chain_text(), gamma={"scale_conv1": 10.0, "scale_conv2": 0.1})
    x = sample(n=16)
    host, inside = caffe_env.tmpdir()
    (host / "chain.prototxt").write_text(chain_text())
    arrays = {"%s.%d" % (name, j): b.data for name, blobs in net.params.items() for j, b in enumerate(blobs)}
    np.savez(host / "chain.npz", x=x, **arrays)
    expected = RateMeter(net, seed=0, definition="gradient").measure(SampleRunner(net, x, 8))
    result = json.loads(caffe_env.python(CAFFE_CODE, inside + "/chain.prototxt", inside + "/chain.npz")
                        .stdout.strip().splitlines()[-1])
    assert list(result["rates"]) == list(expected)
    for name, fields in result["rates"].items():
        for field, values in fields.items():
            np.testing.assert_allclose(values, getattr(expected[name], field), rtol=1e-3, err_msg=name)
    assert set(result["held"]) == {"conv1", "conv2"} and result["scale"]["scale_conv1"] != 1.0
    assert result["error"] < 1e-4
