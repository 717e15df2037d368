"""netgraph.instantiate: Caffe's include/exclude filtering, data layers -> Input, InsertSplits."""
from __future__ import annotations

import json

import pytest
from google.protobuf import text_format

from magic_init.errors import NetDefinitionError
from magic_init.netgraph import instantiate, insert_splits
from magic_init.proto import caffe_pb2


def _net(text):
    return text_format.Merge(text, caffe_pb2.NetParameter())


def _names(net, splits=True):
    return [layer.name for layer in net.layer if splits or layer.type != "Split"]


RULES = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "train_only" type: "ReLU" bottom: "data" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "data" top: "b" include { phase: TEST } }
layer { name: "not_test" type: "ReLU" bottom: "data" top: "c" exclude { phase: TEST } }
layer { name: "level2" type: "ReLU" bottom: "data" top: "d" include { min_level: 2 } }
layer { name: "upto1" type: "ReLU" bottom: "data" top: "e" include { max_level: 1 } }
layer { name: "stage_ab" type: "ReLU" bottom: "data" top: "f" include { stage: "a" stage: "b" } }
layer { name: "not_a" type: "ReLU" bottom: "data" top: "g" include { not_stage: "a" } }
layer { name: "either" type: "ReLU" bottom: "data" top: "h" include { stage: "x" } include { phase: TRAIN } }
layer { name: "own_phase" type: "Dropout" bottom: "data" top: "i" phase: TRAIN }
"""


def test_phase_level_and_stage_rules():
    net = _net(RULES)
    test = instantiate(net, "test")
    assert _names(test, splits=False) == ["data", "test_only", "upto1", "not_a", "own_phase"]
    train = instantiate(net, "train", level=2, stages=("a", "b"))
    assert _names(train, splits=False) == ["data", "train_only", "not_test", "level2", "stage_ab", "either",
                             "own_phase"]
    assert _names(instantiate(net, "test", stages=("x",)), splits=False)[-2:] == ["either", "own_phase"]


def test_layers_get_the_net_phase_unless_they_set_their_own():
    test = instantiate(_net(RULES), "test")
    phases = {layer.name: layer.phase for layer in test.layer}
    assert phases["test_only"] == caffe_pb2.TEST and phases["own_phase"] == caffe_pb2.TRAIN


def test_include_and_exclude_together_is_an_error():
    net = _net('layer { name: "x" type: "ReLU" include { phase: TEST } exclude { phase: TRAIN } }')
    with pytest.raises(NetDefinitionError, match="'x'"):
        instantiate(net)


def test_input_net_is_not_modified():
    net = _net(RULES)
    before = net.SerializeToString()
    instantiate(net, "train")
    assert net.SerializeToString() == before


DATA = """
layer { name: "imgs" type: "ImageData" top: "data" top: "label"
        image_data_param { source: "list.txt" batch_size: 8 new_height: 40 new_width: 30 } }
layer { name: "db" type: "Data" top: "data2" top: "label2" include { phase: TRAIN }
        data_param { source: "lmdb" batch_size: 16 } transform_param { crop_size: 227 } }
layer { name: "db_test" type: "Data" top: "data2" top: "label2" include { phase: TEST }
        data_param { source: "lmdb" batch_size: 4 } }
