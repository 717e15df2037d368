"""Blob and parameter shapes as real Caffe reports them: ``python3 -m tests.caffe_ref.shapes [--json] PROTOTXT...``.

Runs in the Caffe chroot. Builds each net in the TEST phase at its declared input shape (no
forward) and prints, per net, every blob's shape and every parameter blob's shape: as a table, or
with ``--json`` as one JSON object {path: {"blobs": [[name, shape]...], "params": [[layer, [shapes]]...]}}.
"""
from __future__ import annotations

import json
import os
import sys


def count(shape):
    """Number of values in a blob of this shape (1 for a 0-axis blob)."""
    n = 1
    for d in shape:
        n *= d
    return n


def net_shapes(caffe, path):
    net = caffe.Net(path, caffe.TEST)
    return {"blobs": [[name, list(b.data.shape)] for name, b in net.blobs.items()],
            "params": [[layer, [list(b.data.shape) for b in blobs]] for layer, blobs in net.params.items()]}


def main(argv):
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe
    caffe.set_mode_cpu()
    as_json = "--json" in argv
    paths = [a for a in argv if a != "--json"]
    shapes = {path: net_shapes(caffe, path) for path in paths}
    if as_json:
        print(json.dumps(shapes))
        return
    for path, s in shapes.items():
        n_params = sum(count(shape) for _, blobs in s["params"] for shape in blobs)
        print("== %s: %d layers with parameters, %d parameter values" % (path, len(s["params"]), n_params))
        for name, shape in s["blobs"]:
            print("  %-40s %s" % (name, tuple(shape)))


if __name__ == "__main__":
    main(sys.argv[1:])
