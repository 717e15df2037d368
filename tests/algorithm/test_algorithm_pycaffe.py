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
# TEST-phase statistics, per channel
report = initialize(n, x, init="kmeans", between_layer=False, stats_dropout=False, normalize="channel")
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


SHARED_CODE = r'''
import json, sys, numpy as np, caffe
from magic_init.backends.pycaffe import PycaffeNet
from magic_init.algorithm import initialize, rescale

proto, model = sys.argv[1], sys.argv[2]
n = PycaffeNet(proto, input_shapes={"data": (8, 3, 8, 8)})
for blobs in n.params.values():
    for b in blobs:
        b.data[...] = 0
x = (np.random.RandomState(1).randn(40, 3, 8, 8) * 5 + 1).astype(np.float32)
report = initialize(n, x, batch_size=8, between_layer=False, stats_dropout=False, normalize="channel")["WithinLayer"]
out = []
for i in range(0, len(x), 8):
    n.blobs["data"].data[...] = x[i:i + 8]
    n.forward(end="conv_a")
    out.append(n.blobs["conv_a"].data.copy())
a = np.concatenate(out).swapaxes(0, 1).reshape(6, -1)
scale = rescale(n, x, batch_size=8, max_iter=30)["BetweenLayer"]["scale"]
n.save(model)
loaded = caffe.Net(proto, model, caffe.TEST)                  # Caffe's own loader; Input shape 4
loaded.blobs["data"].data[...] = x[:4]
n.blobs["data"].reshape(4, 3, 8, 8)
n.reshape()
n.blobs["data"].data[...] = x[:4]
print(json.dumps({"actions": [r["action"] for r in report], "mean": a.mean(axis=1).tolist(),
                  "std": a.std(axis=1).tolist(), "scale": scale,
                  "same_blob": bool(np.array_equal(loaded.params["conv_a"][0].data, loaded.params["conv_c"][0].data)),
                  "shares_memory": bool(np.shares_memory(loaded.params["conv_a"][0].data,
                                                         loaded.params["conv_c"][0].data)),
                  "finite": all(bool(np.all(np.isfinite(b.data))) for bl in loaded.params.values() for b in bl),
                  "output": float(np.abs(loaded.forward()["fc"] - n.forward()["fc"]).max())}))
'''


def test_shared_weights_are_normalized_once_and_the_written_model_loads_in_caffe(caffe_env):
    """Real Caffe shares ``param { name }`` blobs by data (separate Blob objects, one memory): Algorithm 1
    normalizes the first user's outputs, Algorithm 2 scales the blob once, and Caffe loads the model."""
    from test_shared_weights import shared_prototxt

    host, inside = caffe_env.tmpdir()
    (host / "shared.prototxt").write_text(shared_prototxt())
    result = json.loads(caffe_env.python(SHARED_CODE, inside + "/shared.prototxt",
                                         inside + "/shared.caffemodel").stdout.strip().splitlines()[-1])
    assert result["actions"] == ["initialized", "initialized", "shared", "initialized"]
    assert all(abs(m - 0.1) < 0.02 for m in result["mean"]) and all(abs(s - 1) < 0.02 for s in result["std"])
    assert result["scale"]["conv_a"] == result["scale"]["conv_c"]
    assert result["same_blob"] and result["shares_memory"] and result["finite"]
    assert result["output"] < 1e-5


BATCH_CODE = r'''
import json, numpy as np
from magic_init.backends.pycaffe import PycaffeNet
from magic_init.io import read_prototxt
from magic_init.algorithm import initialize

x = np.random.RandomState(0).randn(48, 3, 32, 32).astype(np.float32) * 50
worst = {}
for init in ("gaussian", "kmeans"):
    models = {}
    for batch in (3, 8, 16):
        p = read_prototxt("models/tiny.prototxt")
        p.force_backward = True
        n = PycaffeNet(p, input_shapes={"data": (16, 3, 32, 32)})
        for blobs in n.params.values():
            for b in blobs:
                b.data[...] = 0
        initialize(n, x, init=init, batch_size=batch, seed=5)
        models[batch] = {k: [b.data.copy() for b in bl] for k, bl in n.params.items()}
    worst[init] = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                      for batch in (3, 8) for k in models[16] for a, b in zip(models[batch][k], models[16][k]))
print(json.dumps(worst))
'''


def test_the_batch_size_does_not_change_the_model_on_real_caffe(caffe_env):
    """Caffe draws the dropout masks itself (one Dropout layer in tiny, CPU: a serial stream); with η and
    patch locations drawn per image and gradients summed per block, batches of 3, 8 and 16 agree."""
    worst = json.loads(caffe_env.python(BATCH_CODE).stdout.strip().splitlines()[-1])
    assert worst["gaussian"] < 1e-4 and worst["kmeans"] < 1e-4, worst
