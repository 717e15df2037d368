"""``magic_init fold-bn``: BatchNorm (and Scale) folded into the affine layer before it.

The folded net must compute the original's TEST-phase function: checked on a tiny net with the
built-in engine, and on ResNet-50 and MobileNet v1 (random weights, random BatchNorm statistics,
a moving-average factor other than 1) with real Caffe as the judge.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from magic_init.fold_bn import fold_batchnorm
from magic_init.io import read_caffemodel, read_prototxt, write_caffemodel
from magic_init.proto import caffe_pb2

REPO = Path(__file__).resolve().parent.parent
RESNET50 = "resnet__ResNet-50-deploy.prototxt"
MOBILENET = "mobilenet__mobilenet_deploy.prototxt"
TOLERANCE = 1e-5

TINY = """
name: "tiny_bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 5 kernel_size: 3 bias_term: false } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2_bn" batch_norm_param { eps: 0.001 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv2_bn" top: "fc" inner_product_param { num_output: 3 } }
"""

# bn_pool follows a Pooling layer; conv_b's output is also read by the Eltwise: both are kept.
# conv_c -> bn_c (factor 0) -> scale_c without bias, new top names, is folded.
KEPT = """
name: "kept_bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "bn_pool" type: "BatchNorm" bottom: "pool" top: "pool" }
layer { name: "conv_b" type: "Convolution" bottom: "pool" top: "conv_b"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "bn_b" type: "BatchNorm" bottom: "conv_b" top: "bn_b" }
layer { name: "scale_b" type: "Scale" bottom: "bn_b" top: "bn_b" }
layer { name: "sum" type: "Eltwise" bottom: "bn_b" bottom: "conv_b" top: "sum" }
layer { name: "conv_c" type: "Convolution" bottom: "sum" top: "conv_c"
        convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "bn_c" type: "BatchNorm" bottom: "conv_c" top: "bn_c" }
layer { name: "scale_c" type: "Scale" bottom: "bn_c" top: "scale_c" }
layer { name: "fc" type: "InnerProduct" bottom: "scale_c" top: "fc" inner_product_param { num_output: 4 } }
"""


def parse(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def random_weights(net_param, rng, zero_factor=()):
    """He-scaled affine weights; BatchNorm stored as (factor·μ, factor·σ², factor) with random
    positive variances and factor 0.37 (0 for ``zero_factor``); Scale γ in [0.5, 1.5], β small."""
    from magic_init.engine import Net

    net = Net(net_param, input_shapes=None)
    weights = {}
    for name, blobs in net.params.items():
        kind = next(layer.type for layer in net_param.layer if layer.name == name)
        shapes = [b.data.shape for b in blobs]
        if kind == "BatchNorm":
            c = shapes[0][0]
            factor = 0.0 if name in zero_factor else 0.37
            weights[name] = [rng.normal(0, 0.5, c) * factor, rng.uniform(0.2, 3.0, c) * factor,
                             np.array([factor])]
        elif kind == "Scale":
            weights[name] = [rng.uniform(0.5, 1.5, shapes[0])] + [rng.normal(0, 0.2, s) for s in shapes[1:]]
        else:
            fan_in = np.prod(shapes[0][1:])
            weights[name] = [rng.normal(0, np.sqrt(2.0 / fan_in), shapes[0])] + \
                            [rng.normal(0, 0.1, s) for s in shapes[1:]]
    return {name: [np.asarray(a, np.float32) for a in arrays] for name, arrays in weights.items()}


def engine_output(net_param, weights, x, blob):
    import magic_init
    from magic_init.load import Model

    model = Model("<test>", net_param, weights)
    net = magic_init.build_net(model, backend="torch", batch_size=len(x))
    net.blobs["data"].data[...] = x
    net.forward()
    return np.asarray(net.blobs[blob].data, np.float64).copy()


def relative_error(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_folded_tiny_net_computes_the_same_function_on_the_engine():
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    net = parse(TINY)
    weights = random_weights(net, rng)
    result = fold_batchnorm(net, weights)
    assert [(f.affine, f.batchnorm, f.scale) for f in result.folded] == [("conv1", "bn1", "scale1"),
                                                                          ("conv2", "bn2", None)]
    assert result.kept == []
    types = [layer.type for layer in result.net.layer]
    assert "BatchNorm" not in types and "Scale" not in types
    conv2 = next(layer for layer in result.net.layer if layer.name == "conv2")
    assert conv2.convolution_param.bias_term and list(conv2.top) == ["conv2_bn"]
    assert [a.shape for a in result.weights["conv2"]] == [(5, 4, 3, 3), (5,)]
    assert set(result.weights) == {"conv1", "conv2", "fc"}
    assert [layer.name for layer in net.layer].count("bn1") == 1          # the input is not modified
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    before = engine_output(net, weights, x, "fc")
    after = engine_output(result.net, result.weights, x, "fc")
    assert np.abs(before).max() > 1e-2
    assert relative_error(before, after) < TOLERANCE


def test_unfoldable_batchnorm_is_kept_and_factor_zero_follows_caffe(caplog):
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    net = parse(KEPT)
    weights = random_weights(net, rng, zero_factor=("bn_c",))
    with caplog.at_level("WARNING", logger="magic_init"):
        result = fold_batchnorm(net, weights)
    assert [(f.affine, f.batchnorm, f.scale) for f in result.folded] == [("conv_c", "bn_c", "scale_c")]
    kept = dict(result.kept)
    assert list(kept) == ["bn_pool", "bn_b"]
    assert "comes from layer 'pool' (Pooling)" in kept["bn_pool"]
    assert "also read by 'sum'" in kept["bn_b"]
    assert "BatchNorm 'bn_b' kept" in caplog.text
    assert [layer.name for layer in result.net.layer if layer.type in ("BatchNorm", "Scale")] == \
        ["bn_pool", "bn_b", "scale_b"]
    # factor 0: μ = σ² = 0, so conv_c is scaled by γ / sqrt(eps) and its bias by the same
    k = weights["scale_c"][0].astype(np.float64) / np.sqrt(1e-5)
    np.testing.assert_allclose(result.weights["conv_c"][1], k * weights["conv_c"][1], rtol=1e-6)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = engine_output(net, weights, x, "fc")
    after = engine_output(result.net, result.weights, x, "fc")
    assert relative_error(before, after) < TOLERANCE


def test_inner_product_transpose_and_deconvolution_groups():
    """The per-channel factor lands on the right axis of the weights (checked against numpy)."""
    rng = np.random.default_rng(2)
    net = parse("""
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
            inner_product_param { num_output: 3 transpose: true } }
    layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "ip" }
    layer { name: "img" type: "Input" top: "img" input_param { shape { dim: 1 dim: 4 dim: 3 dim: 3 } } }
    layer { name: "dc" type: "Deconvolution" bottom: "img" top: "dc"
            convolution_param { num_output: 6 kernel_size: 2 group: 2 bias_term: false } }
    layer { name: "bn_dc" type: "BatchNorm" bottom: "dc" top: "dc" }
    """)
    weights = {"ip": [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)],
               "dc": [rng.standard_normal((4, 3, 2, 2)).astype(np.float32)]}
    for bn, c in (("bn", 3), ("bn_dc", 6)):
        weights[bn] = [rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32),
                       np.array([2.0], np.float32)]
    result = fold_batchnorm(net, weights)
    assert len(result.folded) == 2
    k_ip = 1 / np.sqrt(weights["bn"][1] / 2 + 1e-5)
    np.testing.assert_allclose(result.weights["ip"][0], weights["ip"][0] * k_ip[None, :], rtol=1e-6)
    k_dc = 1 / np.sqrt(weights["bn_dc"][1] / 2 + 1e-5)
    expected = weights["dc"][0].copy()
    for i in range(4):                      # input channel i belongs to group i // 2: outputs (i // 2) * 3 + j
        for j in range(3):
            expected[i, j] *= k_dc[(i // 2) * 3 + j]
    np.testing.assert_allclose(result.weights["dc"][0], expected, rtol=1e-6)
    np.testing.assert_allclose(result.weights["dc"][1], -k_dc * weights["bn_dc"][0] / 2, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- CLI

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "magic_init", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=REPO)


def tiny_files(folder):
    net = parse(TINY)
    proto, model = folder / "tiny.prototxt", folder / "tiny.caffemodel"
    proto.write_text(TINY)
    rng = np.random.default_rng(3)
    weights = {"conv1": [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)],
               "bn1": [rng.standard_normal(4), rng.uniform(0.5, 2, 4), np.ones(1)],
               "scale1": [rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)],
               "conv2": [rng.standard_normal((5, 4, 3, 3))],
               "bn2": [rng.standard_normal(5), rng.uniform(0.5, 2, 5), np.ones(1)],
               "fc": [rng.standard_normal((3, 5 * 5 * 5)), rng.standard_normal(3)]}
    write_caffemodel(str(model), net, {k: [np.asarray(a, np.float32) for a in v] for k, v in weights.items()})
    return proto, model


def test_cli_writes_a_batchnorm_free_net(tmp_path):
    proto, model = tiny_files(tmp_path)
    result = run_cli("fold-bn", proto, model, tmp_path / "out.prototxt", tmp_path / "out.caffemodel")
    assert result.returncode == 0, result.stderr
    assert "folded 2 BatchNorm layer(s)" in result.stderr
    out = read_prototxt(str(tmp_path / "out.prototxt"))
    assert [layer.name for layer in out.layer] == ["data", "conv1", "relu1", "conv2", "fc"]
    weights = read_caffemodel(str(tmp_path / "out.caffemodel")).weights
    assert sorted(name for name, arrays in weights.items() if arrays) == ["conv1", "conv2", "fc"]


def test_cli_bad_input_is_one_line_and_inputs_are_never_overwritten(tmp_path):
    proto, model = tiny_files(tmp_path)
    outputs = (tmp_path / "o.prototxt", tmp_path / "o.caffemodel")
    result = run_cli("fold-bn", tmp_path / "missing.prototxt", model, *outputs)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "missing.prototxt" in result.stderr and not (tmp_path / "o.caffemodel").exists()
    before = {p: p.read_bytes() for p in (proto, model)}
    for outputs in ((proto, tmp_path / "o.caffemodel"), (tmp_path / "o.prototxt", model),
                    (tmp_path / "o.prototxt", proto)):
        result = run_cli("fold-bn", proto, model, *outputs)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("magic_init: error:") and result.stderr.count("\n") == 1, result.stderr
        assert "refusing to overwrite an input" in result.stderr
    assert {p: p.read_bytes() for p in (proto, model)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.caffemodel", "tiny.prototxt"]
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\x08\xff\xff")
    result = run_cli("fold-bn", proto, garbage, tmp_path / "o.prototxt", tmp_path / "o.caffemodel")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "o.prototxt").exists() and not (tmp_path / "o.caffemodel").exists()


# ----------------------------------------------------------------------------- real Caffe

RANDOMIZE_IN_CAFFE = r"""
import sys, numpy as np, caffe
caffe.set_mode_cpu()
proto, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.RandomState(seed)
net = caffe.Net(proto, caffe.TEST)
types = dict(zip(net._layer_names, [l.type for l in net.layers]))
for name, blobs in net.params.items():
    kind = types[name]
    if kind == "BatchNorm":
        c, factor = blobs[0].data.size, 0.37
        blobs[0].data[...] = rng.normal(0, 0.3, c) * factor
        blobs[1].data[...] = rng.uniform(0.3, 2.0, c) * factor
        blobs[2].data[...] = factor
    elif kind == "Scale":
        blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
        for b in blobs[1:]:
            b.data[...] = rng.normal(0, 0.2, b.data.shape)
    else:
        w = blobs[0].data
        w[...] = rng.normal(0, np.sqrt(2.0 / np.prod(w.shape[1:])), w.shape)
        for b in blobs[1:]:
            b.data[...] = rng.normal(0, 0.1, b.data.shape)
