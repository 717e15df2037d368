"""Weight initializations of paper §3.3, as pure numpy functions of a patch matrix.

Every function takes ``patches`` X (n × d: n input vectors of the layer, one per row, in the
column order of the layer's weight matrix) and returns W (m × d), the weight rows of m outputs.
Scale does not matter: Algorithm 1 (within_layer) rescales every row afterwards.

Whitening (Coates & Ng 2012): with centered X and covariance Σ = XᵀX/n = V diag(λ) Vᵀ, the
whitening map is P = diag(λ+ε)^(-1/2) Vᵀ (PCA) or Vᵀ-rotated back, Z = V P (ZCA).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from magic_init.choices import DATA_DRIVEN_KINDS, WHITENING_RANK, check_init
from magic_init.timing import timed

log = logging.getLogger(__name__)

#: Relative eigenvalue below which a direction is treated as absent from the sample.
EIGEN_FLOOR = 1e-6
#: Default whitening regularization ε, relative to the mean eigenvalue (see ``whitening``).
WHITENING_EPS = 1e-3
#: Total patch variance below this fraction of the patches' mean square: the sample is constant.
ZERO_VARIANCE = 1e-10


class DegenerateSample(ValueError):
    """The patches cannot drive a data-driven init (constant sample, nothing to whiten)."""


@timed("sample check")
def sample_problem(patches, m):
    """Why a data-driven init of m rows cannot use ``patches`` (n × d), or None when it can.

    Too few rows (n < m: k-means and random patches need m distinct samples) or non-finite values.
    Zero variance (every patch the same: no direction to whiten, and every row would give a constant
    output) is found by ``whitening`` from the covariance it computes anyway (``DegenerateSample``);
    a rank-deficient but nonzero covariance is fine: the spanned directions are whitened."""
    x = np.asarray(patches)
    n, d = x.shape
    if n < max(m, 2):
        return "%d sample rows for %d outputs (too few samples)" % (n, m)
    if d == 0:
        return "empty patches (no input dimension)"
    if not np.all(np.isfinite(x)):
        return "non-finite patches"
    return None


def _check_variance(total_variance, mean):
    """Raise DegenerateSample when the total variance tr Σ is at most ZERO_VARIANCE of the patches'
    mean square tr Σ + ‖μ‖² (a constant sample); a non-finite one is left to the caller's check."""
    square = total_variance + float(mean.dot(mean))
    if np.isfinite(square) and not total_variance > ZERO_VARIANCE * square:
        raise DegenerateSample("zero-variance patches (constant on the sample)")


#: Weights of at least this many entries are drawn in chunks of this size, each from its own generator
#: seeded from ``rng``, on as many threads as there are CPUs (numpy fills without the GIL). The draws
#: depend on the chunking only, not on the number of threads.
GAUSSIAN_CHUNK = 1 << 22


def gaussian(shape, rng, out=None):
    """W ~ N(0, I) of the given shape (Algorithm 1, first line), float32.

    An array of fewer than ``GAUSSIAN_CHUNK`` entries is one draw from ``rng``; a larger one (a fully
    connected layer) is drawn chunk by chunk in parallel, chunk c from a generator seeded with the
    c-th of the seeds drawn from ``rng`` (``_parallel_normal``).

    Args:
        shape: the weight's shape.
        rng: a numpy Generator.
        out: a C-contiguous float32 array of that shape to draw into (no temporary the size of the
            weights; the same draws as without it), or None.

    Returns:
        The drawn array (``out`` when given and usable)."""
    usable = out is not None and out.dtype == np.float32 and out.flags.c_contiguous and out.shape == tuple(shape)
    target = out if usable else np.empty(shape, dtype=np.float32)
    if target.size < GAUSSIAN_CHUNK:
        rng.standard_normal(dtype=np.float32, out=target)
    else:
        _parallel_normal(target.reshape(-1), rng)
    if out is not None and not usable:
        out[...] = target
    return target


