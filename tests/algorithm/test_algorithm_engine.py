"""The algorithm through the built-in engine on models/tiny.prototxt (and a homogeneous variant)."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("torch")

from batched import forward_batches  # noqa: E402
from magic_init.algorithm import initialize, rescale  # noqa: E402
from magic_init.algorithm.rates import RateMeter  # noqa: E402
from magic_init.algorithm.runner import SampleRunner  # noqa: E402
from magic_init.engine import Net  # noqa: E402
from magic_init.io import read_prototxt  # noqa: E402
from magic_init.measure_stat import measure  # noqa: E402

TINY = os.path.join(os.path.dirname(__file__), "..", "..", "models", "tiny.prototxt")


def tiny(homogeneous=False, zero=True, second_dropout=False):
    param = read_prototxt(TINY)
    param.force_backward = True
    if second_dropout:
        with_second_dropout(param)
    if homogeneous:                       # LRN is only approximately homogeneous
        for layer in param.layer:
            if layer.type == "LRN":
                layer.type = "ReLU"
                layer.ClearField("lrn_param")
    net = Net(param, input_shapes={"data": (16, 3, 32, 32)}, seed=0)     # fillers seeded
    if zero:
        for blobs in net.params.values():
            for blob in blobs:
                blob.data[...] = 0
    return net


def with_second_dropout(net_param):
    """A Dropout layer on pool2 (in place, before fc3), as drop3 before fc4: two Dropout layers."""
    names = [layer.name for layer in net_param.layer]
    layers = list(net_param.layer)
    drop = type(layers[0])()
    drop.CopyFrom(layers[names.index("drop3")])
    drop.name, drop.bottom[0], drop.top[0] = "drop2", "pool2", "pool2"
    layers.insert(names.index("fc3"), drop)
    del net_param.layer[:]
    net_param.layer.extend(layers)
    return net_param


def model_weights(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


def assert_same_weights(first, second, rel=1e-4):
    """Every blob agrees to ``rel`` relative to its largest value."""
    for name, blobs in first.items():
        for j, (a, b) in enumerate(zip(blobs, second[name])):
            scale = max(float(np.abs(a).max()), 1e-30)
            assert float(np.abs(a - b).max()) <= rel * scale, (name, j, float(np.abs(a - b).max()) / scale)


@pytest.fixture(scope="module")
def sample():
    return (np.random.default_rng(0).standard_normal((48, 3, 32, 32)) * 50).astype(np.float32)


@pytest.mark.parametrize("init", ["gaussian", "kmeans"])
def test_within_layer_on_the_engine(init, sample):
    """In TEST-phase statistics every layer's outputs have mean β and unit std on the sample."""
    net = tiny()
    report = initialize(net, sample, init=init, between_layer=False, stats_dropout=False)
    inits = [r["init"] for r in report["WithinLayer"]]
    assert inits == [init, init, "gaussian", "gaussian"]           # data-driven inits on convolutions only
    for layer in measure(net, sample)["layers"]:
        assert layer["act_mean"] == pytest.approx(0.1, abs=0.02)
        assert layer["act_std"] == pytest.approx(1.0, abs=0.02)


def test_kmeans_falls_back_for_an_inner_product_wider_than_the_sample(sample):
    report = initialize(tiny(), sample[:32], init="kmeans", between_layer=False, data_driven_fc=True)["WithinLayer"]
    fc3 = [r for r in report if r["layer"] == "fc3"][0]
    assert fc3["init"] == "gaussian" and "too few" in fc3["reason"]     # 32 images < 64 outputs


def test_rescale_keeps_a_homogeneous_net_up_to_a_positive_factor(sample):
    net = tiny(homogeneous=True, zero=False)      # the prototxt's gaussian σ=0.01 fillers
    before = forward_batches(net, sample, "fc4", 16)
    report = rescale(net, sample, max_iter=30)["BetweenLayer"]
    np.testing.assert_allclose(forward_batches(net, sample, "fc4", 16), before * report["output_scale"],
                               rtol=1e-3, atol=1e-6 * np.abs(before).max())


def test_analytic_rates_match_remeasurement_on_the_engine(sample):
    net = tiny(homogeneous=True)
    initialize(net, sample, between_layer=False)
    report = rescale(net, sample, seed=4, rounds=1)["BetweenLayer"]   # η seeded with seed + 1
    runner = SampleRunner(net, sample, 16)
    remeasured = {k: v.rate() for k, v in RateMeter(net, seed=5, definition="gradient").measure(runner).items()}
    for layer, predicted in report["rate_after"].items():
        assert remeasured[layer] == pytest.approx(predicted, rel=1e-3)


