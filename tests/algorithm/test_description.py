"""magic_init.algorithm.description: the neutral vocabulary the algorithm reads a net through."""
from __future__ import annotations

import numpy as np
import pytest

from fakenet import small_convnet
from magic_init.algorithm import description as d
from magic_init.algorithm import initialize
from magic_init.errors import NetDefinitionError


def _chain():
    """in -> conv -> relu -> dropout -> fc -> loss, written without any framework."""
    ops = [d.Op(0, "in", "input", d.INPUT), d.Op(1, "conv", "conv", d.AFFINE, d.AffineLayer(d.CONV, 1)),
           d.Op(2, "relu", "relu", d.PASSES), d.Op(3, "drop", "dropout", d.PASSES, noise=True),
           d.Op(4, "fc", "linear", d.AFFINE, d.AffineLayer(d.LINEAR)), d.Op(5, "loss", "loss", d.STRIPS)]
    bottoms = {"in": [], "conv": ["x"], "relu": ["c"], "drop": ["c"], "fc": ["c"], "loss": ["f", "label"]}
    tops = {"in": ["x"], "conv": ["c"], "relu": ["c"], "drop": ["c"], "fc": ["f"], "loss": ["l"]}
    return d.NetDescription(ops, ["x"], bottoms, tops)


def test_queries_on_a_description_without_a_framework():
    net = _chain()
    assert net.affine_layers() == [1, 4] == net.rescalable_layers()
    assert net.noise_layers() == [3]
    assert net.last_compute_layer() == 4
    assert net.output_blobs(4) == ["f"]
    used = net.last_use()
    assert used == {"x": 1, "c": 4, "f": 5, "label": 5}
    assert net.live_after(1, used) == ["c"] and net.live_after(4, used) == ["f"]
    assert net.affine("relu") is None and net.affine("fc").kind == d.LINEAR


def test_a_net_of_inputs_and_losses_has_nothing_to_compute():
    ops = [d.Op(0, "in", "input", d.INPUT), d.Op(1, "loss", "loss", d.STRIPS)]
    with pytest.raises(NetDefinitionError, match="no layer to compute"):
        d.NetDescription(ops, ["x"], {"in": [], "loss": ["x"]}, {"in": ["x"], "loss": ["l"]}).last_compute_layer()


def test_an_unknown_geometry_is_an_error_naming_the_layer():
    with pytest.raises(NetDefinitionError, match="layer 'c': convolution geometry unknown"):
        d.AffineLayer(d.CONV, geometry_error="layer 'c': convolution geometry unknown").window()


def test_a_net_without_a_description_is_refused():
    with pytest.raises(NetDefinitionError, match="no description"):
        d.describe(object())


def test_the_algorithm_reads_the_description_not_caffe():
    """With its Caffe type strings and layer parameters gone after it was described, a net
    initializes to the same weights bit for bit: the algorithm reads only the description."""
    x = np.random.default_rng(0).standard_normal((16, 3, 12, 12)).astype(np.float32)
    reference = small_convnet()
    initialize(reference, x, init="kmeans", seed=3, batch_size=8)
    net = small_convnet()
    assert net.description.affine_layers()                       # described while it was still Caffe
    net.layer_types = ["?"] * len(net.layer_types)
    net.net_param = None
    initialize(net, x, init="kmeans", seed=3, batch_size=8)
    for name, blobs in reference.params.items():
        for ours, theirs in zip(net.params[name], blobs):
            assert np.array_equal(ours.data, theirs.data), name
    assert np.any(reference.params["conv1"][0].data)
