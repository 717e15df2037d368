"""Layer registry: exact type strings, and a clear error for unsupported types at construction."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from magic_init.engine import Net, supported_types  # noqa: E402
from magic_init.errors import UnsupportedLayerError  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402

NEEDED = ["Convolution", "Deconvolution", "Pooling", "LRN", "ReLU", "PReLU", "ELU", "Sigmoid",
          "TanH", "AbsVal", "Power", "BNLL", "Dropout", "BatchNorm", "Scale", "Bias", "Input",
          "Split", "Concat", "Slice", "Flatten", "Reshape", "Eltwise", "Silence", "InnerProduct",
          "Softmax", "SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss", "Accuracy"]


def _net(text):
    return text_format.Merge(text, caffe_pb2.NetParameter())


def test_registry_has_the_types_caffe_nets_need():
    missing = [t for t in NEEDED if t not in supported_types()]
    assert missing == []
    assert supported_types() == sorted(supported_types())


def test_unsupported_type_fails_at_construction_naming_layer_type_and_origin():
    net = _net('layer { name: "data" type: "Input" top: "data" '
               'input_param { shape { dim: 1 dim: 2 } } } '
               'layer { name: "odd" type: "Frobnicate" bottom: "data" top: "y" }')
    with pytest.raises(UnsupportedLayerError) as info:
        Net(net)
    message = str(info.value)
    assert "'odd'" in message and "'Frobnicate'" in message
    assert "comes from a Caffe fork" in message and "--backend caffe" in message and "\n" not in message


def test_type_lookup_is_case_exact():
    net = _net('layer { name: "data" type: "Input" top: "data" '
               'input_param { shape { dim: 1 dim: 2 } } } '
               'layer { name: "r" type: "relu" bottom: "data" top: "data" }')
    with pytest.raises(UnsupportedLayerError):
        Net(net)