def _parallel_normal(flat, rng):
    """Fill the 1-D float32 ``flat`` with N(0, 1) draws, chunk by chunk on a thread pool."""
    starts = range(0, flat.size, GAUSSIAN_CHUNK)
    seeds = rng.integers(0, 2 ** 63 - 1, size=len(starts), dtype=np.int64)

    def fill(job):
        start, seed = job
        np.random.default_rng(int(seed)).standard_normal(dtype=np.float32, out=flat[start:start + GAUSSIAN_CHUNK])
    with ThreadPoolExecutor(max_workers=max(1, min(len(starts), os.cpu_count() or 1))) as pool:
        list(pool.map(fill, zip(starts, seeds)))


def _orthonormal(y):
    """An orthonormal basis of span(y) (float64): Cholesky-QR, Q = Y·L⁻ᵀ with LLᵀ = YᵀY (one k×k
    Cholesky and inverse, then one product), falling back to the Gram eigen-decomposition when YᵀY is
    singular."""
    y = np.asarray(y, dtype=np.float64)
    gram = y.T.dot(y)
    try:
        lower = np.linalg.cholesky(gram + 1e-12 * np.trace(gram) * np.eye(len(gram)))
        basis = y.dot(np.linalg.inv(lower).T)
        if np.all(np.isfinite(basis)):
            return basis
    except np.linalg.LinAlgError:
        pass
    values, vectors = np.linalg.eigh(gram)
    keep = values > 1e-10 * values.max()
    return y.dot(vectors[:, keep] / np.sqrt(values[keep]))


#: Extra columns of the randomized subspace iteration (``_top_eigen``); it needs k + this < d.
_OVERSAMPLE = 16


def _top_eigen(cov, k, iterations=2):
    """Leading k eigenpairs of a symmetric PSD matrix Σ by seeded randomized subspace iteration
    (Halko et al. 2011): O(d²k) instead of eigh's O(d³).

    The products Σ·Q run in float32 (Σ is the float32 patches' sum of products), the bases are
    orthonormalized in float64; the last step diagonalizes QᵀΣQ (Rayleigh-Ritz), so the whitened
    outputs are white to float32 precision; the directions are the approximately leading ones.

    Args:
        cov: (d, d) symmetric positive semi-definite matrix.
        k: eigenpairs wanted (k + ``_OVERSAMPLE`` < d).
        iterations: subspace iterations after the first sketch.

    Returns:
        (values, vectors): k eigenvalues, descending, and the (d, k) float64 orthonormal vectors."""
    single = np.asarray(cov, dtype=np.float32)
    start = np.random.default_rng(0).standard_normal((len(single), k + _OVERSAMPLE), dtype=np.float32)
    basis = _orthonormal(single.dot(start))
    for _ in range(iterations):
        basis = _orthonormal(single.dot(basis.astype(np.float32)))
    projected = basis.T.dot(single.dot(basis.astype(np.float32)).astype(np.float64))
    values, small = np.linalg.eigh((projected + projected.T) / 2)
    order = np.argsort(values)[::-1][:k]
    return values[order], basis.dot(small[:, order])


