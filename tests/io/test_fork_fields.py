"""Prototxts with fields of Caffe forks: found, read where they mean a BVLC field, skipped otherwise."""
import logging

import pytest

from magic_init.errors import ProtoParseError
from magic_init.io import fork_fields
from magic_init.io.prototxt import parse_prototxt
from magic_init.proto import caffe_pb2

FORK_NET = """
name: "fork"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false } }
layer { name: "pool2" type: "Pooling" bottom: "pool1" top: "pool2"
        pooling_param { pool: AVE kernel_size: 2 ceil_mode: true stride: 1 } }
layer { name: "roi" type: "ROIPooling" bottom: "pool2" top: "roi"
        roi_pooling_param { pooled_w: 6 pooled_h: 6 spatial_scale: 0.0625 nested { a: [1, 2] } } }
layer { name: "drop" type: "Dropout" bottom: "roi" top: "roi" scale_train: false
        dropout_param { dropout_ratio: 0.5 } }
"""


def test_scan_lists_each_unknown_field_with_its_layer_and_line():
    found = fork_fields.scan(FORK_NET, caffe_pb2.NetParameter.DESCRIPTOR)
    got = {(f.name, f.layer_name, f.layer_type, f.path) for f in found}
    assert got == {("ceil_mode", "pool1", "Pooling", "layer.pooling_param"),
                   ("ceil_mode", "pool2", "Pooling", "layer.pooling_param"),
                   ("roi_pooling_param", "roi", "ROIPooling", "layer"),
                   ("scale_train", "drop", "Dropout", "layer")}
    lines = FORK_NET.split("\n")
    for field in found:
        assert field.name in lines[field.line - 1]


def test_fork_net_parses_keeps_known_fields_and_reads_ceil_mode(caplog):
    with caplog.at_level(logging.WARNING):
        net = parse_prototxt(FORK_NET, "fork.prototxt")
    by_name = {layer.name: layer for layer in net.layer}
    assert by_name["pool1"].pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert by_name["pool1"].pooling_param.stride == 2
    assert by_name["pool2"].pooling_param.round_mode == caffe_pb2.PoolingParameter.CEIL
    assert by_name["pool2"].pooling_param.HasField("round_mode")
    assert by_name["pool2"].pooling_param.stride == 1  # the field after ceil_mode is kept
    assert by_name["roi"].type == "ROIPooling" and by_name["drop"].dropout_param.dropout_ratio == 0.5
    text = caplog.text
    assert "roi_pooling_param" in text and "'roi' (ROIPooling)" not in text and "roi (ROIPooling)" in text
    assert "ceil_mode" in text and "read as round_mode" in text
    assert "fork.prototxt:" in text


def test_a_misspelled_bvlc_field_is_still_only_a_warning_naming_it(caplog):
    text = FORK_NET.replace("kernel_size: 3 }", "kernel_sise: 3 }")
    with caplog.at_level(logging.WARNING):
        parse_prototxt(text, "typo.prototxt")
    assert "kernel_sise" in caplog.text and "conv1 (Convolution)" in caplog.text


def test_syntax_errors_still_fail_with_file_and_line():
    with pytest.raises(ProtoParseError, match=r"^bad.prototxt:3:"):
        parse_prototxt('name: "x"\nlayer { name: "a" foo: 1 }\nlayer { name: : "b" }\n', "bad.prototxt")


def test_unknown_field_outside_layers_is_named():
    found = fork_fields.scan('name: "x"\nforce_backward: true\nfork_option { x: 1 }\n',
                             caffe_pb2.NetParameter.DESCRIPTOR)
    assert [(f.name, f.layer_name, f.line) for f in found] == [("fork_option", "", 3)]
