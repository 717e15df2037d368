"""magic_init.adapters.caffe: a Caffe net described in the algorithm's neutral vocabulary.

The expected rules come from the Caffe facts the adapter must carry over (docs/ARCHITECTURE.md,
``layer_facts``): what each layer does to a positive scale, which layers are affine and how their
weights are laid out, where Caffe's parameters (group, axis, transpose, Eltwise operation, concat
axis, lr_mult, shared ``param { name }``) change that."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from magic_init import layer_facts as facts  # noqa: E402
from magic_init.adapters import caffe as adapter  # noqa: E402
from magic_init.algorithm import description as d  # noqa: E402
from magic_init.conv_geometry import ConvGeometry  # noqa: E402
from magic_init.engine import Net  # noqa: E402
from magic_init.io import parse_prototxt  # noqa: E402

NET = '''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_h: 3 kernel_w: 1 pad_w: 1 stride: 2 group: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2" convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
layer { name: "prod" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "prod" eltwise_param { operation: PROD } }
layer { name: "cat1" type: "Concat" bottom: "sum" bottom: "prod" top: "cat1" }
layer { name: "cat2" type: "Concat" bottom: "sum" bottom: "prod" top: "cat2" concat_param { axis: 2 } }
layer { name: "scale" type: "Scale" bottom: "cat1" top: "scaled" param { lr_mult: 0 } }
layer { name: "gamma" type: "Scale" bottom: "cat1" top: "gamma" scale_param { bias_term: true } }
layer { name: "drop" type: "Dropout" bottom: "gamma" top: "gamma" }
layer { name: "flat" type: "Flatten" bottom: "gamma" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"
        inner_product_param { num_output: 3 transpose: true } }
layer { name: "up" type: "Deconvolution" bottom: "conv2" top: "up" convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
layer { name: "tanh" type: "TanH" bottom: "up" top: "tanh" }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


@pytest.fixture(scope="module")
def description():
    param = parse_prototxt(NET)
    param.force_backward = True
    return adapter.describe(Net(param, seed=0))


def test_each_layer_gets_the_rule_caffe_semantics_give_it(description):
    rules = {op.name: op.rule for op in description.ops if not op.name.endswith("_split")}
    assert {op.rule for op in description.ops if op.name.endswith("_split")} == {d.PASSES}   # Caffe's Splits
    assert rules == {
        "data": d.INPUT, "conv1": d.AFFINE, "relu1": d.PASSES, "norm1": d.APPROX, "conv2": d.AFFINE,
        "sum": d.TIES, "prod": d.BLOCKS, "cat1": d.CONCATENATES, "cat2": d.BLOCKS,
        "scale": d.BLOCKS, "gamma": d.AFFINE, "drop": d.PASSES, "flat": d.RESHAPES, "fc": d.AFFINE,
        "up": d.AFFINE, "tanh": d.BLOCKS, "prob": d.STRIPS}
    assert [op.index for op in description.ops] == list(range(len(description.ops)))


def test_barriers_say_why_in_the_user_s_words(description):
    assert description.op("prod").label == "Eltwise PROD" and description.op("prod").why == d.NOT_HOMOGENEOUS
    assert description.op("cat2").why == d.NOT_KNOWN_HOMOGENEOUS
    assert description.op("tanh").why == d.NOT_HOMOGENEOUS
    assert description.op("norm1").why == d.NOT_HOMOGENEOUS          # when rescaling exactly
    assert description.op("scale").why == "not rescalable: its γ is not learned (lr_mult: 0)"


def test_affine_layers_carry_their_weight_layout(description):
    conv1 = description.affine("conv1")
    assert conv1.kind == d.CONV and conv1.groups == 2
    assert conv1.window() == ConvGeometry(kernel=(3, 1), pad=(0, 1), stride=(2, 2), dilation=(1, 1), group=2)
    assert description.affine("fc") == d.AffineLayer(d.LINEAR, groups=1, axis=1, transposed=True)
    assert description.affine("up").kind == d.DECONV and description.affine("up").groups == 1
    assert description.affine("gamma") == d.AffineLayer(d.DIAGONAL, groups=12)
    assert description.affine("relu1") is None


def test_the_queries_the_algorithm_reads(description):
    names = description.names
    assert [names[i] for i in description.affine_layers()] == ["conv1", "conv2", "fc", "up"]
    assert [names[i] for i in description.rescalable_layers()] == ["conv1", "conv2", "gamma", "fc", "up"]
    assert [names[i] for i in description.noise_layers()] == ["drop"]
    assert names[description.last_compute_layer()] == "tanh"


def test_every_affine_type_of_the_table_has_a_kind():
    assert set(adapter.AFFINE_KINDS) == set(facts.types(role=facts.AFFINE))


def test_shared_weights_are_reported():
    """(Unlike sharing is refused: tests/algorithm/test_shared_weights.py.)"""
    text = '''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" param { name: "w" }
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" param { name: "w" }
        convolution_param { num_output: 3 kernel_size: 1 } }
'''
    description = adapter.describe(Net(parse_prototxt(text), seed=0))
    assert description.shared == {("b", 0): ("a", 0)}
    assert description.sharing_layers() == {"a": ["a", "b"]}


def test_describing_a_net_reads_blob_shapes_and_allocates_no_activation():
    """A net is built at the largest batch ``--batch-size auto`` may choose; describing it must not
    materialize its blobs there (ResNet-152 at 16 images: 1.4 GB, docs/RESULTS.md 0d)."""
    net = Net(parse_prototxt(NET), seed=0)
    adapter.describe(net)
    allocated = [name for name, blob in net.blobs.items() if blob._data_mirror is not None and name not in net.inputs]
    assert not allocated
