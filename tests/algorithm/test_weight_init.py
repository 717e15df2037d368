"""Pure-function tests of magic_init.algorithm.weight_init (paper §3.3)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from magic_init.algorithm import BetweenLayer, WithinLayer, weight_init


def correlated_patches(n=4000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) * np.linspace(0.1, 3.0, d)
    return rng.standard_normal((n, d)).dot(mixing) + 5.0


def test_pca_outputs_are_white_and_decorrelated():
    x = correlated_patches()
    w = weight_init.pca(x, 5, np.random.default_rng(0), eps=0)
    y = (x - x.mean(axis=0)).dot(w.T)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(5), atol=1e-3)


def test_pca_takes_the_leading_components():
    x = correlated_patches()
    w = weight_init.pca(x, 2, np.random.default_rng(0), eps=0)
    centered = x - x.mean(axis=0)
    top = np.linalg.eigh(centered.T.dot(centered))[1][:, -1]
    first = w[0] / np.linalg.norm(w[0])
    assert abs(first.dot(top)) > 0.999


def test_zca_matrix_is_symmetric_and_whitens():
    x = correlated_patches()
    z = weight_init.zca(x, x.shape[1], np.random.default_rng(0), eps=0)
    np.testing.assert_allclose(z, z.T, rtol=1e-4, atol=1e-6)
    y = (x - x.mean(axis=0)).dot(z.T)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(x.shape[1]), atol=1e-3)


def test_zca_with_more_outputs_than_inputs_repeats_rows():
    x = correlated_patches(d=4)
    assert weight_init.zca(x, 6, np.random.default_rng(0)).shape == (6, 4)


def test_spherical_kmeans_centroids_are_unit_norm_and_find_clusters():
    rng = np.random.default_rng(1)
    directions = np.eye(6)[:3]
    points = np.repeat(directions, 200, axis=0) + 0.05 * rng.standard_normal((600, 6))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    centroids = weight_init.spherical_kmeans(points.astype(np.float32), 3, np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    assert np.sort(np.abs(centroids.dot(directions.T)).max(axis=0)).min() > 0.99


def test_spherical_kmeans_refills_empty_clusters():
    points = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)   # 3 distinct points, 5 clusters
    centroids = weight_init.spherical_kmeans(points, 5, np.random.default_rng(0))
    assert np.all(np.isfinite(centroids))
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("kind", ["pca", "zca", "kmeans", "rand"])
def test_data_driven_shapes_and_seed(kind):
    x = correlated_patches(n=500, d=12)
    a = weight_init.data_driven(kind, x, 7, np.random.default_rng(3))
    b = weight_init.data_driven(kind, x, 7, np.random.default_rng(3))
    assert a.shape == (7, 12) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_kmeans_rows_respond_to_their_centroid():
    x = correlated_patches(n=2000, d=6)
    w = weight_init.kmeans(x, 4, np.random.default_rng(0))
    response = (x - x.mean(axis=0)).dot(w.T)
    assert np.all(response.max(axis=0) > 0.5)     # each unit's own patches score high (cosine ≤ 1)


def test_too_few_samples_returns_none():
    assert weight_init.data_driven("kmeans", correlated_patches(n=5), 8, np.random.default_rng(0)) is None


def test_unknown_kind_lists_the_choices():
    with pytest.raises(ValueError, match="gaussian, pca, zca, kmeans, rand"):
        WithinLayer(init="elwise")
    with pytest.raises(ValueError, match="'gaussian' is not a data-driven init"):
        weight_init.data_driven("gaussian", correlated_patches(n=50), 8, np.random.default_rng(0))


def test_a_bad_rate_definition_is_rejected_before_any_pass():
    """BetweenLayer checks its rate when built, not after a forward+backward pass."""
    with pytest.raises(ValueError, match="gradient, eq4"):
        BetweenLayer(rate="grad")


# --- small and degenerate samples: depthwise groups (9-dim patches, 1 output), constant patches ---

KINDS = ["pca", "zca", "kmeans", "rand"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [1, 9, 16])
def test_depthwise_sized_groups_give_finite_rows(kind, m):
    """A 3x3 depthwise group: 9-dim patches; one output (depthwise), as many as dimensions, or more
    (a channel multiplier of 16): finite, nonzero rows of shape m × 9."""
    x = np.maximum(correlated_patches(n=300, d=9) - 5, 0)            # post-ReLU-like
    w, reason = weight_init.data_driven_or_reason(kind, x, m, np.random.default_rng(0))
    assert reason == "" and w.shape == (m, 9) and np.all(np.isfinite(w)) and np.all(np.any(w, axis=1))


def test_randomized_eigen_is_not_used_when_the_oversampled_basis_exceeds_d():
    """d = 9, rank 2: the randomized subspace would have 18 columns in 9 dimensions (not a basis);
    the exact decomposition is used, so the whitened patches are exactly white."""
    x = correlated_patches(n=2000, d=9)
    _, values, vectors = weight_init.whitening(x, eps=0, rank=2)
    np.testing.assert_allclose(vectors.T.dot(vectors), np.eye(len(values)), atol=1e-8)


def test_randomized_eigen_whitens_exactly_and_finds_the_leading_spectrum():
    """d = 120, rank 16 (the randomized path, float32 products): orthonormal directions, patches
    white along them to float32 precision, eigenvalues those of the exact decomposition (a decaying
    spectrum, as image patches have)."""
    rng = np.random.default_rng(1)
    d = 120
    spectrum = 1.0 / np.arange(1, d + 1) ** 1.5
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    x = (rng.standard_normal((6000, d)) * np.sqrt(spectrum)).dot(basis.T).astype(np.float32) + 3
    mean, values, vectors = weight_init.whitening(x, eps=0, rank=16)
    assert len(values) == 16
    np.testing.assert_allclose(vectors.T.dot(vectors), np.eye(16), atol=1e-6)
    white = (x - mean).dot(vectors / np.sqrt(values))
    np.testing.assert_allclose(white.T.dot(white) / len(x), np.eye(16), atol=1e-4)
    centered = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    exact = np.linalg.eigvalsh(centered.T.dot(centered) / len(x))[::-1][:16]
    np.testing.assert_allclose(values, exact, rtol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_constant_patches_are_refused_with_a_reason(kind):
    x = np.full((100, 9), 3.0, np.float32)
    w, reason = weight_init.data_driven_or_reason(kind, x, 1, np.random.default_rng(0))
    assert w is None and "zero-variance" in reason
    assert weight_init.data_driven(kind, np.zeros((100, 9), np.float32), 1, np.random.default_rng(0)) is None
    with pytest.raises(weight_init.DegenerateSample, match="zero-variance"):
        weight_init.whitening(np.zeros((100, 9), np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_more_outputs_than_patches_is_refused_not_a_crash(kind):
    w, reason = weight_init.data_driven_or_reason(kind, correlated_patches(n=5, d=9), 8, np.random.default_rng(0))
    assert w is None and "too few" in reason


def test_rank_one_patches_still_give_rows():
    """A sample spanning one direction (rank-deficient covariance, nonzero variance) is whitened
    along that direction: finite rows, no fallback."""
    rng = np.random.default_rng(0)
    x = np.outer(rng.standard_normal(200), np.arange(1.0, 10.0)).astype(np.float32) + 2
    for kind in KINDS:
        w, reason = weight_init.data_driven_or_reason(kind, x, 4, np.random.default_rng(0))
        assert reason == "" and np.all(np.isfinite(w))


DEPTHWISE_NET = """
input: "data"
input_shape { dim: 8 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: %(pad)d } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "dw" type: "Convolution" bottom: "conv1" top: "dw"
        convolution_param { num_output: 8 group: 8 kernel_size: 3 pad: %(pad)d } }
