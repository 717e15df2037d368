"""Exact rescaling of pretrained models (issue 16) and Algorithm 2's measured change-rate spread.

A pretrained model re-parameterized without changing its function (fc3 x 100, fc4 / 100: only ReLU
and Dropout in between, both positively homogeneous) is rescaled by Algorithm 2 alone (``rescale``,
``magic_init --load``). The rescaled model must compute z_N' = c·z_N for every input, one c > 0:
LRN, y = x·(k + α/n·Σx²)^(-β), is not homogeneous, so the layers whose scale would have to pass
it are held fixed (``exact``). Deviation is measured after removing the least-squares factor
c = <z, z'>/<z, z>: max |z' − c·z| / max |c·z|.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from batched import forward_batches  # noqa: E402
from magic_init.algorithm import BetweenLayer, rescale, run_passes  # noqa: E402
from magic_init.engine import Net  # noqa: E402
from magic_init.io import read_caffemodel, read_prototxt, write_caffemodel  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FASHION = REPO / "models" / "fashion_small_deploy.prototxt"
CAFFENET = REPO / "models" / "caffenet.prototxt"
TOLERANCE = 1e-5


def deviation(before, after):
    """(c, max |after − c·before| / max |c·before|) with c the least-squares factor."""
    a, b = np.asarray(before, np.float64).ravel(), np.asarray(after, np.float64).ravel()
    c = float(a @ b / (a @ a))
    return c, float(np.abs(b - c * a).max() / np.abs(c * a).max())


def random_weights(net, seed=0, boost=None):
    """He-scaled Gaussian weights and small random biases; ``boost`` multiplies a layer's W and b."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, blobs in net.params.items():
        w = blobs[0].data
        arrays = [rng.standard_normal(w.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(w.shape[1:])))]
        arrays += [rng.standard_normal(b.data.shape, dtype=np.float32) * np.float32(0.1) for b in blobs[1:]]
        weights[name] = [a * np.float32((boost or {}).get(name, 1.0)) for a in arrays]
    return weights


def reparameterize(weights, up, down, factor=100.0):
    """Same function: ``up``'s W and b times factor, ``down``'s W divided by it (only ReLU/Dropout between)."""
    weights = {name: [a.copy() for a in arrays] for name, arrays in weights.items()}
    weights[up] = [a * np.float32(factor) for a in weights[up]]
    weights[down][0] = weights[down][0] / np.float32(factor)
    return weights


def set_weights(net, weights):
    for name, arrays in weights.items():
        for blob, array in zip(net.params.get(name, ()), arrays):
            blob.data[...] = array


# conv1 x 10 puts LRN's α/n·Σx² well above float precision against k = 1 on [0, 1] pixels, so that
# passing LRN (exact=False) visibly changes the function.
FASHION_BOOST = {"conv1": 10.0}


def fashion_net(batch=16, lrn=True):
    param = read_prototxt(str(FASHION))
    if not lrn:                                   # pool1 -> conv2 directly: every path homogeneous
        param.layer.remove(next(layer for layer in param.layer if layer.type == "LRN"))
        next(layer for layer in param.layer if layer.name == "conv2").bottom[:] = ["pool1"]
    return Net(param, input_shapes={"data": (batch, 1, 28, 28)})


def pixels(n, seed=1, shape=(1, 28, 28)):
    return np.random.default_rng(seed).random((n,) + shape, dtype=np.float32)


def rescaled_deviation(net, weights, x, blob, batch, exact, channels=True):
    """Load ``weights``, run Algorithm 2 alone, return (report, deviation, same argmax)."""
    set_weights(net, weights)
    before = forward_batches(net, x, blob, batch)
    report = run_passes(net, x, [BetweenLayer(seed=1, exact=exact, channels=channels)], batch_size=batch)["BetweenLayer"]
    after = forward_batches(net, x, blob, batch)
    c, dev = deviation(before, after)
    same = bool((before.argmax(axis=1) == after.argmax(axis=1)).all())
    return report, c, dev, same


