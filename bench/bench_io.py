#!/usr/bin/env python3
"""Time writing and reading a VGG-16-sized caffemodel (138M float32 parameters, 528 MB).

    python bench/bench_io.py [--keep DIR]

Synthesizes VGG-16's real layer shapes with random data in a temp dir, writes it with
``write_caffemodel`` and reads it back with ``read_caffemodel`` in a fresh subprocess (so the
reader's peak RSS is its own), checks the round trip, and prints one JSON line and a table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from magic_init.io import read_caffemodel, write_caffemodel
from magic_init.proto import caffe_pb2

VGG16_CONV = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
              ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
              ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
              ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)]
VGG16_FC = [("fc6", 512 * 7 * 7, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)]


def vgg16_shapes():
    shapes = {name: [(out, inp, 3, 3), (out,)] for name, inp, out in VGG16_CONV}
    shapes.update({name: [(out, inp), (out,)] for name, inp, out in VGG16_FC})
    return shapes


def vgg16_net(shapes):
    net = caffe_pb2.NetParameter(name="VGG_ILSVRC_16_layers")
    net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=[1, 3, 224, 224])
    bottom = "data"
    for name in shapes:
        kind = "InnerProduct" if name.startswith("fc") else "Convolution"
        net.layer.add(name=name, type=kind, bottom=[bottom], top=[name])
        net.layer.add(name="relu" + name[len("conv"):] if kind == "Convolution" else "relu" + name[2:],
                      type="ReLU", bottom=[name], top=[name])
        bottom = name
    return net


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM, since ru_maxrss survives fork+exec and would
    report the parent's peak (which holds the synthesized weights)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def read_in_this_process(path: str) -> None:
    start = time.perf_counter()
    model = read_caffemodel(path)
    seconds = time.perf_counter() - start
    count = sum(a.size for arrays in model.weights.values() for a in arrays)
    checksum = float(sum(float(a[..., :1].sum()) for arrays in model.weights.values() for a in arrays))
    print(json.dumps({"read_s": seconds, "read_peak_rss_mb": peak_rss_mb(), "params": int(count),
                      "checksum": checksum}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="write the model into this folder and keep it")
    parser.add_argument("--read-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_only:
        return read_in_this_process(args.read_only)
    folder = args.keep or tempfile.mkdtemp(prefix="bench_io-")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "vgg16.caffemodel")
    shapes = vgg16_shapes()
    rng = np.random.RandomState(0)
    weights = {name: [rng.standard_normal(s).astype(np.float32) for s in blob_shapes]
               for name, blob_shapes in shapes.items()}
    params = sum(a.size for arrays in weights.values() for a in arrays)
    start = time.perf_counter()
    write_caffemodel(path, vgg16_net(shapes), weights)
    write_s = time.perf_counter() - start
    size_mb = os.path.getsize(path) / 2 ** 20
    expected = float(sum(float(a[..., :1].sum()) for arrays in weights.values() for a in arrays))
    del weights
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--read-only", path],
                         check=True, capture_output=True, text=True).stdout
    read = json.loads(out.strip().splitlines()[-1])
    result = {"params": int(params), "file_mb": round(size_mb, 1), "write_s": round(write_s, 3),
              "read_s": round(read["read_s"], 3), "read_peak_rss_mb": round(read["read_peak_rss_mb"], 1),
              "round_trip_ok": read["params"] == params and read["checksum"] == expected}
    print(json.dumps(result))
    print("%-22s %12s" % ("VGG-16 caffemodel", ""))
    for key in ("params", "file_mb", "write_s", "read_s", "read_peak_rss_mb", "round_trip_ok"):
        print("%-22s %12s" % (key, result[key]))
    if not args.keep:
        os.remove(path)
        os.rmdir(folder)


if __name__ == "__main__":
    main()
