"""PycaffeNet.train_dropout in real Caffe: Dropout active (scaled by 1/(1-p)) inside, identity
outside, and the weights written inside are the net's own (the twin shares them)."""
from __future__ import annotations

import json

CHECK = r"""
import json, numpy as np
from magic_init.backends.pycaffe import PycaffeNet
from magic_init.io import parse_prototxt
net = PycaffeNet(parse_prototxt('''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 200 } } }
layer { name: "drop" type: "Dropout" bottom: "data" top: "d" dropout_param { dropout_ratio: 0.25 } }
layer { name: "fc" type: "InnerProduct" bottom: "d" top: "out" inner_product_param { num_output: 3 } }
'''))
x = np.random.RandomState(0).uniform(1, 2, (4, 200)).astype(np.float32)
net.params["fc"][0].data[...] = 0
def run():
    net.blobs["data"].data[...] = x
    net.forward()
    return np.array(net.blobs["d"].data)
outside = run()
with net.train_dropout(seed=3):
    inside = run()
    net.params["fc"][0].data[...] = 2.0
with net.train_dropout(seed=3):
    again = run()
kept = inside != 0
print(json.dumps({"outside_is_identity": bool(np.array_equal(outside, x)),
                  "kept": float(kept.mean()),
                  "scaled": bool(np.allclose(inside[kept], x[kept] / 0.75, rtol=1e-6)),
                  "seeded": bool(np.array_equal(inside, again)),
                  "weights_shared": float(net.params["fc"][0].data.mean()),
                  "identity_after": bool(np.array_equal(run(), x))}))
"""


def test_train_dropout_in_real_caffe(caffe_env):
    result = json.loads(caffe_env.python(CHECK).stdout.strip().splitlines()[-1])
    assert result["outside_is_identity"] and result["identity_after"]
    assert 0.65 < result["kept"] < 0.85 and result["scaled"] and result["seeded"]
    assert result["weights_shared"] == 2.0