def test_rescale_keeps_fashion_small_exactly_and_holds_conv1_at_the_lrn(caplog):
    net, x = fashion_net(), pixels(32)
    weights = reparameterize(random_weights(net, boost=FASHION_BOOST), "fc3", "fc4")
    set_weights(net, weights)
    before = forward_batches(net, x, "fc4", 16)
    with caplog.at_level(logging.INFO, logger="magic_init"):
        report = rescale(net, x, batch_size=16)["BetweenLayer"]
    after = forward_batches(net, x, "fc4", 16)
    c, dev = deviation(before, after)
    print("\nfashion_small exact: factor %.6g, deviation %.3g" % (c, dev))
    assert c > 0 and dev < TOLERANCE
    assert c == pytest.approx(report["output_scale"], rel=1e-4)
    assert (before.argmax(axis=1) == after.argmax(axis=1)).all()
    assert report["scale"]["fc3"] < 0.1                   # it did undo the x 100
    assert report["scale"]["conv1"] == 1.0 and report["pinned"] == ["conv1"]
    assert report["held"] == {"conv1": "scale cannot pass layer 'norm1' (LRN, not homogeneous)"}
    held_lines = [r.getMessage() for r in caplog.records if "held fixed" in r.getMessage()]
    assert held_lines == ["between-layer: layer 'conv1' held fixed: scale cannot pass layer 'norm1' "
                          "(LRN, not homogeneous)"]


def test_passing_lrn_approximately_changes_the_function_more():
    """The check above can fail: without ``exact`` conv1's scale passes norm1 and the output moves."""
    net, x = fashion_net(), pixels(32)
    weights = reparameterize(random_weights(net, boost=FASHION_BOOST), "fc3", "fc4")
    _, _, exact_dev, _ = rescaled_deviation(net, weights, x, "fc4", 16, exact=True)
    report, _, approx_dev, _ = rescaled_deviation(net, weights, x, "fc4", 16, exact=False)
    print("\nfashion_small deviation: exact %.3g, LRN passed %.3g" % (exact_dev, approx_dev))
    assert report["held"] == {} and report["scale"]["conv1"] != 1.0
    assert approx_dev > TOLERANCE and approx_dev > 10 * exact_dev


def test_rescale_keeps_caffenet_exactly_and_holds_conv1_conv2():
    net = Net(read_prototxt(str(CAFFENET)), input_shapes={"data": (2, 3, 227, 227)})
    x = (np.random.default_rng(1).standard_normal((2, 3, 227, 227)) * 50).astype(np.float32)
    weights = reparameterize(random_weights(net), "conv4", "conv5")
    report, c, exact_dev, same = rescaled_deviation(net, weights, x, "fc8", 2, exact=True)
    per_layer, c_layer, layer_dev, same_layer = rescaled_deviation(net, weights, x, "fc8", 2, exact=True,
                                                                   channels=False)
    _, _, approx_dev, _ = rescaled_deviation(net, weights, x, "fc8", 2, exact=False)
    print("\ncaffenet deviation: exact %.3g (factor %.6g; per layer %.3g), LRN passed %.3g"
          % (exact_dev, c, layer_dev, approx_dev))
    held = {"conv1": "scale cannot pass layer 'norm1' (LRN, not homogeneous)",
            "conv2": "scale cannot pass layer 'norm2' (LRN, not homogeneous)"}
    for result in (report, per_layer):
        assert result["held"] == held
    assert c > 0 and exact_dev < TOLERANCE and same and report["factors"] == "per channel"
    assert c_layer > 0 and layer_dev < TOLERANCE and same_layer
    assert per_layer["scale"]["conv4"] < 0.1              # one factor per layer: it undid the x 100
    assert approx_dev > 10 * max(exact_dev, layer_dev)


# --- the change-rate spread: predicted and measured ---------------------------------------------------------

def test_verify_measures_the_spread_after_the_last_step(caplog):
    net, x = fashion_net(), pixels(32)
    set_weights(net, reparameterize(random_weights(net, boost=FASHION_BOOST), "fc3", "fc4"))
    with caplog.at_level(logging.INFO, logger="magic_init"):
        report = run_passes(net, x, [BetweenLayer(seed=1, rounds=1, max_iter=5, verify=True)],
                            batch_size=16)["BetweenLayer"]
    print("\nfashion_small (LRN passed): spread %.4g -> %.4g predicted, %.4g measured" % (
        report["spread_before"], report["spread_predicted"], report["spread_measured"]))
    assert report["spread_measured"] >= 1 and set(report["rate_measured"]) == set(report["rate_after"])
    assert report["spread_before"] > report["spread_predicted"] >= 1
    line = [r.getMessage() for r in caplog.records if "change-rate spread" in r.getMessage()][-1]
    assert line.endswith("x (predicted), %.3gx (measured after the last step)" % report["spread_measured"]), line


