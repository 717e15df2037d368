"""bench/deeper_resnet.py: a stage's last bottleneck block repeated, each copy reading the one before."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from google.protobuf import text_format

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import deeper_resnet  # noqa: E402

from magic_init.proto import caffe_pb2  # noqa: E402

BLOCK = """
layer {{ name: "res2{k}_branch2a" type: "Convolution" bottom: "{inp}" top: "res2{k}_branch2a"
        convolution_param {{ num_output: 4 kernel_size: 1 bias_term: false }} }}
layer {{ name: "bn2{k}_branch2a" type: "BatchNorm" bottom: "res2{k}_branch2a" top: "res2{k}_branch2a" }}
layer {{ name: "res2{k}_branch2a_relu" type: "ReLU" bottom: "res2{k}_branch2a" top: "res2{k}_branch2a" }}
layer {{ name: "res2{k}" type: "Eltwise" bottom: "{inp}" bottom: "res2{k}_branch2a" top: "res2{k}" }}
layer {{ name: "res2{k}_relu" type: "ReLU" bottom: "res2{k}" top: "res2{k}" }}
"""
NET = ('layer { name: "data" type: "Input" top: "res2a" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 5 } } }'
       + BLOCK.format(k="b1", inp="res2a") + BLOCK.format(k="b2", inp="res2b1")
       + 'layer { name: "pool" type: "Pooling" bottom: "res2b2" top: "pool" pooling_param { global_pooling: true } }')


def test_the_last_block_is_repeated_and_the_layers_after_read_the_new_last_block():
    net = deeper_resnet.deepen(text_format.Parse(NET, caffe_pb2.NetParameter()), {2: 6})
    names = [layer.name for layer in net.layer]
    assert [n for n in names if n.startswith("res2b") and "_" not in n] == ["res2b%d" % k for k in range(1, 6)]
    layers = {layer.name: layer for layer in net.layer}
    assert list(layers["res2b4_branch2a"].bottom) == ["res2b3"]
    assert list(layers["res2b5"].bottom) == ["res2b4", "res2b5_branch2a"]
    assert list(layers["bn2b5_branch2a"].top) == ["res2b5_branch2a"]
    assert list(layers["pool"].bottom) == ["res2b5"] and names[-1] == "pool"
    assert list(layers["res2b2_branch2a"].bottom) == ["res2b1"]             # the original blocks stay


def test_resnet_152_from_the_published_resnet_101():
    path = REPO.parent / "shared" / "realnets" / "resnet__ResNet-101-deploy.prototxt"
    if not path.exists():
        pytest.skip("no %s" % path)
    from magic_init.io import read_prototxt
    net = deeper_resnet.deepen(read_prototxt(str(path)), deeper_resnet.RESNET152_BLOCKS)
    assert sum(layer.type == "Convolution" for layer in net.layer) == 155   # 1 + 3·(3+8+36+3) + 4 projections
