"""A small limited-memory BFGS minimizer (numpy only: the package runs where SciPy is absent).

Nocedal & Wright, *Numerical Optimization* (2006), Algorithm 7.4 (the two-loop recursion for
H_k·∇f with the last ``memory`` pairs s_i = x_{i+1} − x_i, y_i = ∇f_{i+1} − ∇f_i and
H_0 = (sᵀy / yᵀy)·I), with a backtracking line search on the Armijo condition
f(x + t·p) ≤ f(x) + c·t·∇fᵀp.
"""
from __future__ import annotations

import numpy as np


def lbfgs(function, x0, max_iter=200, memory=10, first_step=0.5, stop=None, ftol=1e-4):
    """Minimize ``function`` from ``x0``.

    Args:
        function: x -> (f, ∇f), f a float and ∇f an array shaped like x.
        x0: the starting point (float array).
        max_iter: the most iterations (one line search each).
        memory: (s, y) pairs kept.
        first_step: the largest entry of the first step (no curvature known yet).
        stop: optional x -> bool, checked after every iteration; True ends the search.
        ftol: the search also ends when an iteration lowers f by less than ftol·|f| (stalled).
    Returns:
        (x, iterations): the last point and the number of iterations made.
    """
    x = np.array(x0, dtype=np.float64)
    f, g = function(x)
    pairs = []
    for iteration in range(max_iter):
        if stop is not None and stop(x):
            return x, iteration
        if not np.any(g):
            return x, iteration
        p = -_two_loop(g, pairs)
        if not pairs:
            p *= first_step / np.abs(p).max()
        slope = float(g @ p)
        if slope >= 0:                      # not a descent direction: restart from the gradient
            pairs, p = [], -g * (first_step / np.abs(g).max())
            slope = float(g @ p)
        t, accepted = 1.0, False
        for _ in range(40):
            x_new = x + t * p
            f_new, g_new = function(x_new)
            if np.isfinite(f_new) and f_new <= f + 1e-4 * t * slope:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            return x, iteration
        s, y = x_new - x, g_new - g
        if float(s @ y) > 1e-12 * float(y @ y):
            pairs = (pairs + [(s, y)])[-memory:]
        stalled = f - f_new < ftol * abs(f)
        x, f, g = x_new, f_new, g_new
        if stalled:
            return x, iteration + 1
    return x, max_iter


def _two_loop(g, pairs):
    """H·g by the two-loop recursion over ``pairs`` [(s, y)], oldest first."""
    q = g.copy()
    alphas = []
    for s, y in reversed(pairs):
        rho = 1.0 / float(y @ s)
        a = rho * float(s @ q)
        q -= a * y
        alphas.append((rho, a))
    if pairs:
        s, y = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y), (rho, a) in zip(pairs, reversed(alphas)):
        b = rho * float(y @ q)
        q += s * (a - b)
    return q
