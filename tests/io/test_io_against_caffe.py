"""magic_init.io against real Caffe (the chroot): models saved by Caffe, models loaded by Caffe,
and legacy nets upgraded by Caffe's own upgrade tools."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from magic_init.io import read_caffemodel, read_prototxt, write_caffemodel
from magic_init.io.prototxt import parse_text_message
from magic_init.proto import caffe_pb2

DATA = Path(__file__).parent / "data"

SMALL_NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 group: 1 weight_filler { type: "gaussian" std: 1 }
                      bias_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 2 group: 2 bias_term: false weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv2" top: "conv2" }
layer { name: "scale" type: "Scale" bottom: "conv2" top: "conv2"
  scale_param { bias_term: true filler { type: "uniform" } bias_filler { type: "gaussian" } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 }
                        bias_filler { type: "gaussian" std: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

SAVE_PARAMS = """
import sys, numpy as np, caffe
net = caffe.Net(sys.argv[1], *sys.argv[2:-1], caffe.TEST) if len(sys.argv) > 3 else caffe.Net(sys.argv[1], caffe.TEST)
arrays = {"%s/%d" % (name, i): b.data for name, blobs in net.params.items() for i, b in enumerate(blobs)}
np.savez(sys.argv[-1], **arrays)
"""


def saved_params(caffe_env, host_dir, chroot_dir, prototxt_name, model_name=None):
    """Caffe's params after loading (prototxt[, model]) in TEST, as {"layer/i": array}."""
    args = ["%s/%s" % (chroot_dir, prototxt_name)]
    if model_name:
        args.append("%s/%s" % (chroot_dir, model_name))
    caffe_env.python(SAVE_PARAMS, *args, "%s/params.npz" % chroot_dir)
    with np.load(str(host_dir / "params.npz")) as npz:
        return {key: npz[key] for key in npz.files}


def assert_bit_identical(a, b):
    assert a.shape == b.shape
    assert a.dtype == b.dtype == np.float32
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_model_saved_by_caffe_is_read_bit_identically(caffe_env):
    host, inside = caffe_env.tmpdir()
    (host / "net.prototxt").write_text(SMALL_NET)
    caffe_env.python(
        "import sys, caffe, numpy as np\n"
        "caffe.set_random_seed(3)\n"
        "net = caffe.Net(sys.argv[1], caffe.TEST)\n"
        "net.params['bn'][0].data[...] = np.arange(6); net.params['bn'][2].data[...] = 2\n"
        "net.save(sys.argv[2])\n", inside + "/net.prototxt", inside + "/net.caffemodel")
    reference = saved_params(caffe_env, host, inside, "net.prototxt", "net.caffemodel")
    model = read_caffemodel(host / "net.caffemodel")
    ours = {"%s/%d" % (name, i): a for name, arrays in model.weights.items() for i, a in enumerate(arrays)}
    assert sorted(ours) == sorted(reference)
    for key in reference:
        assert_bit_identical(ours[key], reference[key])
    assert [layer.name for layer in model.net.layer] == [
        "data", "conv1", "relu1", "conv2", "bn", "scale", "fc", "prob"]
    assert all(len(layer.blobs) == 0 for layer in model.net.layer)
    assert model.weights["relu1"] == []


def test_model_written_by_us_loads_in_caffe_bit_identically(caffe_env):
    host, inside = caffe_env.tmpdir()
    (host / "net.prototxt").write_text(SMALL_NET)
    net = read_prototxt(host / "net.prototxt")
    rng = np.random.RandomState(0)
    shapes = {"conv1": [(4, 3, 3, 3), (4,)], "conv2": [(6, 2, 2, 2)], "bn": [(6,), (6,), (1,)],
              "scale": [(6,), (6,)], "fc": [(5, 6 * 6 * 6), (5,)]}
    weights = {name: [rng.randn(*s).astype(np.float32) for s in blob_shapes]
               for name, blob_shapes in shapes.items()}
    weights["conv1"][0][0, 0, 0, 0] = np.float32(-0.0)  # sign of zero survives
    weights["fc"][1][0] = np.float32(1e-42)  # denormals survive
    write_caffemodel(host / "ours.caffemodel", net, weights)
    reference = saved_params(caffe_env, host, inside, "net.prototxt", "ours.caffemodel")
    assert sorted(reference) == sorted("%s/%d" % (n, i) for n, s in shapes.items() for i in range(len(s)))
    for name, arrays in weights.items():
        for i, array in enumerate(arrays):
            assert_bit_identical(reference["%s/%d" % (name, i)], array)


