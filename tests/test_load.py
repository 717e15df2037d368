"""magic_init.load: which layers a run initializes, and the checks on what is loaded and saved."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from magic_init import load  # noqa: E402
from magic_init.errors import ModelFileError, NetDefinitionError  # noqa: E402
from magic_init.io import read_caffemodel, read_prototxt, write_caffemodel  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny.prototxt"
AFFINE = ["conv1", "conv2", "fc3", "fc4"]


def tiny_model(tmp_path, layers, poison=None):
    """A caffemodel for models/tiny.prototxt holding only ``layers`` (random weights); ``poison``
    = (layer, blob, value) writes one bad value."""
    net = load.build_net(load.read_model(str(TINY)), backend="torch", batch_size=2)
    rng = np.random.default_rng(0)
    weights = {name: [rng.standard_normal(b.data.shape).astype(np.float32) for b in net.params[name]]
               for name in layers}
    if poison:
        layer, blob, value = poison
        weights[layer][blob].flat[3] = value
    path = tmp_path / "part.caffemodel"
    write_caffemodel(str(path), read_prototxt(str(TINY)), weights)
    return str(path)


def plan_for(weights_path=None, **kw):
    model = load.read_model(str(TINY), weights_path)
    return load.plan_initialization(model, load.build_net(model, backend="torch", batch_size=2), **kw)


def test_without_load_every_affine_layer_is_initialized_even_with_zero_from():
    assert plan_for().initialize == AFFINE
    assert plan_for(zero_from="fc3").initialize == AFFINE


def test_with_load_the_layers_the_model_lacks_are_initialized(tmp_path):
    plan = plan_for(tiny_model(tmp_path, ["conv1", "conv2", "fc3"]))
    assert plan.initialize == ["fc4"] and plan.new == ["fc4"] and plan.loaded == ["conv1", "conv2", "fc3"]
    assert plan_for(tiny_model(tmp_path, AFFINE)).initialize == []
    assert plan_for(tiny_model(tmp_path, AFFINE), zero_from="conv2").initialize == ["conv2", "fc3", "fc4"]
    assert plan_for(tiny_model(tmp_path, ["conv1"]), zero_all=True).initialize == AFFINE


def test_a_loaded_all_zero_layer_is_kept(tmp_path):
    """Zero weights that the model provides (a zero-initialized residual branch) are the user's."""
    path = tiny_model(tmp_path, AFFINE)
    weights = read_caffemodel(path).weights
    weights["fc3"][0][...] = 0
    write_caffemodel(path, read_prototxt(str(TINY)), weights)
    assert plan_for(path).initialize == []


def test_zero_from_an_unknown_layer_is_named():
    with pytest.raises(NetDefinitionError, match="'nope'"):
        plan_for(zero_from="nope")


def test_a_nan_or_inf_in_the_loaded_model_names_layer_and_blob(tmp_path):
    with pytest.raises(ModelFileError, match=r"layer 'conv2' blob 0 \(weights\) has 1 non-finite"):
        load.read_model(str(TINY), tiny_model(tmp_path, AFFINE, poison=("conv2", 0, np.nan)))
    with pytest.raises(ModelFileError, match=r"layer 'fc3' blob 1 \(bias\) has 1 non-finite"):
        load.read_model(str(TINY), tiny_model(tmp_path, AFFINE, poison=("fc3", 1, np.inf)))


def test_saving_refuses_non_finite_and_unintended_zero_weights(tmp_path):
    out = tmp_path / "out.caffemodel"
    model = load.read_model(str(TINY))
    net = load.build_net(model, backend="torch", batch_size=2)      # unloaded affine layers are zero
    with pytest.raises(ModelFileError, match="refusing to write .*layer 'conv1'.*all-zero"):
        load.save_model(str(out), model, net)
    for blobs in net.params.values():
        blobs[0].data[...] = 0.5
    net.params["fc4"][1].data[2] = np.nan
    with pytest.raises(ModelFileError, match="refusing to write .*layer 'fc4' blob 1"):
        load.save_model(str(out), model, net)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    net.params["fc4"][1].data[2] = 0
    load.save_model(str(out), model, net)
    assert read_caffemodel(str(out)).weights["fc4"][0].max() == 0.5


