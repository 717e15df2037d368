"""The L-BFGS minimizer (algorithm/optimize.py), on functions whose minimum is known."""
from __future__ import annotations

import numpy as np

from magic_init.algorithm.optimize import lbfgs


def quadratic(matrix, target):
    def function(x):
        r = x - target
        return float(r @ matrix @ r), 2.0 * matrix @ r
    return function


def test_ill_conditioned_quadratic_reaches_its_minimum():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    matrix = q @ np.diag(np.logspace(-1, 1, 30)) @ q.T
    target = rng.standard_normal(30)
    near = lambda x: np.abs(x - target).max() < 1e-6          # noqa: E731
    x, iterations = lbfgs(quadratic(matrix, target), np.zeros(30), max_iter=500, ftol=0, stop=near)
    assert near(x) and iterations < 100           # gradient descent needs about 1,000 at condition 100


def test_rosenbrock_valley():
    def rosenbrock(x):
        a, b = x
        value = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        return value, np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])

    x, _ = lbfgs(rosenbrock, np.array([-1.2, 1.0]), max_iter=1000, ftol=0)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-4)


def test_stop_ends_the_search_and_a_stall_too():
    function = quadratic(np.eye(3), np.ones(3))
    seen = []
    x, iterations = lbfgs(function, np.zeros(3), stop=lambda x: seen.append(x.copy()) or len(seen) > 2)
    assert iterations == 2 and np.array_equal(x, seen[-1])
    flat = lambda x: (1.0 + 1e-9 * float(x @ x), 2e-9 * x)     # noqa: E731: barely moves
    _, iterations = lbfgs(flat, np.ones(4), max_iter=100, ftol=1e-4)
    assert iterations == 1


def test_a_non_finite_trial_point_is_stepped_back_from():
    def guarded(x):                         # infinite beyond |x| > 2: the first trial step must shrink
        if np.abs(x).max() > 2:
            return np.inf, np.zeros_like(x)
        return float((x - 1.5) @ (x - 1.5)), 2 * (x - 1.5)

    x, _ = lbfgs(guarded, np.zeros(2), first_step=10.0, ftol=0)
    np.testing.assert_allclose(x, [1.5, 1.5], atol=1e-6)
