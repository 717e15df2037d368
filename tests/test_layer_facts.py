"""magic_init.layer_facts: one row per Caffe type, every engine type covered, every list a view of it."""
from __future__ import annotations

import numpy as np
import pytest

from magic_init import layer_facts as facts
from magic_init import netgraph
from magic_init import load
from magic_init.adapters import caffe as caffe_adapter
from magic_init.data import layer as data_layer


def test_rows_use_known_roles_and_scales():
    for kind, row in facts.TABLE.items():
        assert row.role in facts.ROLES, kind
        assert row.scale in facts.SCALES, kind
        assert isinstance(row.nonhomogeneous, bool), kind


def test_roles_and_scales_agree():
    """Affine layers are the scale sources and nothing else is; losses are stripped; data and input
    layers start the net; a type known not homogeneous never passes a scale exactly."""
    for kind, row in facts.TABLE.items():
        assert (row.role == facts.AFFINE) == (row.scale == facts.SOURCE), kind
        if row.role == facts.LOSS:
            assert row.scale == facts.STRIPS and kind.endswith("Loss"), kind
        if row.role in (facts.DATA, facts.INPUT):
            assert row.scale == facts.BLOCKS, kind
        if row.scale in (facts.PASSES, facts.RESHAPES, facts.CONCATENATES):
            assert not row.nonhomogeneous, kind


def test_every_engine_type_has_a_row():
    """Adding a layer means one registry class and one row: a type the table does not know would
    silently become a barrier for Algorithm 2."""
    pytest.importorskip("torch")
    from magic_init.engine.layers import LAYER_TYPES
    missing = sorted(set(LAYER_TYPES) - set(facts.TABLE))
    assert missing == [], "engine layer types without a row in magic_init.layer_facts.TABLE: %s" % missing


def test_engine_loss_weight_follows_the_loss_role():
    """Caffe gives its LossLayer subclasses loss weight 1 on the first top; the engine reads the role."""
    pytest.importorskip("torch")
    from magic_init.engine.layers import LAYER_TYPES
    for kind, cls in LAYER_TYPES.items():
        weight = cls.default_loss_weight(cls.__new__(cls), 0)
        assert weight == (1.0 if facts.role(kind) == facts.LOSS else 0.0), kind


def test_unknown_types_block_without_a_claim():
    assert facts.facts("Frobnicate") == facts.UNKNOWN == facts.LayerFacts(facts.OTHER, facts.BLOCKS, False)
    assert not facts.is_affine("Frobnicate") and not facts.is_data("Frobnicate")


def test_the_package_lists_are_views_of_the_table():
    assert load.AFFINE_TYPES == ("Convolution", "InnerProduct", "Deconvolution")
    assert set(load.AFFINE_TYPES) == {k for k, r in facts.TABLE.items() if r.role == facts.AFFINE}
    # the Caffe adapter gives every affine type of the table a neutral kind
    assert set(caffe_adapter.AFFINE_KINDS) == set(load.AFFINE_TYPES)
    assert set(netgraph.DATA_LAYER_TYPES) == {k for k, r in facts.TABLE.items() if r.role == facts.DATA}
    # the data layers samples can be read from are data layers of the table
    assert data_layer.DATA_LAYER_TYPES == ("ImageData", "Data")
    assert all(facts.is_data(kind) for kind in data_layer.DATA_LAYER_TYPES)


def test_the_lists_keep_their_former_contents():
    """Issue 13 moved six lists into the table without changing what the algorithm does."""
    assert set(facts.types(scale=facts.STRIPS)) == {
        "SoftmaxWithLoss", "Softmax", "SigmoidCrossEntropyLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
        "MultinomialLogisticLoss", "ContrastiveLoss", "Accuracy", "Silence", "ArgMax"}
    assert set(facts.types(scale=facts.PASSES)) == {"ReLU", "PReLU", "Pooling", "Dropout", "Split", "Crop", "AbsVal"}
    assert facts.types(scale=facts.APPROX) == ("LRN",)
    assert set(facts.types(scale=facts.RESHAPES)) == {"Flatten", "Reshape"}
    assert set(facts.types(nonhomogeneous=True)) == {
        "LRN", "Sigmoid", "TanH", "BatchNorm", "Scale", "Bias", "Power", "Exp", "Log", "BNLL", "ELU",
        "Threshold", "Softmax", "MVN", "Eltwise"}
    assert netgraph.DATA_LAYER_TYPES == ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData",
                                         "DummyData", "Python", "AnnotatedData", "VideoData", "DenseImageData")


#: Parameters to run each engine type whose row says a scale passes it (test below).
PASSING_PARAMS = {
    "ReLU": "", "PReLU": "", "AbsVal": "", "Dropout": "", "Split": "",
    "Pooling": "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }",
    "Crop": 'bottom: "ref" crop_param { axis: 2 offset: 1 offset: 2 }',
}


@pytest.mark.parametrize("kind", sorted(PASSING_PARAMS))
def test_engine_types_that_pass_a_scale_are_homogeneous(kind):
    """f(r·x) = r·f(x) for r > 0, per channel, on the engine's own layer (TEST phase)."""
    pytest.importorskip("torch")
    from google.protobuf import text_format

    from magic_init.engine import Net
    from magic_init.proto import caffe_pb2
    tops = 'top: "y" top: "y2"' if kind == "Split" else 'top: "y"'
    net = Net(text_format.Merge(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 7 dim: 6 } } }\n'
        'layer { name: "ref" type: "Input" top: "ref" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 4 } } }\n'
        'layer { name: "f" type: "%s" bottom: "x" %s %s }' % (kind, tops, PASSING_PARAMS[kind]),
        caffe_pb2.NetParameter()))
    if kind == "PReLU":
        net.params["f"][0].data[...] = [0.25, -0.5, 2.0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    r = np.array([0.5, 3.0, 7.0], np.float32)[None, :, None, None]
    ref = np.zeros((2, 3, 5, 4), np.float32)
    plain = net.forward(x=x, ref=ref)["y"].copy()
    scaled = net.forward(x=x * r, ref=ref)["y"].copy()
    np.testing.assert_allclose(scaled, plain * r, rtol=1e-5, atol=1e-6)


def test_every_passing_engine_type_is_checked():
    pytest.importorskip("torch")
    from magic_init.engine.layers import LAYER_TYPES
    passing = sorted(kind for kind in LAYER_TYPES if facts.scale(kind) == facts.PASSES)
    assert passing == sorted(PASSING_PARAMS)
