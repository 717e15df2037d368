"""Pure-function tests of magic_init.algorithm.weight_init (paper §3.3)."""
from __future__ import annotations

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
