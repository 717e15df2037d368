"""The algorithm on real Caffe (pycaffe backend in the Caffe chroot: Python 3.9, numpy 1.19).

Every statistic below is computed by Caffe's own forward passes; the host only checks them.
"""
from __future__ import annotations

import json

CODE = r'''
import json, numpy as np
from magic_init.backends.pycaffe import PycaffeNet
from magic_init.io import read_prototxt
from magic_init.algorithm import initialize, rescale

def net(homogeneous):
    p = read_prototxt("models/tiny.prototxt")
    p.force_backward = True
    if homogeneous:
        for layer in p.layer:
            if layer.type == "LRN":
                layer.type = "ReLU"; layer.ClearField("lrn_param")
    return PycaffeNet(p, input_shapes={"data": (16, 3, 32, 32)})

def forward(n, x, blob):
    out = []
    for i in range(0, len(x), 16):
        n.blobs["data"].data[...] = x[i:i + 16]
        n.forward()
        out.append(n.blobs[blob].data.copy())
    return np.concatenate(out)

def channel(a):
    a = a.swapaxes(0, 1).reshape(a.shape[1], -1)
    return a.mean(axis=1).tolist(), a.std(axis=1).tolist()

x = np.random.RandomState(0).randn(48, 3, 32, 32).astype(np.float32) * 50
n = net(False)
for blobs in n.params.values():
    for b in blobs:
        b.data[...] = 0
report = initialize(n, x, init="kmeans", between_layer=False, stats_dropout=False)  # TEST-phase statistics
stats = {}
for layer in ("conv1", "conv2", "fc3", "fc4"):
    n2 = n                                                # tops are overwritten in place by ReLU:
    out = []
    for i in range(0, len(x), 16):
        n2.blobs["data"].data[...] = x[i:i + 16]
        n2.forward(end=layer)
        out.append(n2.blobs[layer].data.copy())
    stats[layer] = channel(np.concatenate(out))
h = net(True)
before = forward(h, x, "fc4")
rescaled = rescale(h, x, max_iter=30)["BetweenLayer"]
after = forward(h, x, "fc4")
error = float(np.abs(after - before * rescaled["output_scale"]).max() / np.abs(before).max())
print(json.dumps({"inits": [r["init"] for r in report["WithinLayer"]], "stats": stats,
                  "error": error, "output_scale": rescaled["output_scale"], "scale": rescaled["scale"]}))
'''


def test_initialize_and_rescale_on_real_caffe(caffe_env):
    result = json.loads(caffe_env.python(CODE).stdout.strip().splitlines()[-1])
    assert result["inits"][:2] == ["kmeans", "kmeans"]
    for layer, (mean, std) in result["stats"].items():
        assert all(abs(m - 0.1) < 0.02 for m in mean), layer
        assert all(abs(s - 1.0) < 0.02 for s in std), layer
    assert result["error"] < 1e-4 and result["output_scale"] > 0       # same function, times a constant
    assert max(result["scale"].values()) / min(result["scale"].values()) > 1.5   # it did rescale
