"""choose_source: --data with the ImageNet default vs the prototxt's own data layer; overrides."""
from __future__ import annotations

import os

import numpy as np
import pytest
from google.protobuf import text_format

from magic_init.data import Transform, choose_source, find_data_layer, load_sample
from magic_init.errors import DataError
from magic_init.proto import caffe_pb2

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "images"))
LIST = os.path.join(EXAMPLES, "list.txt")

NET = """
layer { name: "train_data" type: "ImageData" top: "data" top: "label" include { phase: TRAIN }
  image_data_param { source: "nowhere.txt" } }
layer { name: "test_data" type: "ImageData" top: "data" top: "label" include { phase: TEST }
  image_data_param { source: "%s" root_folder: "%s/" new_height: 40 new_width: 50 }
  transform_param { crop_size: 32 mean_value: 1 mean_value: 2 mean_value: 3 scale: 0.5 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" }
""" % (LIST, EXAMPLES)


def net_param():
    return text_format.Parse(NET, caffe_pb2.NetParameter())


def test_data_option_uses_imagenet_convention_at_the_net_input_size():
    source, transform = choose_source(LIST, net_param(), input_shape=(16, 3, 36, 48))
    assert transform.resize == (36, 48) and transform.scale == 1.0 and transform.crop_size == 0
    np.testing.assert_array_equal(transform.mean, [104, 117, 123])
    assert load_sample(source, transform).data.shape == (8, 3, 36, 48)


def test_one_channel_input_reads_gray():
    source, transform = choose_source(LIST, input_shape=(1, 1, 20, 20))
    assert not transform.is_color
    np.testing.assert_array_equal(transform.mean, [117])
    assert load_sample(source, transform, num_images=2).data.shape == (2, 1, 20, 20)


def test_without_data_the_test_phase_data_layer_is_used():
    assert find_data_layer(net_param(), "train").name == "train_data"
    source, transform = choose_source(None, net_param())
    assert transform.resize == (40, 50) and transform.crop_size == 32 and transform.scale == 0.5
    sample = load_sample(source, transform)
    assert sample.data.shape == (8, 3, 32, 32)
    np.testing.assert_array_equal(sample.labels, np.arange(8))


def test_options_override_mean_scale_and_size():
    _, transform = choose_source(None, net_param(), mean=[0], scale=2, size=(64, 64))
    assert transform.resize == (64, 64) and transform.scale == 2.0 and transform.crop_size == 32
    np.testing.assert_array_equal(transform.mean, [0])
    assert isinstance(transform, Transform)


def test_no_data_and_no_data_layer_is_a_clear_error():
    net = text_format.Parse('layer { name: "in" type: "Input" top: "data" }', caffe_pb2.NetParameter())
    with pytest.raises(DataError, match="give --data"):
        choose_source(None, net)


STAGED = """
layer { name: "a_data" type: "ImageData" top: "data" include { phase: TEST stage: "a" }
  image_data_param { source: "%s" root_folder: "%s/" new_height: 10 new_width: 10 } }
layer { name: "b_data" type: "ImageData" top: "data" include { phase: TEST stage: "b" }
  image_data_param { source: "%s" root_folder: "%s/" new_height: 12 new_width: 14 } }
"""


def test_the_data_layer_is_chosen_by_netgraphs_rules_with_stages(tmp_path):
    (tmp_path / "a.txt").write_text("astronaut.jpg 0\n")
    (tmp_path / "b.txt").write_text("hubble.jpg 1\nrocket.jpg 2\n")
    net = text_format.Parse(STAGED % (tmp_path / "a.txt", EXAMPLES, tmp_path / "b.txt", EXAMPLES),
                            caffe_pb2.NetParameter())
    assert find_data_layer(net) is None                 # neither stage is on
    assert find_data_layer(net, "test", stages=("b",)).name == "b_data"
    source, transform = choose_source(None, net, stages=("b",))
    assert [os.path.basename(p) for p in source.paths] == ["hubble.jpg", "rocket.jpg"]
    assert transform.resize == (12, 14)
    net.state.stage.append("a")                          # the prototxt's own state, as Caffe reads it
    assert find_data_layer(net).name == "a_data"


@pytest.mark.parametrize("phase", ["TRAIN", "train", caffe_pb2.TRAIN])
def test_the_phase_is_normalized_for_the_layer_and_its_transform(phase):
    assert find_data_layer(net_param(), phase).name == "train_data"
    _, transform = choose_source(None, net_param(), phase="TEST")
    assert transform.phase == "test"
