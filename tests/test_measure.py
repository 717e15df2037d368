"""Statistics (magic_init.measure_stat) and their rendering (magic_init.report)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "algorithm"))
from fakenet import small_convnet  # noqa: E402

from magic_init import report  # noqa: E402
from magic_init.algorithm import initialize  # noqa: E402
from magic_init.errors import MagicInitError  # noqa: E402
from magic_init.measure_stat import coefficient_of_variation, measure, original_rates  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return (np.random.default_rng(1).standard_normal((32, 3, 12, 12)) * 5).astype(np.float32)


def test_stats_after_initialization_show_beta_unit_std_and_no_spread(sample):
    net = small_convnet()
    initialize(net, sample, batch_size=8, between_layer=False, beta=0.1)
    stats = measure(net, sample, batch_size=8)
    assert [l["layer"] for l in stats["layers"]] == ["conv1", "conv2", "fc3", "fc4"]
    for layer in stats["layers"]:
        assert layer["act_mean"] == pytest.approx(0.1, abs=1e-3)
        assert layer["act_std"] == pytest.approx(1.0, abs=1e-3)
        assert layer["act_cv"] < 1e-3
        assert layer["rate_mean"] > 0 and layer["orig_rate_mean"] > 0
    assert stats["images"] == 32 and stats["summary"]["rate_spread"] >= 1


def test_gaussian_init_has_a_large_rate_spread_that_rescaling_removes(sample):
    net = small_convnet()
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        blobs[0].data[...] = rng.standard_normal(blobs[0].data.shape) * 0.01
    net.params["conv1"][0].data[...] *= 100
    before = measure(net, sample, batch_size=8)["summary"]
    initialize(net, sample, batch_size=8, max_iter=40, layers=[])     # weights kept: between-layer only
    after = measure(net, sample, batch_size=8)["summary"]
    assert before["rate_spread"] > 20 and after["rate_spread"] < 1.3    # η noise, 32 images
    assert before["orig_rate_spread"] > 20 and after["orig_rate_spread"] < 2


def test_original_rate_definition_by_hand():
    param_sq = np.zeros((2, 3, 1, 1))
    param_sq[:, 0] = 4.0
    param_sq[:, 1] = 1.0
    weight = np.ones((2, 3, 1, 1))
    np.testing.assert_allclose(original_rates(param_sq, weight), [2.0, 1.0, 0.0])
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)


def test_table_json_and_png(sample, tmp_path):
    net = small_convnet()
    initialize(net, sample, batch_size=8)
    stats = measure(net, sample, batch_size=8)
    text = report.table(stats)
    assert text.splitlines()[0].split()[:3] == ["layer", "act", "mean"] and "fc4" in text
    decoded = json.loads(report.to_json(stats))
    assert decoded["layers"][0]["layer"] == "conv1" and "channel_std" not in decoded["layers"][0]
    assert "channel_std" in json.loads(report.to_json(stats, per_channel=True))["layers"][0]
    path = str(tmp_path / "fig1.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(MagicInitError, match="matplotlib"):
            report.write_png(stats, path)
    else:
        report.write_png(stats, path)
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_package_api_measure_stays_a_function_after_the_module_is_imported():
    import magic_init
    import magic_init.measure_stat  # noqa: F401  (importing a submodule sets a package attribute)

    assert callable(magic_init.measure) and magic_init.measure is magic_init.measure_stat.measure
