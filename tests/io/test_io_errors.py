"""Bad input gives one clear MagicInitError line, never a traceback from deep inside."""
from __future__ import annotations

import numpy as np
import pytest

from magic_init.errors import ModelFileError, NetDefinitionError, ProtoParseError, ShapeMismatchError
from magic_init.io import match_weights, parse_prototxt, read_caffemodel, read_prototxt, write_caffemodel

NET = 'name: "n"\nlayer { name: "ip" type: "InnerProduct" inner_product_param { num_output: 2 } }\n'


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "model.prototxt"
    path.write_text(NET + "layer {\n  name: \"x\"\n  num_output: : 3\n}\n")
    with pytest.raises(ProtoParseError) as info:
        read_prototxt(path)
    message = str(info.value)
    assert message.startswith("%s:5: " % path)
    assert "\n" not in message


def test_unknown_field_is_a_warning_naming_file_line_layer_and_field(tmp_path, caplog):
    """A field BVLC's schema lacks (a Caffe fork's, or a typo) is skipped and named, see io.fork_fields."""
    path = tmp_path / "model.prototxt"
    path.write_text(NET + "layer {\n  name: \"x\"\n  type: \"ReLU\"\n  bogus_field: 3\n}\n")
    net = read_prototxt(path)
    assert [layer.name for layer in net.layer][-1] == "x"
    assert "%s:6: field 'bogus_field'" % path in caplog.text and "x (ReLU)" in caplog.text


def test_unterminated_message_reports_a_line():
    with pytest.raises(ProtoParseError, match=r"^net.prototxt:\d+: "):
        parse_prototxt("layer {\n name: 'a'\n", "net.prototxt")


def test_singular_field_twice_is_an_error_as_in_caffe():
    with pytest.raises(ProtoParseError, match="^x.prototxt:1: "):
        parse_prototxt('name: "a" name: "b"', "x.prototxt")


def test_missing_files_are_named(tmp_path):
    missing = tmp_path / "nope.prototxt"
    with pytest.raises(ModelFileError, match="nope.prototxt: cannot read"):
        read_prototxt(missing)
    with pytest.raises(ModelFileError, match="nope.caffemodel: cannot read"):
        read_caffemodel(tmp_path / "nope.caffemodel")


def test_layer_and_layers_together_are_refused():
    with pytest.raises(NetDefinitionError, match="mixes 'layer' and legacy 'layers'"):
        parse_prototxt('layer { name: "a" } layers { name: "b" type: RELU }')


def write_model(path):
    net = parse_prototxt(NET)
    write_caffemodel(path, net, {"ip": [np.ones((2, 3), np.float32), np.zeros(2, np.float32)]})
    return path.read_bytes()


@pytest.mark.parametrize("cut", [1, 5, 20, -9, -1])
def test_truncated_caffemodel(tmp_path, cut):
    data = write_model(tmp_path / "ok.caffemodel")
    bad = tmp_path / "x.caffemodel"
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelFileError, match=r"^.*x\.caffemodel: truncated or not a Caffe model \(.+\)$"):
        read_caffemodel(bad)


@pytest.mark.parametrize("content", [b"\x00\x01\x02\x03garbage\xff\xfe", b"\xff" * 64, b"PK\x03\x04\x14\x00"])
def test_garbage_caffemodel(tmp_path, content):
    bad = tmp_path / "x.caffemodel"
    bad.write_bytes(content)
    with pytest.raises(ModelFileError, match="x.caffemodel: "):
        read_caffemodel(bad)


def test_empty_caffemodel(tmp_path):
    (tmp_path / "e.caffemodel").write_bytes(b"")
    with pytest.raises(ModelFileError, match="e.caffemodel: empty file"):
        read_caffemodel(tmp_path / "e.caffemodel")


def test_blob_count_disagreeing_with_shape(tmp_path):
    from magic_init.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    blob = net.layer.add(name="ip").blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    (tmp_path / "m.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(ModelFileError, match=r"layer 'ip' blob 0: blob shape \(2, 3\) needs 6 values but the file holds 5"):
        read_caffemodel(tmp_path / "m.caffemodel")


def test_shape_mismatch_names_layer_blob_and_shapes():
    with pytest.raises(ShapeMismatchError) as info:
        match_weights({"conv1": [np.zeros((4, 3, 3, 3)), np.zeros(4)]},
                      {"conv1": [(4, 3, 5, 5), (4,)]}, "w.caffemodel")
    assert str(info.value) == ("w.caffemodel: layer 'conv1' blob 0 has shape (4, 3, 3, 3), "
                               "but the net expects (4, 3, 5, 5)")


def test_blob_count_mismatch():
    with pytest.raises(ShapeMismatchError, match="layer 'fc' has 1 blobs, but the net's layer has 2"):
        match_weights({"fc": [np.zeros((2, 2))]}, {"fc": [(2, 2), (2,)]})


def test_weights_for_unknown_layer_are_refused(tmp_path):
    with pytest.raises(NetDefinitionError, match="layer 'nope'"):
        write_caffemodel(tmp_path / "o.caffemodel", parse_prototxt(NET), {"nope": [np.zeros(1)]})
    assert not list(tmp_path.iterdir())