def test_without_verify_the_log_says_the_spread_is_predicted(caplog):
    net, x = fashion_net(batch=8), pixels(8)
    set_weights(net, random_weights(net))
    with caplog.at_level(logging.INFO, logger="magic_init"):
        report = run_passes(net, x, [BetweenLayer(seed=1, rounds=1, max_iter=2)], batch_size=8)["BetweenLayer"]
    assert "rate_measured" not in report and "spread_measured" not in report
    line = [r.getMessage() for r in caplog.records if "change-rate spread" in r.getMessage()][-1]
    assert line.endswith("x (predicted; -v measures it)"), line


def test_measured_spread_equals_the_predicted_one_on_a_homogeneous_net():
    """Without LRN every path is homogeneous: the analytic update is exact, so the measurement after
    the last step (same η) gives the predicted rates."""
    net, x = fashion_net(lrn=False), pixels(32)
    set_weights(net, reparameterize(random_weights(net), "fc3", "fc4"))
    report = run_passes(net, x, [BetweenLayer(seed=1, rounds=1, max_iter=5, verify=True)],
                        batch_size=16)["BetweenLayer"]
    print("\nhomogeneous fashion_small: spread %.4g -> %.4g predicted, %.4g measured" % (
        report["spread_before"], report["spread_predicted"], report["spread_measured"]))
    assert report["iterations"] == 5                       # the verification pass did run
    assert report["spread_measured"] == pytest.approx(report["spread_predicted"], rel=0.01)
    for layer, predicted in report["rate_after"].items():
        assert report["rate_measured"][layer] == pytest.approx(predicted, rel=0.01), layer
        assert report["rate_measured"][layer] != pytest.approx(report["rate_before"][layer], rel=0.01), layer


# --- the CLI: --load without Algorithm 1 rescales exactly --------------------------------------------------------

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "magic_init", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=REPO)


# gray 28 x 28 from the example photos (a 1-channel input reads them as gray), pixels / 255
CLI_ARGS = ("--data", "examples/images/list.txt", "--mean", "0", "--scale", "0.00390625", "--size", "28",
            "--num-images", "8", "--batch-size", "4")


def pretrained_fashion(path, seed=0):
    """A random 'pretrained' fashion_small model with fc3 x 100, fc4 / 100, written as a caffemodel."""
    net = fashion_net(batch=1)
    weights = reparameterize(random_weights(net, seed=seed, boost=FASHION_BOOST), "fc3", "fc4")
    write_caffemodel(str(path), read_prototxt(str(FASHION)), weights)
    return weights


def cli_rescale(tmp_path, *flags):
    source, target = tmp_path / "in.caffemodel", tmp_path / "out.caffemodel"
    pretrained_fashion(source)
    result = run_cli(FASHION, target, "--load", source, *CLI_ARGS, "--backend", "torch", *flags)
    assert result.returncode == 0, result.stderr
    return source, target, result.stderr


def test_cli_load_rescales_exactly_and_says_what_it_held(tmp_path):
    source, target, stderr = cli_rescale(tmp_path, "-v")
    assert "layer 'conv1' held fixed: scale cannot pass layer 'norm1' (LRN, not homogeneous)" in stderr, stderr
    assert "(measured after the last step)" in stderr, stderr
    net, x = fashion_net(batch=8), pixels(16, seed=5)
    outputs = []
    for path in (source, target):
        set_weights(net, read_caffemodel(str(path)).weights)
        outputs.append(forward_batches(net, x, "fc4", 8))
    c, dev = deviation(*outputs)
    print("\nCLI --load, engine: factor %.6g, deviation %.3g" % (c, dev))
    assert c > 0 and dev < TOLERANCE
    assert (outputs[0].argmax(axis=1) == outputs[1].argmax(axis=1)).all()
    scaled = read_caffemodel(str(target)).weights
    assert np.abs(scaled["fc3"][0]).max() < 0.1 * np.abs(read_caffemodel(str(source)).weights["fc3"][0]).max()


def test_cli_with_algorithm_1_passes_lrn_and_without_v_predicts(tmp_path):
    _, _, stderr = cli_rescale(tmp_path, "--within-layer", "--zero-from", "fc3")
    assert "held fixed" not in stderr, stderr
    assert "(predicted; -v measures it)" in stderr, stderr


