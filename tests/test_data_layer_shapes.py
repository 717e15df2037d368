"""Data layers' input shapes: --size applies to each, the channel count comes from the data, and a
--size that changes an InnerProduct's input writes the prototxt the model fits."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("torch")

LAYERS = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def lenet_like(tmp_path, data_layer):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "LeNetLike"\n' + data_layer + LAYERS)
    return path


def data_layer(source="missing_lmdb", crop=0):
    transform = "transform_param { scale: 0.00390625 %s }" % ("crop_size: %d" % crop if crop else "")
    return ('layer { name: "mnist" type: "Data" top: "data" top: "label" %s\n'
            '  data_param { source: "%s" batch_size: 4 backend: LMDB } }\n' % (transform, source))


def image_data_layer(source, is_color):
    return ('layer { name: "images" type: "ImageData" top: "data" top: "label"\n'
            '  image_data_param { source: "%s" batch_size: 4 is_color: %s } }\n'
            % (source, "true" if is_color else "false"))


def input_net(tmp_path, channels=3, size=12):
    path = tmp_path / "input.prototxt"
    path.write_text('name: "InputNet"\nlayer { name: "data" type: "Input" top: "data" top: "label"\n'
                    '  input_param { shape { dim: 4 dim: %d dim: %d dim: %d } shape { dim: 4 } } }\n'
                    % (channels, size, size) + LAYERS)
    return path


def write_images(folder, mode, count=6, size=16):
    """``count`` random PNGs in ``folder`` (mode 'L' gray, 'RGB' colour) and a list file naming them."""
    folder.mkdir()
    rng = np.random.RandomState(0)
    names = []
    for i in range(count):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.randint(0, 256, shape).astype(np.uint8), mode).save(folder / ("%d.png" % i))
        names.append("%s %d" % (folder / ("%d.png" % i), i % 5))
    (folder / "list.txt").write_text("\n".join(names) + "\n")
    return folder


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "magic_init", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def init(prototxt, out, *args):
    result = run_cli(prototxt, out, "--num-images", 6, "--batch-size", 3, "--backend", "torch", *args)
    assert result.returncode == 0, result.stderr
    from magic_init.io import read_caffemodel

    return read_caffemodel(out).weights, result.stderr


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_a_data_layer_gets_the_channels_of_the_data_images(tmp_path, mode, channels):
    images = write_images(tmp_path / "images", mode)
    weights, _ = init(lenet_like(tmp_path, data_layer()), tmp_path / "out.caffemodel", "--data", images,
                      "--size", 12)
    assert weights["conv1"][0].shape == (4, channels, 3, 3)


def test_an_image_data_layer_with_is_color_false_has_one_channel(tmp_path):
    images = write_images(tmp_path / "images", "RGB")
    net = lenet_like(tmp_path, image_data_layer(images / "list.txt", is_color=False))
    weights, _ = init(net, tmp_path / "out.caffemodel", "--size", 12)
    assert weights["conv1"][0].shape == (4, 1, 3, 3)


def test_a_data_layer_reads_the_channels_of_its_lmdb_datums(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    from magic_init.proto import caffe_pb2

    with lmdb.open(str(tmp_path / "db"), map_size=1 << 22) as env, env.begin(write=True) as txn:
        for i in range(6):
            datum = caffe_pb2.Datum(channels=1, height=14, width=14, label=i % 5,
                                    data=np.random.RandomState(i).randint(0, 256, 196).astype(np.uint8).tobytes())
            txn.put(b"%08d" % i, datum.SerializeToString())
    weights, _ = init(lenet_like(tmp_path, data_layer(tmp_path / "db", crop=12)), tmp_path / "out.caffemodel")
    assert weights["conv1"][0].shape == (4, 1, 3, 3)


def test_gray_images_with_a_colour_input_layer_keep_three_channels(tmp_path):
    images = write_images(tmp_path / "images", "L")
    weights, stderr = init(input_net(tmp_path), tmp_path / "out.caffemodel", "--data", images / "list.txt")
    assert weights["conv1"][0].shape == (4, 3, 3, 3)
    assert "does not fit" not in stderr and not list(tmp_path.glob("*.size*.prototxt"))


def test_size_that_changes_an_inner_product_writes_the_prototxt_the_model_fits(tmp_path):
    import magic_init

    images = write_images(tmp_path / "images", "RGB")
    net, out = input_net(tmp_path, size=12), tmp_path / "out.caffemodel"
    weights, stderr = init(net, out, "--data", images / "list.txt", "--size", 16)
    sized = tmp_path / "out.size16x16.prototxt"
    warnings = [line for line in stderr.splitlines() if "does not fit" in line]
    assert len(warnings) == 1 and "InnerProduct 'ip1'" in warnings[0] and "--size 16,16" in warnings[0]
    assert str(sized) in warnings[0]
    assert weights["ip1"][0].shape == (5, 4 * 7 * 7)

    model = magic_init.read_model(str(sized), str(out))
    built = magic_init.build_net(model, backend="torch", batch_size=2)
    for name, arrays in weights.items():
        for blob, array in zip(built.params.get(name, []), arrays):
            assert tuple(blob.data.shape) == array.shape
    assert tuple(built.blobs["data"].data.shape) == (2, 3, 16, 16)
    assert "dim: 12" in net.read_text()          # the user's prototxt is untouched


def test_size_of_a_cropping_data_layer_is_written_as_its_crop_size(tmp_path):
    from magic_init import load
    from magic_init.io import parse_prototxt

    net = parse_prototxt('name: "n"\n' + data_layer(crop=12) + LAYERS)
    sized = load.sized_net_param(net, (16, 16), "data")
    assert sized.layer[0].transform_param.crop_size == 16 and net.layer[0].transform_param.crop_size == 12
    with pytest.raises(Exception, match="square"):
        load.sized_net_param(net, (16, 20), "data")
