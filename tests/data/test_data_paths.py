"""Issue 13: one resolver for the paths in a prototxt's data layers, one mean reader, and the
colour choice of an LMDB Data layer (force_color / force_gray) reaching decoder and transform."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from magic_init import netgraph
from magic_init.data import Transform, read_mean_image, source_from_layer
from magic_init.data.paths import layer_path
from magic_init.errors import DataError, ModelFileError, NetDefinitionError
from magic_init.io import array_to_blob
from magic_init.proto import caffe_pb2


def layer(text):
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def test_a_layer_path_is_taken_as_caffe_takes_it_then_from_the_prototxt_folder(tmp_path, monkeypatch):
    (tmp_path / "proto").mkdir()
    (tmp_path / "proto" / "list.txt").write_text("x\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    base = str(tmp_path / "proto")
    assert layer_path("list.txt", base) == os.path.join(base, "list.txt")
    (tmp_path / "cwd" / "list.txt").write_text("y\n")
    assert layer_path("list.txt", base) == "list.txt"                 # the working directory wins
    assert layer_path("missing.txt", base) == "missing.txt"           # named as written
    assert layer_path(str(tmp_path / "abs"), base) == str(tmp_path / "abs")
    assert layer_path("missing.txt") == "missing.txt"


def write_mean(path, mean):
    path.write_bytes(array_to_blob(mean[None]).SerializeToString())


def test_mean_file_is_found_beside_the_prototxt_and_read_by_the_one_reader(tmp_path, monkeypatch):
    mean = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    write_mean(tmp_path / "mean.binaryproto", mean)
    monkeypatch.chdir(tmp_path.parent)
    param = caffe_pb2.TransformationParameter(mean_file="mean.binaryproto")
    np.testing.assert_array_equal(Transform.from_proto(param, base_dir=str(tmp_path)).mean, mean)
    with pytest.raises(DataError, match="^mean.binaryproto: mean file not found"):
        Transform.from_proto(param)
    (tmp_path / "bad.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(ModelFileError, match="bad.binaryproto: truncated or not a binaryproto mean"):
        read_mean_image(tmp_path / "bad.binaryproto")


def test_an_image_data_layers_list_is_found_beside_the_prototxt(tmp_path, monkeypatch):
    Image.new("RGB", (6, 5), (1, 2, 3)).save(str(tmp_path / "a.png"))
    (tmp_path / "list.txt").write_text("a.png 1\n")
    monkeypatch.chdir(tmp_path.parent)
    source, _ = source_from_layer(layer('name: "d" type: "ImageData" top: "data" '
                                        'image_data_param { source: "list.txt" }'), base_dir=str(tmp_path))
    assert source.paths == [str(tmp_path / "a.png")]


def png_datum(rgb, label):
    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), rgb).save(buffer, format="PNG")
    return caffe_pb2.Datum(encoded=True, data=buffer.getvalue(), label=label)


@pytest.mark.parametrize("force, channels", [("force_gray: true", 1), ("force_color: true", 3), ("", 3)])
def test_an_lmdb_data_layer_decodes_and_transforms_with_one_colour_choice(tmp_path, force, channels):
    lmdb = pytest.importorskip("lmdb")
    with lmdb.open(str(tmp_path / "db"), map_size=1 << 22) as env, env.begin(write=True) as txn:
        txn.put(b"0", png_datum((10, 20, 30), 4).SerializeToString())
    data = layer('name: "db" type: "Data" top: "data" data_param { source: "db" backend: LMDB batch_size: 1 } '
                 'transform_param { crop_size: 4 %s }' % force)
    source, transform = source_from_layer(data, base_dir=str(tmp_path))
    expected = netgraph.forced_color(data)
    assert source.is_color is expected and transform.is_color is expected
    image, label = source.read(0)
    assert transform(image).shape == (channels, 4, 4) and label == 4
    assert netgraph.instantiate(caffe_pb2.NetParameter(layer=[data]), channels=lambda _: 3,
                                batch_size=1).layer[0].input_param.shape[0].dim[1] == channels


def test_force_color_and_force_gray_together_are_refused_for_an_lmdb_layer():
    data = layer('name: "db" type: "Data" top: "data" data_param { source: "db" backend: LMDB } '
                 'transform_param { force_color: true force_gray: true }')
    with pytest.raises(NetDefinitionError, match="layer 'db': force_color and force_gray cannot both be set"):
        source_from_layer(data)