COMPARE_IN_CAFFE = r"""
import sys, numpy as np, caffe
caffe.set_mode_cpu()
d = sys.argv[1]
x = np.random.RandomState(7).rand(8, 1, 28, 28).astype(np.float32)
outs = []
for name in sys.argv[2:]:
    net = caffe.Net("/src/models/fashion_small_deploy.prototxt", d + "/" + name + ".caffemodel", caffe.TEST)
    net.blobs["data"].reshape(*x.shape)
    outs.append(net.forward(data=x)["fc4"].astype(np.float64).copy())
np.save(d + "/fc4.npy", np.stack(outs))
"""


def test_cli_rescaled_models_compute_the_same_function_in_caffe(caffe_env):
    """Rescaled by the CLI on the built-in engine (host) and on pycaffe (in the chroot), run in Caffe."""
    host, inside = caffe_env.tmpdir()
    source, _, _ = cli_rescale(host)                      # host/in.caffemodel -> host/out.caffemodel
    caffe_env.run("python3", "-m", "magic_init", "models/fashion_small_deploy.prototxt", inside + "/pycaffe.caffemodel",
                  "--load", inside + "/in.caffemodel", *CLI_ARGS, "--backend", "caffe")
    caffe_env.python(COMPARE_IN_CAFFE, inside, "in", "out", "pycaffe")
    before, *rescaled = np.load(host / "fc4.npy")
    assert np.abs(before).max() > 1e-3
    fc3 = np.abs(read_caffemodel(str(source)).weights["fc3"][0]).max()
    for name, after in zip(("out", "pycaffe"), rescaled):
        c, dev = deviation(before, after)
        print("\nCLI --load (%s), real Caffe: factor %.6g, deviation %.3g" % (name, c, dev))
        assert c > 0 and dev < TOLERANCE, name
        assert (before.argmax(axis=1) == after.argmax(axis=1)).all(), name
        weights = read_caffemodel(str(host / (name + ".caffemodel"))).weights
        assert np.abs(weights["fc3"][0]).max() < 0.1 * fc3, name        # it did undo the x 100


COMPARE_CAFFENET_IN_CAFFE = r"""
import sys, numpy as np, caffe
caffe.set_mode_cpu()
d = sys.argv[1]
x = (np.random.RandomState(3).rand(2, 3, 227, 227).astype(np.float32) - 0.5) * 100
outs = []
for name in ("in", "out"):
    net = caffe.Net("/src/models/caffenet.prototxt", d + "/" + name + ".caffemodel", caffe.TEST)
    net.blobs["data"].reshape(*x.shape)
    net.forward(data=x)
    outs.append(net.blobs["fc8"].data.astype(np.float64).copy())
np.save(d + "/fc8.npy", np.stack(outs))
"""


def test_cli_rescaled_caffenet_computes_the_same_function_in_caffe(caffe_env):
    """CaffeNet (two LRNs, groups, dropout), He-scaled random weights with conv5 x 100 / fc6 / 100, rescaled
    by ``magic_init --load`` on the built-in engine, then run in real Caffe: fc8 equal up to one factor."""
    host, inside = caffe_env.tmpdir()
    net = Net(str(CAFFENET), input_shapes={"data": (1, 3, 227, 227)})
    weights = reparameterize(random_weights(net, seed=4), "conv5", "fc6")
    write_caffemodel(str(host / "in.caffemodel"), read_prototxt(str(CAFFENET)), weights)
    result = run_cli(CAFFENET, host / "out.caffemodel", "--load", host / "in.caffemodel", "--data",
                     "examples/images/list.txt", "--num-images", "4", "--batch-size", "2", "--backend", "torch")
    assert result.returncode == 0, result.stderr
    for layer, lrn in (("conv1", "norm1"), ("conv2", "norm2")):
        assert "layer '%s' held fixed: scale cannot pass layer '%s' (LRN" % (layer, lrn) in result.stderr
    caffe_env.python(COMPARE_CAFFENET_IN_CAFFE, inside)
    before, after = np.load(host / "fc8.npy")
    c, dev = deviation(before, after)
    print("\nCaffeNet, CLI --load, real Caffe: factor %.6g, deviation %.3g" % (c, dev))
    assert np.abs(before).max() > 1e-3 and c > 0 and dev < TOLERANCE
    assert (before.argmax(axis=1) == after.argmax(axis=1)).all()
    rescaled = read_caffemodel(str(host / "out.caffemodel")).weights
    assert np.abs(rescaled["conv5"][0]).max() < 0.1 * np.abs(weights["conv5"][0]).max()   # the x 100 is undone
