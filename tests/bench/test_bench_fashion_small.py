"""bench/train_few_labels.py and bench/rescale_pretrained.py helpers, and models/fashion_small_*."""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import rescale_pretrained  # noqa: E402
import train_few_labels as tfl  # noqa: E402

from magic_init.io import read_caffemodel, read_prototxt, write_caffemodel  # noqa: E402

DEPLOY = REPO / "models" / "fashion_small_deploy.prototxt"
TRAIN = REPO / "models" / "fashion_small_train.prototxt"
PARAM_SHAPES = {"conv1": [(32, 1, 5, 5), (32,)], "conv2": [(64, 32, 5, 5), (64,)],
                "fc3": [(256, 3136), (256,)], "fc4": [(10, 256), (10,)]}


def fake_work(tmp_path):
    work = tfl.Work.__new__(tfl.Work)  # no chroot needed
    work.host, work.inside = tmp_path, "/tmp/fb"
    return work


def random_model(path, seed=0):
    rng = np.random.RandomState(seed)
    weights = {name: [rng.randn(*s).astype(np.float32) * 0.1 for s in shapes] for name, shapes in PARAM_SHAPES.items()}
    write_caffemodel(str(path), read_prototxt(str(DEPLOY)), weights)


def test_read_idx_parses_header_and_data(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + data.tobytes()))
    np.testing.assert_array_equal(tfl.read_idx(path), data)


def test_balanced_indices_takes_first_per_class_in_order():
    labels = np.array([0, 1, 0, 2, 1, 0, 3, 4, 5, 6, 7, 8, 9, 9, 1] + list(range(10)))
    idx = tfl.balanced_indices(labels, 2)
    assert list(idx) == sorted(idx)
    assert np.bincount(labels[idx], minlength=10).tolist() == [2] * 10
    assert list(idx[:3]) == [0, 1, 2]


def test_train_prototxt_sets_filler_and_absolute_paths(tmp_path):
    text = tfl.train_prototxt(fake_work(tmp_path), "msra").read_text()
    assert text.count('weight_filler { type: "msra" }') == 4
    assert "std: 0.01" not in text and '"fashion/' not in text
    assert 'source: "/tmp/fb/train.txt"' in text and 'root_folder: "/tmp/fb/"' in text


def test_solver_prototxt_sets_run_fields(tmp_path):
    work = fake_work(tmp_path)
    text = tfl.solver_prototxt(work, tmp_path / "net.prototxt", 7, 123, "t", base_lr=0.001).read_text()
    for line in ('net: "/tmp/fb/net.prototxt"', "max_iter: 123", "random_seed: 7", "base_lr: 0.001"):
        assert line in text


def test_deploy_and_train_nets_have_the_same_parameters():
    deploy = {l.name for l in read_prototxt(str(DEPLOY)).layer if l.type in ("Convolution", "InnerProduct")}
    train = {l.name for l in read_prototxt(str(TRAIN)).layer if l.type in ("Convolution", "InnerProduct")}
    assert deploy == train == set(PARAM_SHAPES)


def test_scale_pair_scales_conv2_up_and_fc3_down(tmp_path):
    random_model(tmp_path / "a.caffemodel")
    rescale_pretrained.scale_pair(tmp_path / "a.caffemodel", tmp_path / "b.caffemodel", 100.0)
    a, b = (read_caffemodel(str(tmp_path / n)).weights for n in ("a.caffemodel", "b.caffemodel"))
    np.testing.assert_allclose(b["conv2"][0], 100 * a["conv2"][0], rtol=1e-6)
    np.testing.assert_allclose(b["conv2"][1], 100 * a["conv2"][1], rtol=1e-6)
    np.testing.assert_allclose(b["fc3"][0], a["fc3"][0] / 100, rtol=1e-6)
    np.testing.assert_array_equal(b["fc3"][1], a["fc3"][1])
    np.testing.assert_array_equal(b["conv1"][0], a["conv1"][0])


def test_relative_changes_measure_how_far_each_layer_moved(tmp_path):
    random_model(tmp_path / "a.caffemodel")
    rescale_pretrained.scale_pair(tmp_path / "a.caffemodel", tmp_path / "b.caffemodel", 3.0)
    changes = rescale_pretrained.relative_changes(tmp_path / "a.caffemodel", tmp_path / "b.caffemodel")
    assert changes["conv1"] == 0 and changes["fc4"] == 0
    assert abs(changes["conv2"] - 2.0) < 1e-5          # ||3W - W|| / ||W||
    assert abs(changes["fc3"] - 2.0 / 3.0) < 1e-5      # ||W/3 - W|| / ||W||


SCALED_OUTPUT_CODE = r"""
import sys, numpy as np, caffe
caffe.set_mode_cpu()
d = sys.argv[1]
x = np.random.RandomState(1).rand(4, 1, 28, 28).astype(np.float32)
outs = []
for name in ("a", "b"):
    net = caffe.Net("/src/models/fashion_small_deploy.prototxt", d + "/" + name + ".caffemodel", caffe.TEST)
    net.blobs["data"].reshape(*x.shape)
    outs.append(net.forward(data=x)["fc4"].copy())
np.save(d + "/out.npy", np.stack(outs))
train = caffe.Net("/src/models/fashion_small_deploy.prototxt", caffe.TEST)
print({k: [tuple(b.data.shape) for b in v] for k, v in train.params.items()})
"""


def test_scaled_model_computes_the_same_function_in_caffe(caffe_env):
    host, inside = caffe_env.tmpdir()
    random_model(host / "a.caffemodel")
    rescale_pretrained.scale_pair(host / "a.caffemodel", host / "b.caffemodel", 100.0)
    proc = caffe_env.python(SCALED_OUTPUT_CODE, inside)
    a, b = np.load(host / "out.npy")
    assert np.abs(a).max() > 1e-3
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    assert eval(proc.stdout.strip().splitlines()[-1]) == PARAM_SHAPES
