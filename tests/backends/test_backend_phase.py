"""Issue 13: both backends normalize the phase once ("TRAIN", "train", caffe_pb2.TRAIN all filter
and run in TRAIN) and build an already instantiated NetParameter as it is."""
from __future__ import annotations

import json

import numpy as np
import pytest

from magic_init import netgraph
from magic_init.io import parse_prototxt
from magic_init.proto import caffe_pb2

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 200 } } }
layer { name: "train_only" type: "Power" bottom: "data" top: "data2" include { phase: TRAIN }
        power_param { scale: 2 } }
layer { name: "test_only" type: "Power" bottom: "data" top: "data2" include { phase: TEST }
        power_param { scale: 1 } }
layer { name: "drop" type: "Dropout" bottom: "data2" top: "d" dropout_param { dropout_ratio: 0.5 } }
"""
PHASES = ["TRAIN", "train", int(caffe_pb2.TRAIN)]


def check(net, x):
    """(phase, layer names, whether dropout zeroed some units, whether kept units are 2x/(1-p))."""
    net.blobs["data"].data[...] = x
    out = np.array(net.forward()["d"])
    kept = out != 0
    return (net.phase, list(net.layer_names), bool((~kept).any()),
            bool(np.allclose(out[kept], 4 * x[kept], rtol=1e-6)))


@pytest.mark.parametrize("phase", PHASES)
def test_engine_filters_and_runs_in_train_however_the_phase_is_written(phase):
    pytest.importorskip("torch")
    from magic_init.engine import Net

    x = np.random.RandomState(0).uniform(1, 2, (4, 200)).astype(np.float32)
    for net in (Net(parse_prototxt(NET), phase=phase, seed=0),
                Net(netgraph.instantiate(parse_prototxt(NET), phase), phase=phase, instantiated=True)):
        assert check(net, x) == ("train", ["data", "train_only", "drop"], True, True)


def test_engine_refuses_an_instantiated_net_of_another_phase():
    pytest.importorskip("torch")
    from magic_init.engine import Net
    from magic_init.errors import NetDefinitionError

    with pytest.raises(NetDefinitionError, match="instantiated in phase TEST, not TRAIN"):
        Net(netgraph.instantiate(parse_prototxt(NET)), phase="TRAIN", instantiated=True)


CHECK = r"""
import json, sys, numpy as np
from magic_init import load, netgraph
from magic_init.backends.pycaffe import PycaffeNet
from magic_init.io import parse_prototxt
NET = sys.argv[1]
x = np.random.RandomState(0).uniform(1, 2, (4, 200)).astype(np.float32)
def check(net):
    net.blobs["data"].data[...] = x
    out = np.array(net.forward()["d"])
    kept = out != 0
    return [net.phase, list(net.layer_names), bool((~kept).any()), bool(np.allclose(out[kept], 4 * x[kept], rtol=1e-6))]
results = {}
for phase in json.loads(sys.argv[2]):
    results[str(phase)] = [check(PycaffeNet(parse_prototxt(NET), phase=phase)),
                           check(PycaffeNet(netgraph.instantiate(parse_prototxt(NET), phase), phase=phase,
                                            instantiated=True))]
calls = []
real = netgraph.instantiate
netgraph.instantiate = lambda *a, **kw: calls.append(1) or real(*a, **kw)
model = load.read_model("models/tiny.prototxt")
net = load.build_net(model, backend="caffe", batch_size=2)
results["build_net"] = [len(calls), type(net).__name__, list(net.blobs[load.input_blob(net.net_param)].data.shape)]
print(json.dumps(results))
"""


def test_pycaffe_filters_and_runs_in_train_however_the_phase_is_written(caffe_env):
    result = json.loads(caffe_env.python(CHECK, NET, json.dumps(PHASES)).stdout.strip().splitlines()[-1])
    for phase in PHASES:
        assert result[str(phase)] == [["train", ["data", "train_only", "drop"], True, True]] * 2, phase
    calls, kind, shape = result["build_net"]
    assert calls == 1 and kind == "PycaffeNet" and shape[0] == 2