def upgraded_by_caffe(caffe_env, tool, source: Path, binary: bool):
    """Run Caffe's upgrade_net_proto_{text,binary} on ``source``; return the result's path."""
    probe = caffe_env.run("sh", "-c", "command -v %s" % tool, check=False)
    if probe.returncode != 0:
        pytest.skip("%s missing in the Caffe env: Debian package 'caffe' not installed" % tool)
    host, inside = caffe_env.tmpdir()
    shutil.copy(str(source), str(host / source.name))
    out_name = "upgraded" + (".caffemodel" if binary else ".prototxt")
    caffe_env.run(tool, "%s/%s" % (inside, source.name), "%s/%s" % (inside, out_name))
    return host / out_name


def caffe_text_upgrade(caffe_env, source: Path):
    out = upgraded_by_caffe(caffe_env, "upgrade_net_proto_text", source, binary=False)
    return parse_text_message(out.read_text(), caffe_pb2.NetParameter(), str(out))


@pytest.mark.parametrize("name", ["v1_caffenet_like", "v0_padding", "current_with_input_and_bn"])
def test_prototxt_upgrade_equals_caffes(caffe_env, name):
    source = DATA / (name + ".prototxt")
    theirs = caffe_text_upgrade(caffe_env, source)
    ours = read_prototxt(source)
    assert len(theirs.layers) == 0 and len(theirs.layer) > 0
    for our_layer, their_layer in zip(ours.layer, theirs.layer):
        assert text_format.MessageToString(our_layer) == text_format.MessageToString(their_layer)
    assert text_format.MessageToString(ours) == text_format.MessageToString(theirs)


def legacy_v1_model(rng):
    """A V1 binary model for v1_caffenet_like: legacy 4-D blobs, right-aligned."""
    net = caffe_pb2.NetParameter(name="V1CaffeNetLike")
    shapes = {"conv1": [(8, 3, 5, 5), (1, 1, 1, 8)], "conv2": [(6, 4, 3, 3), (1, 1, 1, 6)],
              "fc6": [(1, 1, 10, 6 * 6 * 6), (1, 1, 1, 10)]}
    for name, kind in [("conv1", 4), ("relu1", 18), ("conv2", 4), ("fc6", 14), ("prob", 20)]:
        layer = net.layers.add(name=name, type=kind)
        for shape in shapes.get(name, []):
            blob = layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
            blob.data.extend(rng.randn(int(np.prod(shape))).astype(np.float32).tolist())
    return net


def test_v1_caffemodel_reads_like_caffes_upgrade(caffe_env, tmp_path):
    v1 = legacy_v1_model(np.random.RandomState(1))
    source = tmp_path / "v1.caffemodel"
    source.write_bytes(v1.SerializeToString())
    upgraded = upgraded_by_caffe(caffe_env, "upgrade_net_proto_binary", source, binary=True)
    ours, theirs = read_caffemodel(source), read_caffemodel(upgraded)
    assert text_format.MessageToString(ours.net) == text_format.MessageToString(theirs.net)
    assert list(ours.weights) == list(theirs.weights) == ["conv1", "relu1", "conv2", "fc6", "prob"]
    for name in ours.weights:
        for a, b in zip(ours.weights[name], theirs.weights[name]):
            assert_bit_identical(a, b)
    assert ours.weights["fc6"][0].shape == (1, 1, 10, 216)  # legacy shape kept


def test_v1_caffemodel_loads_in_caffe_with_v1_prototxt_like_ours(caffe_env):
    host, inside = caffe_env.tmpdir()
    deploy = (DATA / "v1_caffenet_like.prototxt").read_text()
    deploy = deploy.replace('name: "V1CaffeNetLike"', 'name: "V1CaffeNetLike"\ninput: "data"\n'
                            'input_dim: 1 input_dim: 3 input_dim: 27 input_dim: 27\ninput: "label"\n'
                            'input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1')
    start = deploy.index("layers {\n  name: \"data\"")
    deploy = deploy[:start] + deploy[deploy.index("layers {\n  name: \"conv1\""):]
    (host / "deploy.prototxt").write_text(deploy)
    (host / "v1.caffemodel").write_bytes(legacy_v1_model(np.random.RandomState(2)).SerializeToString())
    reference = saved_params(caffe_env, host, inside, "deploy.prototxt", "v1.caffemodel")
    model = read_caffemodel(host / "v1.caffemodel")
    for key, theirs in reference.items():
        name, index = key.split("/")
        ours = model.weights[name][int(index)]
        assert_bit_identical(ours.reshape(theirs.shape), theirs)