def test_between_layer_brings_rates_within_2x(sample):
    net = tiny(zero=False)
    rates = measure(net, sample)["summary"]["rate_spread"]
    initialize(net, sample, rounds=2, max_iter=30, layers=[])         # the fillers' weights kept
    assert rates > 5 and measure(net, sample)["summary"]["rate_spread"] < 1.5


def test_rates_are_measured_with_dropout_active_by_default(sample):
    """With Dropout active (y = x·mask/(1-p), p = 0.5 before fc4), fc4's inputs have 1/(1-p) = 2 times
    the second moment of the deterministic net; layers below the dropout see the same inputs."""
    net = tiny(zero=False)
    measured = {}
    for dropout in (True, False):
        rates = RateMeter(net, seed=2, dropout=dropout).measure(SampleRunner(net, sample, 16))
        measured[dropout] = {name: r.col_sq.mean() for name, r in rates.items()}
    assert measured[True]["fc4"] / measured[False]["fc4"] == pytest.approx(2.0, rel=0.1)
    assert measured[True]["fc3"] == pytest.approx(measured[False]["fc3"], rel=1e-6)


def test_stats_dropout_normalizes_the_outputs_training_sees(sample):
    """With stats_dropout (the default), fc4 (above a p = 0.5 dropout) has unit std under dropout
    noise, and so a smaller one in the deterministic TEST phase; without it, unit std in TEST phase."""
    def fc4_std(net, dropout):
        if not dropout:
            return forward_batches(net, sample, "fc4", 16).std(axis=0).mean()
        with net.train_dropout(seed=11):
            return forward_batches(net, sample, "fc4", 16).std(axis=0).mean()

    noisy = tiny()
    initialize(noisy, sample, between_layer=False, seed=3)
    plain = tiny()
    initialize(plain, sample, between_layer=False, stats_dropout=False, seed=3)
    assert fc4_std(noisy, True) == pytest.approx(1.0, abs=0.15)
    assert fc4_std(noisy, False) < 0.85
    assert fc4_std(plain, False) == pytest.approx(1.0, abs=0.02)


def test_same_seed_same_weights_with_dropout_in_both_steps(sample):
    """Dropout masks come from seeded generators: a fixed seed still gives identical weights."""
    weights = []
    for _ in range(2):
        net = tiny()
        initialize(net, sample, init="kmeans", seed=5, max_iter=3)
        weights.append({name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()})
    for name, blobs in weights[0].items():
        for a, b in zip(blobs, weights[1][name]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("init", ["gaussian", "kmeans"])
def test_the_batch_size_does_not_change_the_model(init, sample):
    """Batch size is a memory knob: with one seed, batches of 3, 8 and 16 give the same weights (to float
    summation order), both algorithms, Dropout active in both as by default. Patch locations, η and
    Dropout masks are functions of the image index, gradients are summed over fixed blocks of images."""
    models = []
    for batch in (3, 8, 16):
        net = tiny()
        initialize(net, sample, init=init, batch_size=batch, seed=5)
        models.append(model_weights(net))
    for other in models[1:]:
        assert_same_weights(models[0], other)


def test_dropout_masks_do_not_depend_on_the_batching_with_two_dropout_layers(sample):
    """On the engine each Dropout layer draws from its own generator (Net.train_dropout), so image n's
    mask does not depend on the batching even with two Dropout layers (here drop2 and drop3 fall into
    one range of Algorithm 1: fc3 is kept); Algorithm 2's rates agree at batch sizes 3, 16 and 24."""
    models = {}
    for batch in (3, 16):
        net = tiny(zero=False, second_dropout=True)
        initialize(net, sample, layers=["conv1", "conv2", "fc4"], between_layer=False, batch_size=batch, seed=2)
        models[batch] = model_weights(net)
    assert_same_weights(models[3], models[16])
    rates = []
    for batch in (3, 16, 24):
        net = tiny(zero=False, second_dropout=True)
        rates.append({k: v.rate() for k, v in RateMeter(net, seed=2, definition="gradient").measure(
            SampleRunner(net, sample, batch)).items()})
    for other in rates[1:]:
        assert rates[0] == pytest.approx(other, rel=1e-5)
