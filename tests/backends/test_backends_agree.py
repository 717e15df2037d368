"""Both backends run the same k-means initialization of the tiny net to the same statistics,
and the caffemodel each writes loads in real Caffe (issue 4's acceptance check)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
# --no-rate-dropout --no-stats-dropout: with Dropout active the statistics and change rates depend on
# each backend's own random masks (torch's and Caffe's generators), so only the deterministic
# TEST-phase measurements can agree between them.
ARGS = ["models/tiny.prototxt", None, "--data", "examples/images/list.txt", "--init", "kmeans",
        "--num-images", "8", "--batch-size", "4", "--seed", "3", "-q", "--no-rate-dropout",
        "--no-stats-dropout"]

# Run in the chroot: load a caffemodel in caffe.Net and report each affine layer's output mean/std
# over the same sample, preprocessed by our pipeline.
MEASURE_IN_CAFFE = r"""
import json, sys, caffe, numpy as np
from magic_init.data import choose_source, load_sample
from magic_init.io import read_prototxt
net = caffe.Net("models/tiny.prototxt", sys.argv[1], caffe.TEST)
source, transform = choose_source("examples/images/list.txt", read_prototxt("models/tiny.prototxt"),
                                  input_shape=(4, 3, 32, 32))
data = load_sample(source, transform, num_images=8, seed=3).data
net.blobs["data"].reshape(*data.shape); net.reshape()
net.blobs["data"].data[...] = data
net.forward()
out = {}
for name, layer in zip(net._layer_names, net.layers):
    if layer.type in ("Convolution", "InnerProduct"):
        top = net.top_names[name][0]
        out[name] = [float(net.blobs[top].data.mean()), float(net.blobs[top].data.std())]
print(json.dumps(out))
"""


def _layer_stats(caffe_env, model_chroot_path):
    result = caffe_env.python(MEASURE_IN_CAFFE, model_chroot_path)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_kmeans_init_agrees_between_backends_and_loads_in_caffe(caffe_env):
    host_dir, chroot_dir = caffe_env.tmpdir()
    torch_args = list(ARGS)
    torch_args[1] = str(host_dir / "torch.caffemodel")
    done = subprocess.run([sys.executable, "-m", "magic_init", *torch_args, "--backend", "torch"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    caffe_args = list(ARGS)
    caffe_args[1] = chroot_dir + "/caffe.caffemodel"
    caffe_env.run("python3", "-m", "magic_init", *caffe_args, "--backend", "caffe")

    from_torch = _layer_stats(caffe_env, chroot_dir + "/torch.caffemodel")
    from_caffe = _layer_stats(caffe_env, chroot_dir + "/caffe.caffemodel")
    assert sorted(from_torch) == ["conv1", "conv2", "fc3", "fc4"]
    for layer in from_torch:
        (mean_t, std_t), (mean_c, std_c) = from_torch[layer], from_caffe[layer]
        assert std_t == pytest.approx(std_c, rel=0.02), layer
        assert mean_t == pytest.approx(mean_c, rel=0.02, abs=0.02 * std_c), layer
    assert np.isfinite([v for pair in from_torch.values() for v in pair]).all()