"""


def test_data_layers_become_input_layers_with_inferred_shapes():
    train = instantiate(_net(DATA), "train")
    layer = train.layer[0]
    assert (layer.name, layer.type, list(layer.top)) == ("imgs", "Input", ["data", "label"])
    assert [list(s.dim) for s in layer.input_param.shape] == [[8, 3, 40, 30], [8]]
    assert [list(s.dim) for s in train.layer[1].input_param.shape] == [[16, 3, 227, 227], [16]]


def test_data_layer_without_known_shape_asks_for_one():
    with pytest.raises(NetDefinitionError, match="'db_test'.*input_shapes"):
        instantiate(_net(DATA), "test")
    net = instantiate(_net(DATA), "test", input_shapes={"data2": (4, 1, 28, 28)})
    assert [list(s.dim) for s in net.layer[1].input_param.shape] == [[4, 1, 28, 28], [4]]


def test_input_shapes_for_an_unknown_blob_is_an_error():
    with pytest.raises(NetDefinitionError, match="'dta'.*'data'"):
        instantiate(_net(RULES), input_shapes={"dta": (5, 2)})


def test_input_shapes_override_an_input_layer_and_legacy_inputs():
    net = instantiate(_net(RULES), input_shapes={"data": (5, 2)})
    assert list(net.layer[0].input_param.shape[0].dim) == [5, 2]
    legacy = _net('input: "x" input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5 '
                  'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }')
    layer = instantiate(legacy).layer[0]
    assert layer.type == "Input" and list(layer.input_param.shape[0].dim) == [2, 3, 4, 5]


FANOUT = """
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "a" type: "Sigmoid" bottom: "ip" top: "a" }
layer { name: "b" type: "TanH" bottom: "ip" top: "b" }
layer { name: "inplace" type: "ReLU" bottom: "b" top: "b" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "ip" top: "sum" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "sum" bottom: "label" top: "acc" }
"""


def _expected_fanout():
    return (["data", "label_data_1_split", "ip", "relu", "ip_relu_0_split", "a", "b", "inplace",
             "sum", "sum_sum_0_split", "loss", "acc"],
            {"a": ["ip_relu_0_split_0"], "b": ["ip_relu_0_split_1"],
             "inplace": ["b"], "sum": ["a", "b", "ip_relu_0_split_2"], "loss": ["sum_sum_0_split_0", "label_data_1_split_0"],
             "acc": ["sum_sum_0_split_1", "label_data_1_split_1"]})


def test_insert_splits_names_and_in_place_layers():
    net = instantiate(_net(FANOUT))
    layers, bottoms = _expected_fanout()
    assert _names(net) == layers
    for layer in net.layer:
        if layer.name in bottoms:
            assert list(layer.bottom) == bottoms[layer.name]
    split = net.layer[4]
    assert split.type == "Split" and list(split.bottom) == ["ip"]
    assert list(split.top) == ["ip_relu_0_split_%d" % j for j in range(3)]
    assert list(net.layer[7].top) == ["b"]           # in-place: top = bottom


def test_loss_weight_counts_as_a_reader():
    net = insert_splits(_net(
        'layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 } } }'
        'layer { name: "l" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "y" loss_weight: 2 }'
        'layer { name: "r" type: "ReLU" bottom: "y" top: "z" }'))
    split = [layer for layer in net.layer if layer.name == "y_l_0_split"][0]
    assert list(split.loss_weight) == [2.0, 0.0]
    assert list(net.layer[-1].bottom) == ["y_l_0_split_1"]
    assert not net.layer[2].loss_weight


def test_split_names_match_real_caffe(caffe_env, tmp_path):
    host, inside = caffe_env.tmpdir()
    (host / "net.prototxt").write_text(FANOUT)
    caffe_env.python(
        "import caffe, json; net = caffe.Net('%s/net.prototxt', caffe.TEST); "
        "json.dump({'layers': list(net._layer_names), 'blobs': list(net.blobs.keys()), "
        "'bottoms': {k: v for k, v in net.bottom_names.items()}}, open('%s/out.json', 'w'))"
        % (inside, inside))
    caffe = json.loads((host / "out.json").read_text())
    ours = instantiate(_net(FANOUT))
    assert caffe["layers"] == _names(ours)
    assert caffe["bottoms"] == {layer.name: list(layer.bottom) for layer in ours.layer}
    blobs = []
    for layer in ours.layer:
        blobs.extend(top for top in layer.top if top not in blobs)
    assert caffe["blobs"] == blobs


# ----------------------------------------------------------------------------- issue 13

from magic_init import netgraph  # noqa: E402


@pytest.mark.parametrize("phase", ["TRAIN", "train", "Train", caffe_pb2.TRAIN])
def test_phase_is_normalized_however_it_is_written(phase):
    assert netgraph.phase_name(phase) == "train"
    net = instantiate(_net(RULES), phase)
    assert "train_only" in _names(net) and "test_only" not in _names(net)
    assert net.state.phase == caffe_pb2.TRAIN
    assert {layer.phase for layer in net.layer if layer.name != "own_phase"} == {caffe_pb2.TRAIN}


def test_an_unknown_phase_is_named():
    for phase in ("val", 7):
        with pytest.raises(NetDefinitionError, match="unknown phase"):
            netgraph.phase_name(phase)


def test_stages_add_to_the_prototxts_own_state_as_caffe_does():
    net = _net('state { stage: "a" } ' + RULES)
    assert "not_a" not in _names(instantiate(net))
    assert "stage_ab" in _names(instantiate(net, stages=("b",)))
    assert list(netgraph.net_state("test", stages=("a", "b"), net=net).stage) == ["a", "b"]


def test_legacy_inputs_are_upgraded_once_as_caffe_does():
    """The one upgrade (io.upgrade_net): ``input`` without a shape is dropped, as Caffe drops it."""
    legacy = _net('input: "x" input_shape { dim: 1 dim: 2 } input: "y" input_shape { dim: 3 } '
                  'layer { name: "r" type: "ReLU" bottom: "x" top: "z" }')
    first = instantiate(legacy).layer[0]
    assert (first.name, list(first.top)) == ("input", ["x", "y"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 2], [3]]
    assert not hasattr(netgraph, "_with_input_layer")
    v1 = _net('layers { name: "in" type: DATA top: "x" data_param { batch_size: 2 } '
              'transform_param { crop_size: 5 } } layers { name: "r" type: RELU bottom: "x" top: "x" }')
    assert [(layer.name, layer.type) for layer in instantiate(v1).layer] == [("in", "Input"), ("r", "ReLU")]


SIZED = """
layer { name: "imgs" type: "Data" top: "data" top: "label" data_param { source: "l" batch_size: 8 } }
layer { name: "aux" type: "Input" top: "aux" input_param { shape { dim: 1 dim: 7 } } }
"""


def _shapes(net):
    return {top: list(layer.input_param.shape[i].dim) for layer in net.layer if layer.type == "Input"
            for i, top in enumerate(layer.top)}


def test_batch_size_and_size_decide_every_input_shape():
    net = instantiate(_net(SIZED), batch_size=4, size=(20, 30), channels=lambda layer: 1)
    assert _shapes(net) == {"data": [4, 1, 20, 30], "label": [4], "aux": [4, 7]}
    net = instantiate(_net(SIZED), batch_size=4, size=(20, 30), input_shapes={"aux": (2, 2)})
    assert _shapes(net) == {"data": [4, 3, 20, 30], "label": [4], "aux": [2, 2]}


def test_size_sets_an_input_layers_image_and_needs_four_axes():
    assert _shapes(instantiate(_net(RULES.replace("dim: 1 dim: 2", "dim: 1 dim: 3 dim: 8 dim: 8")),
                               batch_size=2, size=(5, 6)))["data"] == [2, 3, 5, 6]
    with pytest.raises(NetDefinitionError, match="4-D image input, 'data'"):
        instantiate(_net(RULES), batch_size=2, size=(5, 6))


def test_a_data_layer_without_a_size_still_names_itself():
    with pytest.raises(NetDefinitionError, match="'imgs'.*--size"):
        instantiate(_net(SIZED), batch_size=4)


def test_data_layers_follow_phase_level_and_stages():
    net = _net(STAGED)
    assert [layer.name for layer in netgraph.data_layers(net, "test", stages=("b",))] == ["b_data"]
    assert [layer.name for layer in netgraph.data_layers(net, "TRAIN")] == ["train_data"]
    assert netgraph.data_layers(net, "test") == []


STAGED = """
layer { name: "train_data" type: "ImageData" top: "data" include { phase: TRAIN }
        image_data_param { source: "t" new_height: 4 new_width: 4 } }
