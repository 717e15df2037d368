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
    initialize(net, sample, batch_size=8, between_layer=False, beta=0.1, normalize="channel")
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


# --- stats without --load: the prototxt's own fillers (paper Fig. 1's baselines) -----------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "models", "tiny.prototxt")


def _affine_fillers(net_param):
    """``{layer: (weight filler, bias filler)}`` as the prototxt states them."""
    from magic_init.load import AFFINE_TYPES

    found = {}
    for layer in net_param.layer:
        if layer.type in AFFINE_TYPES:
            p = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
            found[layer.name] = (p.weight_filler, p.bias_filler)
    return found


def _filled_net(prototxt=TINY, seed=0, fillers=True):
    pytest.importorskip("torch")
    from magic_init import load

    model = load.read_model(prototxt)
    return model, load.build_net(model, backend="torch", batch_size=4, fillers=fillers, seed=seed)


def test_without_load_the_net_has_the_prototxt_fillers_values_seeded():
    model, net = _filled_net(seed=3)
    stated = _affine_fillers(model.net)
    assert set(stated) == {"conv1", "conv2", "fc3", "fc4"}
    for name, (weight, bias) in stated.items():
        w, b = net.params[name][0].data, net.params[name][1].data
        assert weight.type == "gaussian" and bias.type == "constant"
        # N(0, σ²) with σ from the prototxt: sample std within 5 standard errors of σ (n >= 500 values)
        assert w.size >= 500 and abs(w.std() - weight.std) < 5 * weight.std / np.sqrt(2 * w.size)
        assert abs(w.mean()) < 5 * weight.std / np.sqrt(w.size)
        np.testing.assert_array_equal(b, np.full_like(b, bias.value))
    _, same = _filled_net(seed=3)
    _, other = _filled_net(seed=4)
    np.testing.assert_array_equal(same.params["conv1"][0].data, net.params["conv1"][0].data)
    assert not np.array_equal(other.params["conv1"][0].data, net.params["conv1"][0].data)
    _, zeroed = _filled_net(fillers=False)       # init's net: Algorithm 1 starts from zero
    assert not any(np.any(blobs[0].data) for blobs in zeroed.params.values())


def test_stats_of_the_filled_net_are_non_zero_and_finite():
    _, net = _filled_net()
    sample = (np.random.default_rng(2).standard_normal((8, 3, 32, 32)) * 50).astype(np.float32)
    stats = measure(net, sample, batch_size=4)
    for layer in stats["layers"]:
        for key in ("act_std", "rate_mean", "orig_rate_mean", "rate_cv", "orig_rate_cv"):
            assert np.isfinite(layer[key]) and layer[key] > 0, (layer["layer"], key, layer[key])
    # Gaussian σ = 0.01 everywhere: the layers do not learn at one rate (the paper's Fig. 1a)
    assert stats["summary"]["orig_rate_spread"] > 2 and stats["summary"]["rate_spread"] > 2
    json.loads(report.to_json(stats), parse_constant=_refuse)


def _refuse(constant):
    raise ValueError("bare %s in the JSON" % constant)


def test_a_layer_without_weight_filler_is_zero_named_and_its_rate_is_null(tmp_path):
    from magic_init import load

    text = open(TINY).read()
    start = text.index('name: "fc3"')
    filler = text.index("weight_filler", start)
    end = text.index("}", filler) + 1
    path = tmp_path / "nofill.prototxt"
    path.write_text(text[:filler] + text[end:])
    model, net = _filled_net(str(path))
    assert not _affine_fillers(model.net)["fc3"][0].ListFields()        # really no weight_filler
    assert load.zero_filled_layers(model, net) == [("fc3", "no weight_filler")]
    sample = (np.random.default_rng(2).standard_normal((8, 3, 32, 32)) * 50).astype(np.float32)
    stats = measure(net, sample, batch_size=4)
    fc3 = [l for l in stats["layers"] if l["layer"] == "fc3"][0]
    assert fc3["zero_weights"] and fc3["rate_mean"] is None and fc3["orig_rate_cv"] is None
    decoded = json.loads(report.to_json(stats), parse_constant=_refuse)
    assert [l["orig_rate_mean"] for l in decoded["layers"] if l["layer"] == "fc3"] == [None]
    row = [line for line in report.table(stats).splitlines() if line.startswith("fc3 ")][0]
    assert len(row.split()) == 4        # layer and three activation columns; the four rate cells blank


@pytest.mark.caffe
def test_real_caffe_fills_the_prototxt_fillers_seeded(caffe_env):
    """Real Caffe's fillers (pycaffe backend, fillers=True): seeded by --seed, σ as the prototxt says,
    and stats without --load measures non-zero rates with valid JSON."""
    code = r'''
import json, sys
import numpy as np
from magic_init import load
model = load.read_model("models/tiny.prototxt")
nets = [load.build_net(model, backend="caffe", batch_size=2, fillers=True, seed=s) for s in (5, 5, 6)]
w = [n.params["conv2"][0].data.copy() for n in nets]
print(json.dumps({"std": float(w[0].std()), "size": int(w[0].size), "same": bool(np.array_equal(w[0], w[1])),
                  "other": bool(np.array_equal(w[0], w[2]))}))
'''
    found = json.loads(caffe_env.python(code).stdout.strip().splitlines()[-1])
    stated = _affine_fillers(__import__("magic_init").read_model(TINY).net)["conv2"][0].std
    assert found["same"] and not found["other"]
    assert abs(found["std"] - stated) < 5 * stated / np.sqrt(2 * found["size"])
    host, inside = caffe_env.tmpdir()
    caffe_env.run("python3", "-m", "magic_init", "stats", "models/tiny.prototxt", "--backend", "caffe",
                  "--data", "examples/images/list.txt", "--num-images", "4", "--batch-size", "2",
                  "--json", inside + "/st.json", "-q")
    stats = json.loads((host / "st.json").read_text(), parse_constant=_refuse)
    assert all(l["orig_rate_mean"] > 0 and l["rate_mean"] > 0 for l in stats["layers"])
