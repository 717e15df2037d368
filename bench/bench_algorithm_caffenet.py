"""Benchmark (not a test): CaffeNet, 160 images, batch 16 — pass times vs magic_init's passes.

    python bench/bench_algorithm_caffenet.py INIT [--device cuda] [--rounds 2] [--max-iter 10]

Prints one forward pass and one forward+backward pass over the sample, the time of
``initialize(INIT, both steps)`` in seconds and in forward+backward passes, peak RSS, and the
statistics table (magic_init.measure_stat) after initialization. Images are smooth random images with
ImageNet-like pixel scale (std 60), so no dataset is needed.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from magic_init import report
from magic_init.algorithm import initialize
from magic_init.algorithm.runner import SampleRunner
from magic_init.engine import Net
from magic_init.io import read_prototxt
from magic_init.measure_stat import measure

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "caffenet.prototxt")


def smooth_images(count, seed=0):
    x = np.random.default_rng(seed).standard_normal((count, 3, 57, 57)).astype(np.float32)
    return np.ascontiguousarray(np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)[:, :, :227, :227] * 60)


def pass_times(net, runner, clock):
    began = clock()
    with net.no_grad():
        for _ in runner.full_passes():
            net.forward()
    forward = clock() - began
    began = clock()
    for _ in runner.full_passes():
        net.forward()
        net.blobs["fc8"].diff[...] = 1
        net.backward(start="fc8")
    return forward, clock() - began


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("init")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--images", type=int, default=160)
    args = parser.parse_args()
    param = read_prototxt(MODEL)
    param.force_backward = True
    net = Net(param, input_shapes={"data": (16, 3, 227, 227)}, device=args.device)
    x = smooth_images(args.images)
    # CPU time of this process: on a shared machine wall time swings 3x with the neighbours' load
    clock = time.perf_counter if args.device != "cpu" else time.process_time
    forward, both = pass_times(net, SampleRunner(net, x, 16), clock)
    print("forward pass %.2f s, forward+backward pass %.2f s (%s)" % (forward, both, clock.__name__))
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = 0
    began, wall = clock(), time.perf_counter()
    result = initialize(net, x, init=args.init, max_iter=args.max_iter, rounds=args.rounds)
    total, wall = clock() - began, time.perf_counter() - wall
    print("%s + both: %.2f s = %.2f forward+backward passes (wall %.2f s: %s)" % (
        args.init, total, total / both, wall, ", ".join("%s %.2f s" % kv for kv in result["seconds"].items())))
    print("peak RSS %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    print("inits:", [(r["layer"], r["init"]) for r in result["WithinLayer"]])
    print(report.table(measure(net, x)))


if __name__ == "__main__":
    main()