def test_saving_keeps_a_layer_that_was_loaded_all_zero(tmp_path):
    path = tiny_model(tmp_path, AFFINE)
    weights = read_caffemodel(path).weights
    weights["fc3"][0][...] = 0
    write_caffemodel(path, read_prototxt(str(TINY)), weights)
    model = load.read_model(str(TINY), path)
    net = load.build_net(model, backend="torch", batch_size=2)
    load.save_model(str(tmp_path / "out.caffemodel"), model, net)
    assert not read_caffemodel(str(tmp_path / "out.caffemodel")).weights["fc3"][0].any()


def test_a_net_without_affine_layers_is_refused():
    net = load.build_net(load.read_model(str(TINY)), backend="torch", batch_size=2)
    net.layer_types = ["ReLU"] * len(net.layer_types)
    with pytest.raises(NetDefinitionError, match="no Convolution"):
        load.affine_layer_names(net)


# ----------------------------------------------------------------------------- issue 13: one instantiation

EXAMPLES = REPO / "examples" / "images"

STAGED = """
layer { name: "a_data" type: "ImageData" top: "data" top: "label" include { phase: TEST stage: "a" }
  image_data_param { source: "list_a.txt" root_folder: "%(root)s/" batch_size: 2 new_height: 20 new_width: 20 } }
layer { name: "b_data" type: "ImageData" top: "data" top: "label" include { phase: TEST stage: "b" }
  image_data_param { source: "list_b.txt" root_folder: "%(root)s/" batch_size: 2 new_height: 24 new_width: 28
                     is_color: false } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
"""


def staged_net(tmp_path, state=""):
    """Two TEST-phase ImageData layers under stage rules, each with its own list of images."""
    (tmp_path / "list_a.txt").write_text("astronaut.jpg 0\ncoffee.jpg 1\n")
    (tmp_path / "list_b.txt").write_text("hubble.jpg 2\nrocket.jpg 3\nretina.jpg 4\n")
    path = tmp_path / "staged.prototxt"
    path.write_text(state + STAGED % {"root": EXAMPLES})
    return str(path)


@pytest.mark.parametrize("how", ["argument", "prototxt state"])
def test_the_sample_comes_from_the_data_layer_the_net_is_built_from(tmp_path, how):
    state = 'state { stage: "b" }\n' if how == "prototxt state" else ""
    model = load.read_model(staged_net(tmp_path, state))
    stages = ("b",) if how == "argument" else ()
    net = load.build_net(model, backend="torch", batch_size=3, stages=stages)
    assert net.net_param.layer[0].name == "b_data" and net.blobs["data"].data.shape == (3, 1, 24, 28)
    sample = load.load_sample(net, model, batch_size=3)
    assert [Path(name).name for name in sample.names] == ["hubble.jpg", "rocket.jpg", "retina.jpg"]
    assert sample.data.shape == (3, 1, 24, 28) and list(sample.labels) == [2, 3, 4]


def test_the_other_stage_gives_the_other_layer(tmp_path):
    model = load.read_model(staged_net(tmp_path))
    net = load.build_net(model, backend="torch", batch_size=2, stages=("a",))
    sample = load.load_sample(net, model, batch_size=2)
    assert net.blobs["data"].data.shape == (2, 3, 20, 20) == sample.data.shape
    assert [Path(name).name for name in sample.names] == ["astronaut.jpg", "coffee.jpg"]


def test_build_net_instantiates_once(tmp_path, monkeypatch):
    from magic_init import netgraph

    calls = []
    real = netgraph.instantiate
    monkeypatch.setattr(netgraph, "instantiate", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model = load.read_model(staged_net(tmp_path))
    net = load.build_net(model, backend="torch", batch_size=2, size=(16, 16), stages=("a",))
    assert len(calls) == 1 and net.blobs["data"].data.shape == (2, 3, 16, 16)


def test_input_shapes_of_a_run_come_from_netgraph():
    model = load.read_model(str(TINY))
    net = load.build_net(model, backend="torch", batch_size=5, size=(40, 44))
    image = load.input_blob(net.net_param)
    shape = net.blobs[image].data.shape
    planned = {top: tuple(layer.input_param.shape[i].dim) for layer in load.instantiate_for_run(model, 5, (40, 44)).layer
               if layer.type == "Input" for i, top in enumerate(layer.top)}
    assert planned[image] == shape and shape[0] == 5 and shape[2:] == (40, 44)
