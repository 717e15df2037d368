"""Unit tests: blob <-> array, weight matching, atomic writes, means, text and HDF5 caffemodels."""
from __future__ import annotations

import os

import numpy as np
import pytest

from magic_init.errors import ModelFileError
from magic_init.io import (array_to_blob, atomic_write, blob_to_array, copy_weights, match_weights,
                           parse_prototxt, read_caffemodel, read_mean_file, write_caffemodel)
from magic_init.io.wire import encode_varint, read_varint
from magic_init.proto import caffe_pb2


@pytest.mark.parametrize("shape", [(), (7,), (2, 3), (2, 3, 4, 5), (1, 2, 1, 3, 2)])
def test_array_blob_round_trip(shape):
    array = np.asarray(np.random.RandomState(0).randn(*shape), dtype=np.float32)
    back = blob_to_array(array_to_blob(array))
    assert back.shape == shape and back.dtype == np.float32
    assert np.array_equal(back, array)


def test_legacy_blob_shape_and_double_data():
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3)
    blob.double_data.extend([0.5, 1, 2, 3, 4, 1e-50])
    array = blob_to_array(blob)
    assert array.shape == (1, 1, 2, 3) and array.dtype == np.float32
    assert array[0, 0, 0, 0] == 0.5 and array[0, 0, 1, 2] == 0.0


def test_blob_without_any_shape_is_an_error():
    blob = caffe_pb2.BlobProto()
    blob.data.extend([1.0])
    with pytest.raises(ModelFileError, match="neither a shape nor legacy"):
        blob_to_array(blob, "m.caffemodel: layer 'a' blob 0")


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2 ** 32, 2 ** 63 - 1])
def test_varint_round_trip(value):
    data = encode_varint(value)
    assert read_varint(data, 0, len(data)) == (value, len(data))


def test_match_weights_accepts_legacy_4d_and_reshapes():
    weights = {"fc": [np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3), np.ones((1, 1, 1, 2))],
               "extra": [np.zeros(3)]}
    matched = match_weights(weights, {"fc": [(2, 3), (2,)], "conv": [(1, 1, 1, 1)]})
    assert list(matched) == ["fc"]
    assert matched["fc"][0].shape == (2, 3) and matched["fc"][1].shape == (2,)


def test_match_weights_refuses_right_padding():
    from magic_init.errors import ShapeMismatchError
    with pytest.raises(ShapeMismatchError):
        match_weights({"fc": [np.zeros((2, 3, 1, 1))]}, {"fc": [(2, 3)]})


def test_copy_weights_writes_in_place_and_keeps_absent_layers():
    class Blob:
        def __init__(self, shape):
            self.data = np.full(shape, 7.0, np.float32)
    params = {"a": [Blob((2, 2))], "b": [Blob((3,))]}
    copied = copy_weights({"a": [np.eye(2)], "zzz": [np.zeros(1)]}, params, "src")
    assert copied == ["a"]
    assert np.array_equal(params["a"][0].data, np.eye(2)) and (params["b"][0].data == 7).all()


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.caffemodel"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.caffemodel"]
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.caffemodel"]


def test_write_caffemodel_to_missing_folder_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="cannot create a file"):
        write_caffemodel(tmp_path / "no" / "x.caffemodel", caffe_pb2.NetParameter(), {})


@pytest.mark.parametrize("legacy", [True, False])
def test_read_mean_file(tmp_path, legacy):
    mean = np.random.RandomState(1).rand(3, 4, 5).astype(np.float32)
    blob = caffe_pb2.BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, 3, 4, 5
    else:
        blob.shape.dim.extend([1, 3, 4, 5])
    blob.data.extend(mean.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    assert np.array_equal(read_mean_file(tmp_path / "mean.binaryproto"), mean)


def test_text_format_caffemodel(tmp_path):
    path = tmp_path / "text.caffemodel"
    path.write_text('name: "t" layers { name: "fc" type: INNER_PRODUCT '
                    'blobs { num: 1 channels: 1 height: 1 width: 2 data: 1.5 data: -2 } }')
    model = read_caffemodel(path)
    assert model.net.layer[0].type == "InnerProduct" and not model.net.layer[0].blobs
    assert np.array_equal(model.weights["fc"][0], np.array([[[[1.5, -2]]]], np.float32))


def test_hdf5_caffemodel(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "weights.caffemodel"  # detected by content, not by name
    with h5py.File(str(path), "w") as f:
        f.create_dataset("data/conv1/0", data=np.ones((2, 1, 3, 3)))
        f.create_dataset("data/conv1/1", data=np.arange(2.0))
        f.create_dataset("data/fc/0", data=np.zeros((4, 2)))
    model = read_caffemodel(path)
    assert list(model.weights) == ["conv1", "fc"]
    assert model.weights["conv1"][1].dtype == np.float32
    assert np.array_equal(model.weights["conv1"][1], [0, 1])


def test_v0_binary_caffemodel_blobs_are_found(tmp_path):
    net = caffe_pb2.NetParameter(name="v0")
    entry = net.layers.add()
    entry.layer.name, entry.layer.type = "fc", "innerproduct"
    blob = entry.layer.blobs.add(num=1, channels=1, height=2, width=2)
    blob.data.extend([1, 2, 3, 4])
    (tmp_path / "v0.caffemodel").write_bytes(net.SerializeToString())
    model = read_caffemodel(tmp_path / "v0.caffemodel")
    assert model.net.layer[0].name == "fc" and model.net.layer[0].type == "InnerProduct"
    assert model.weights["fc"][0].ravel().tolist() == [1, 2, 3, 4]


def test_unpacked_float_data_is_read(tmp_path):
    # Old writers emitted repeated floats unpacked (tag per value, wire type 5).
    import struct
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([3])
    raw = blob.SerializeToString() + b"".join(b"\x2d" + struct.pack("<f", v) for v in (1, 2, 3))
    layer = caffe_pb2.LayerParameter(name="a").SerializeToString() + b"\x3a" + encode_varint(len(raw)) + raw
    (tmp_path / "u.caffemodel").write_bytes(b"\xa2\x06" + encode_varint(len(layer)) + layer)
    assert read_caffemodel(tmp_path / "u.caffemodel").weights["a"][0].tolist() == [1, 2, 3]


def test_write_read_round_trip_keeps_net_fields(tmp_path):
    net = parse_prototxt('name: "r" force_backward: true layer { name: "c" type: "Convolution" '
                         'convolution_param { num_output: 2 kernel_size: 1 } }')
    write_caffemodel(tmp_path / "r.caffemodel", net, {"c": [np.ones((2, 1, 1, 1)), np.zeros(2)]})
    model = read_caffemodel(tmp_path / "r.caffemodel")
    assert model.net == net
