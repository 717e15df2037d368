"""Column norms of an InnerProduct block gradient from its inputs and top diffs (no gradient the
size of the weights): equal to those of the explicit gradient, on numbers and through the engine."""
from __future__ import annotations

import numpy as np
import pytest

from magic_init.algorithm.rates import RateMeter, column_weight_norms, gram_column_norms


def test_gram_column_norms_equal_those_of_the_explicit_gradient():
    rng = np.random.default_rng(0)
    x, d = rng.standard_normal((16, 50)), rng.standard_normal((16, 7))
    explicit = column_weight_norms("InnerProduct", (d.T @ x).astype(np.float64), 1)
    np.testing.assert_allclose(gram_column_norms(x, d), explicit, rtol=1e-12)
    assert gram_column_norms(x, d).shape == (50,)


def test_the_engine_measures_fc_rates_without_weight_gradients():
    pytest.importorskip("torch")
    from test_algorithm_engine import tiny
    from magic_init.algorithm import build_passes
    from magic_init.algorithm.runner import SampleRunner

    x = np.random.default_rng(1).standard_normal((20, 3, 32, 32)).astype(np.float32)
    net = tiny()
    build_passes(between_layer=False, seed=2)[0](net, SampleRunner(net, x, 8))
    fc = [n for n, k in zip(net.layer_names, net.layer_types) if k == "InnerProduct"]
    assert fc
    rates = {}
    for gram in (True, False):
        meter = RateMeter(net, seed=3, definition="gradient")
        if not gram:
            meter.gram = {}
        else:
            assert sorted(meter.gram) == sorted(fc)
        rates[gram] = meter.measure(SampleRunner(net, x, 8))
        if gram:      # the fc weight gradients were never formed
            assert all(net.params[name][0]._diff is None for name in fc)
    for name in net.layer_names:
        if name in rates[True]:
            np.testing.assert_allclose(rates[True][name].col_g2, rates[False][name].col_g2, rtol=1e-5)