@timed("whitening")
def whitening(patches, eps=WHITENING_EPS, rank=None):
    """Eigen-decomposition of the patch covariance: (mean μ, eigenvalues λ descending, vectors V).

    Σ = (X-μ)ᵀ(X-μ)/n; directions with λ < EIGEN_FLOOR·max λ are dropped (rank-deficient samples).
    With ``rank`` < d/2 only the leading ``rank`` directions are computed (randomized).
    ``eps`` (relative to the mean eigenvalue) regularizes 1/sqrt(λ) as in Coates & Ng.
    Raises DegenerateSample for a constant sample (tr Σ ≤ ZERO_VARIANCE·(tr Σ + ‖μ‖²)) or a
    non-finite covariance.
    """
    x = np.asarray(patches, dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    centered = x - mean.astype(np.float32)
    n, d = centered.shape
    if n < d:                                    # few wide rows: thin SVD, O(n²d) instead of O(d³)
        _, singular, vt = np.linalg.svd(centered.astype(np.float64), full_matrices=False)
        values, vectors = singular ** 2 / n, vt.T
        _check_variance(float(values.sum()), mean)
    else:
        product = centered.T.dot(centered)          # n·Σ, float32
        _check_variance(float(np.trace(product, dtype=np.float64)) / n, mean)
        if rank is not None and rank < d // 2 and rank + _OVERSAMPLE < d:
            values, vectors = _top_eigen(product, rank)
            values = values / n
        else:
            values, vectors = np.linalg.eigh(product.astype(np.float64) / n)
            order = np.argsort(values)[::-1]
            values, vectors = values[order], vectors[:, order]
    if not np.all(np.isfinite(values)):
        raise DegenerateSample("non-finite patch covariance")
    keep = values > EIGEN_FLOOR * max(values[0], 1e-30) if len(values) else values > 0
    values, vectors = values[keep], vectors[:, keep]
    if not len(values):
        raise DegenerateSample("zero-variance patches (nothing to whiten)")
    return mean, values + eps * values.mean(), vectors


def pca(patches, m, rng, eps=WHITENING_EPS):
    """First m principal components scaled by 1/sqrt(λ): W = diag(λ_1..m)^(-1/2) V_{1..m}ᵀ.

    The outputs W(x-μ) are white and decorrelated on the sample (Cov = I). When the sample
    spans fewer than m directions, the remaining rows are random combinations of the white
    directions (logged).
    """
    _, values, vectors = whitening(patches, eps, rank=m)
    rows = (vectors / np.sqrt(values)).T
    if len(rows) < m:
        log.info("pca: sample spans %d directions, %d outputs: adding random white rows", len(rows), m)
        extra = rng.standard_normal((m - len(rows), len(rows))).dot(rows) / np.sqrt(len(rows))
        rows = np.concatenate([rows, extra])
    return rows[:m].astype(np.float32)


def zca_matrix(patches, eps=WHITENING_EPS):
    """The symmetric ZCA whitening matrix Z = V diag(λ)^(-1/2) Vᵀ (d × d)."""
    _, values, vectors = whitening(patches, eps)
    return (vectors / np.sqrt(values)).dot(vectors.T)


def zca(patches, m, rng, eps=WHITENING_EPS):
    """m rows of the ZCA matrix Z: each row is a whitening filter centered on one input dimension.

    With m = d that is Z itself (symmetric); with m < d a seeded random subset of rows; with
    m > d the rows repeat cyclically in a seeded order (logged: duplicated outputs).
    """
    z = zca_matrix(patches, eps)
    d = len(z)
    if m > d:
        log.info("zca: %d outputs from %d input dimensions: rows repeat", m, d)
    rows = np.arange(d) if m == d else np.concatenate([rng.permutation(d) for _ in range(-(-m // d))])[:m]
    return z[np.sort(rows) if m <= d else rows].astype(np.float32)


def _white_unit_rows(patches, eps, rank):
    """Whitened patches, each normalized to unit length, and the map P back to input space.

    Only the leading ``rank`` principal directions are whitened (``WHITENING_RANK``·m for m clusters):
    the rest of the spectrum is mostly noise and would cost O(d³). The whitened rows are
    (x−μ)·P = x·P − μ·P (no centered copy of the patches)."""
    mean, values, vectors = whitening(patches, eps, rank)
    project = vectors / np.sqrt(values)              # d × k: x ↦ (x-μ)·project is white
    white = np.asarray(patches, dtype=np.float32).dot(project.astype(np.float32))
    white -= mean.dot(project).astype(np.float32)
    norms = np.linalg.norm(white, axis=1, keepdims=True)
    return (white / np.maximum(norms, 1e-12)).astype(np.float32), project


#: Spherical k-means steps at most; each costs a full n × d × k product. The mean similarity
#: Σ max_c ⟨x, c⟩ / n barely moves after this many, and k-means inits capped here train as well as
#: with three times as many (docs/RESULTS.md 0b, docs/TRAINING.md session 9).
KMEANS_ITERATIONS = 10


@timed("k-means")
def spherical_kmeans(points, k, rng, iterations=KMEANS_ITERATIONS):
    """Spherical k-means (Coates & Ng 2012) on unit-norm rows: centroids maximize Σ max_c ⟨x, c⟩.

    Seeded init from k distinct points; each step assigns x to argmax_c ⟨x, c⟩ and sets
    c = normalize(Σ assigned x). An empty cluster is re-seeded with the point worst served by
    its centroid. Returns unit-norm centroids (k × d), float32.
    """
    n = len(points)
    centroids = points[rng.choice(n, size=k, replace=False)].copy()
    labels = None
    for _ in range(iterations):
        similarity = points.dot(centroids.T)
        new_labels = similarity.argmax(axis=1)
        if labels is not None and np.array_equal(labels, new_labels):
            break
        labels = new_labels
        sums, counts = _cluster_sums(points, labels, k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            worst = np.argsort(similarity[np.arange(n), labels])
            for slot, cluster in enumerate(empty):
                sums[cluster] = points[worst[slot]]
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


def _cluster_sums(points, labels, k):
    """Σ of the points of each cluster and the cluster sizes: one (k × n) indicator matrix times the
    points (one matrix product, as fast as the assignment step's)."""
    counts = np.bincount(labels, minlength=k)
    indicator = np.zeros((k, len(points)), dtype=points.dtype)
    indicator[labels, np.arange(len(points))] = 1
    return indicator.dot(points), counts


def _rank(m, rank):
    """Directions to whiten for m outputs: ``rank``·m, at least m."""
    return max(m, int(round(rank * m)))


def kmeans(patches, m, rng, eps=WHITENING_EPS, rank=WHITENING_RANK):
    """Spherical k-means on whitened, length-normalized patches; centroid c ↦ weight row Pc.

    The output of row i on x is ⟨c_i, white(x)⟩, the similarity to centroid i (paper §3.3).
    ``rank``: the leading ``rank``·m principal directions are whitened (``WHITENING_RANK``).
    """
    white, project = _white_unit_rows(patches, eps, _rank(m, rank))
    centroids = spherical_kmeans(white, m, rng)
    return centroids.dot(project.T).astype(np.float32)


def rand(patches, m, rng, eps=WHITENING_EPS, rank=WHITENING_RANK):
    """m random whitened, length-normalized sample patches used as centroids (the original's ``rand``);
    ``rank`` as in ``kmeans``."""
    white, project = _white_unit_rows(patches, eps, _rank(m, rank))
    chosen = white[rng.choice(len(white), size=m, replace=False)]
    return chosen.dot(project.T).astype(np.float32)


_DATA_DRIVEN = {"pca": pca, "zca": zca, "kmeans": kmeans, "rand": rand}
#: The inits that whiten a chosen number of leading directions (``rank``); pca whitens m, zca all.
_RANKED = ("kmeans", "rand")


def data_driven(kind, patches, m, rng, eps=WHITENING_EPS, rank=WHITENING_RANK):
    """W (m × d) from the patches by ``kind``, whitening regularized by ``eps`` (and, for kmeans and rand,
    of the leading ``rank``·m directions); None when the sample cannot drive it (``sample_problem``: too
    few rows, n < m; constant or non-finite patches) or the rows come out non-finite.
    ``data_driven_or_reason`` says why."""
    return data_driven_or_reason(kind, patches, m, rng, eps, rank)[0]


def data_driven_or_reason(kind, patches, m, rng, eps=WHITENING_EPS, rank=WHITENING_RANK):
    """(W, "") as ``data_driven``, or (None, why the sample cannot drive a ``kind`` init).

    The checks draw nothing from ``rng``: a usable sample gives the same rows as before them."""
    if kind == "gaussian":
        raise ValueError("'gaussian' is not a data-driven init: use weight_init.gaussian(shape, rng)")
    check_init(kind, DATA_DRIVEN_KINDS)
    problem = sample_problem(patches, m)
    if problem:
        return None, problem
    try:
        with np.errstate(all="ignore"):
            extra = {"rank": rank} if kind in _RANKED else {}
            rows = _DATA_DRIVEN[kind](patches, m, rng, eps=eps, **extra)
    except (DegenerateSample, np.linalg.LinAlgError) as error:
        return None, str(error) or type(error).__name__
    if not np.all(np.isfinite(rows)):
        return None, "non-finite %s rows (numerically degenerate covariance)" % kind
    if not np.any(rows):
        return None, "all-zero %s rows (degenerate sample)" % kind
    return rows, ""