layer { name: "relu2" type: "ReLU" bottom: "dw" top: "dw" }
layer { name: "pw" type: "Convolution" bottom: "dw" top: "pw" convolution_param { num_output: 4 kernel_size: 1 } }
"""


def depthwise_net(pad=1):
    pytest.importorskip("torch")
    from magic_init.engine import Net
    from magic_init.io.prototxt import parse_prototxt
    return Net(parse_prototxt(DEPTHWISE_NET % {"pad": pad}), seed=0)


def layer_moments(net, x, top):
    """Per-channel (mean, std) of ``top`` (a pre-ReLU output: relu layers write in place, so the
    forward stops before them) over the sample, 8 images at a time."""
    from magic_init.algorithm.within_layer import accumulate_channels, channel_moments
    sums = None
    for i in range(0, len(x), 8):
        net.blobs["data"].data[...] = x[i:i + 8]
        net.forward(end=top)
        sums = accumulate_channels(net.blobs[top].data, sums)
    return channel_moments(sums)


@pytest.mark.parametrize("kind", KINDS)
def test_depthwise_convolution_gets_data_driven_rows_and_normalized_outputs(kind):
    """conv(3->8) -> relu -> depthwise conv(8->8, group 8, 3x3) -> relu -> conv 1x1: every layer is
    initialized by ``kind`` (the depthwise one group by group from 9-dim patches) and its outputs
    have mean β and std 1 per channel on the sample."""
    from magic_init.algorithm.runner import SampleRunner
    net = depthwise_net()
    x = (np.random.default_rng(1).standard_normal((16, 3, 12, 12)) * 5 + 2).astype(np.float32)
    reports = WithinLayer(init=kind, beta=0.1, normalize="channel")(net, SampleRunner(net, x, 8))
    assert [(r["layer"], r["init"], r["reason"]) for r in reports] == [(n, kind, "") for n in ("conv1", "dw", "pw")]
    for name in ("conv1", "dw", "pw"):
        assert all(np.all(np.isfinite(b.data)) for b in net.params[name])
        mean, std = layer_moments(net, x, name)
        np.testing.assert_allclose(mean, 0.1, atol=0.02)
        np.testing.assert_allclose(std, 1, atol=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_constant_images_fall_back_to_gaussian_with_a_warning_and_no_nan(kind, caplog):
    """Constant images and no padding: every patch of every layer is the same (with padding, the border
    patches would differ). Each layer falls back
    to gaussian rows (warning naming it and why), no NaN, outputs at β."""
    from magic_init.algorithm.runner import SampleRunner
    net = depthwise_net(pad=0)
    x = np.full((16, 3, 12, 12), 3.0, np.float32)
    with caplog.at_level(logging.WARNING, logger="magic_init"):
        reports = WithinLayer(init=kind, beta=0.1, normalize="channel")(net, SampleRunner(net, x, 8))
    for report in reports:
        assert report["init"] == "gaussian" and "zero-variance" in report["reason"]
        assert any(r.levelname == "WARNING" and "'%s'" % report["layer"] in r.getMessage()
                   and "zero-variance" in r.getMessage() for r in caplog.records)
    for blobs in net.params.values():
        assert all(np.all(np.isfinite(b.data)) for b in blobs)
    for name in ("conv1", "dw", "pw"):
        np.testing.assert_allclose(layer_moments(net, x, name)[0], 0.1, atol=1e-4)


def test_a_constant_group_alone_gets_gaussian_rows(caplog):
    """A depthwise layer on the images, whose channel 0 is constant: group 0 falls back to gaussian
    rows (warned, in the reason), groups 1 and 2 get k-means rows."""
    pytest.importorskip("torch")
    from magic_init.algorithm.runner import SampleRunner
    from magic_init.engine import Net
    from magic_init.io.prototxt import parse_prototxt
    net = Net(parse_prototxt('input: "data" input_shape { dim: 8 dim: 3 dim: 12 dim: 12 }\n'
                             'layer { name: "dw" type: "Convolution" bottom: "data" top: "dw" '
                             'convolution_param { num_output: 3 group: 3 kernel_size: 3 } }'), seed=0)
    x = np.random.default_rng(2).standard_normal((16, 3, 12, 12)).astype(np.float32)
    x[:, 0] = 7
    with caplog.at_level(logging.WARNING, logger="magic_init"):
        report, = WithinLayer(init="kmeans")(net, SampleRunner(net, x, 8))
    assert report["init"] == "kmeans" and "1 of 3 groups (0): zero-variance" in report["reason"]
    assert "layer 'dw': 1 of 3 groups" in caplog.text
    assert np.all(np.isfinite(net.params["dw"][0].data))


@pytest.mark.parametrize("order", ["C", "F"])
def test_gaussian_drawn_into_a_weight_gives_the_same_draws_as_a_fresh_array(order):
    """``out=``: the weight itself is filled (no temporary the weight's size where it is C-contiguous
    float32), with the draws a fresh array gets from the same generator state."""
    fresh = weight_init.gaussian((6, 4, 3, 3), np.random.default_rng(7))
    weight = np.zeros((6, 4, 3, 3), np.float32, order=order)
    returned = weight_init.gaussian(weight.shape, np.random.default_rng(7), out=weight)
    np.testing.assert_array_equal(weight, fresh)
    assert (returned is weight) == (order == "C")
    assert fresh.dtype == np.float32 and abs(float(fresh.std()) - 1) < 0.3


def test_a_large_gaussian_is_drawn_in_chunks_whatever_the_threads(monkeypatch):
    """Above GAUSSIAN_CHUNK entries the chunks are filled in parallel: the same draws with one thread or
    eight, from the generator's state (reproducible per seed), distinct chunks, N(0, 1) statistics."""
    monkeypatch.setattr(weight_init, "GAUSSIAN_CHUNK", 1000)
    draws = {}
    for cpus in (1, 8):
        monkeypatch.setattr(weight_init.os, "cpu_count", lambda cpus=cpus: cpus)
        draws[cpus] = weight_init.gaussian((50, 90), np.random.default_rng(3))
    np.testing.assert_array_equal(draws[1], draws[8])
    flat = draws[1].reshape(-1)
    assert not np.array_equal(flat[:1000], flat[1000:2000])
    assert draws[1].dtype == np.float32 and abs(float(flat.mean())) < 0.05 and abs(float(flat.std()) - 1) < 0.05
    other = weight_init.gaussian((50, 90), np.random.default_rng(4))
    assert not np.array_equal(other, draws[1])
    into = np.zeros((50, 90), np.float32)
    assert weight_init.gaussian(into.shape, np.random.default_rng(3), out=into) is into
    np.testing.assert_array_equal(into, draws[1])