layer { name: "a_data" type: "ImageData" top: "data" include { phase: TEST stage: "a" }
        image_data_param { source: "a" new_height: 5 new_width: 5 } }
layer { name: "b_data" type: "ImageData" top: "data" include { phase: TEST stage: "b" }
        image_data_param { source: "b" new_height: 6 new_width: 7 } }
"""


def test_an_instantiated_net_is_built_as_it_is():
    done = instantiate(_net(RULES), "train")
    assert netgraph.net_to_build(done, "TRAIN", instantiated=True) == done
    with pytest.raises(NetDefinitionError, match="instantiated in phase TRAIN, not TEST"):
        netgraph.net_to_build(done, "test", instantiated=True)
    with pytest.raises(NetDefinitionError, match="already instantiated"):
        netgraph.net_to_build(done, "train", stages=("a",), instantiated=True)


def test_force_color_and_force_gray_decide_the_channels_and_not_both():
    layer = caffe_pb2.LayerParameter(name="db", type="Data")
    assert netgraph.forced_color(layer) is None and netgraph.data_layer_channels(layer) is None
    layer.transform_param.force_gray = True
    assert netgraph.forced_color(layer) is False and netgraph.data_layer_channels(layer) == 1
    layer.transform_param.force_color = True
    with pytest.raises(NetDefinitionError, match="'db'.*force_color and force_gray"):
        netgraph.forced_color(layer)