net.save(out)
"""

COMPARE_IN_CAFFE = r"""
import sys, numpy as np, caffe
caffe.set_mode_cpu()
d, blob = sys.argv[1], sys.argv[2]
outs = []
for pair in sys.argv[3:] or ("net.prototxt:in.caffemodel", "folded.prototxt:folded.caffemodel"):
    proto, model = pair.split(":")
    net = caffe.Net(d + "/" + proto, d + "/" + model, caffe.TEST)
    x = np.random.RandomState(5).standard_normal(net.blobs["data"].data.shape).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    outs.append(net.blobs[blob].data.astype(np.float64).copy())
    print(proto, sum(1 for l in net.layers if l.type == "BatchNorm"), "BatchNorm layers")
np.save(d + "/outputs.npy", np.stack(outs))
"""


def small_copy(source, target, size, global_pool=None):
    """``source`` with a 1 x 3 x size x size input (and ``global_pool`` made a global pooling)."""
    net = read_prototxt(str(source))
    data = next(layer for layer in net.layer if layer.type == "Input")
    del data.input_param.shape[:]
    data.input_param.shape.add().dim.extend([1, 3, size, size])
    for layer in net.layer:
        if layer.name == global_pool:
            layer.pooling_param.ClearField("kernel_size")
            layer.pooling_param.global_pooling = True
    target.write_text(text_format.MessageToString(net))
    return net


@pytest.mark.slow
@pytest.mark.parametrize("source, size, pool, blob, expected_folds", [
    (RESNET50, 64, "pool5", "fc1000", 53),
    (MOBILENET, 64, None, "fc7", 27),
], ids=["resnet50", "mobilenet_v1"])
def test_folded_real_nets_compute_the_same_function_in_caffe(caffe_env, realnets, source, size, pool, blob,
                                                             expected_folds):
    source = realnets / source
    host, inside = caffe_env.tmpdir()
    small_copy(source, host / "net.prototxt", size, pool)
    caffe_env.python(RANDOMIZE_IN_CAFFE, inside + "/net.prototxt", inside + "/in.caffemodel", "11")
    result = run_cli("fold-bn", host / "net.prototxt", host / "in.caffemodel", host / "folded.prototxt",
                     host / "folded.caffemodel")
    assert result.returncode == 0, result.stderr
    assert "folded %d BatchNorm layer(s) (%d Scale), kept 0" % (expected_folds, expected_folds) in result.stderr, \
        result.stderr
    folded = read_prototxt(str(host / "folded.prototxt"))
    assert not [layer.name for layer in folded.layer if layer.type in ("BatchNorm", "Scale")]
    proc = caffe_env.python(COMPARE_IN_CAFFE, inside, blob)
    assert "folded.prototxt 0 BatchNorm layers" in proc.stdout, proc.stdout
    before, after = np.load(host / "outputs.npy")
    error = relative_error(before, after)
    print("\n%s folded: %d BatchNorm, max |diff| / max |out| = %.3g" % (source.name, expected_folds, error))
    assert np.abs(before).max() > 1e-3 and np.isfinite(before).all()
    assert error < TOLERANCE


SPREAD = re.compile(r"change-rate spread ([0-9.e+]+)x -> ([0-9.e+]+)x \(predicted\), ([0-9.e+]+)x \(measured")


@pytest.mark.slow
def test_folded_resnet50_rescaled_by_load_has_equal_rates_and_the_same_function_in_caffe(caffe_env, realnets):
    """fold-bn, then ``--load`` rescaling (per-channel factors, the default): the per-layer change-rate
    spread, measured after the step (-v), goes from over 3x to under 1.3x, and real Caffe computes
    the same fc1000 from the rescaled model (max relative error 1e-4, one positive factor allowed)."""
    host, inside = caffe_env.tmpdir()
    small_copy(realnets / RESNET50, host / "net.prototxt", 64, "pool5")
    caffe_env.python(RANDOMIZE_IN_CAFFE, inside + "/net.prototxt", inside + "/in.caffemodel", "11")
    folded = run_cli("fold-bn", host / "net.prototxt", host / "in.caffemodel", host / "folded.prototxt",
                     host / "folded.caffemodel")
    assert folded.returncode == 0, folded.stderr
    result = run_cli(host / "folded.prototxt", host / "rescaled.caffemodel", "--load", host / "folded.caffemodel",
                     "--data", "examples/images/list.txt", "--num-images", "8", "--batch-size", "8",
                     "--backend", "torch", "-v")
    assert result.returncode == 0, result.stderr
    before, predicted, measured = (float(v) for v in SPREAD.search(result.stderr).groups())
    print("\nfolded ResNet-50 (64 px, 8 photos), --load: spread %.3gx -> %.3gx (predicted), %.3gx (measured)"
          % (before, predicted, measured))
    assert before > 3 and measured < 1.3
    assert measured == pytest.approx(predicted, rel=1e-3)
    caffe_env.python(COMPARE_IN_CAFFE, inside, "fc1000", "folded.prototxt:folded.caffemodel",
                     "folded.prototxt:rescaled.caffemodel")
    original, rescaled = np.load(host / "outputs.npy")
    factor = float((original * rescaled).sum() / (original * original).sum())
    error = relative_error(factor * original, rescaled)
    print("real Caffe fc1000: factor %.6g, max |diff| / max |out| = %.3g" % (factor, error))
    assert factor > 0 and np.abs(original).max() > 1e-3 and error < 1e-4
