"""Benchmark (issue 6.2, issue 12): the paper's Fig. 1 on CaffeNet, drawn by ``magic_init stats``.

    python bench/bench_fig1.py [--photos out/bench-photos] [--init-images 128] [--measure-images 32]
                               [--png docs/fig1_caffenet.png] [--json docs/results/fig1_caffenet.json]

Four initializations of models/caffenet.prototxt, all through the command line, built-in engine (CPU):

* ``gaussian_0.01.caffemodel``: every affine weight N(0, 0.01²), biases 0 (written here with
  ``magic_init.engine.fillers``, Caffe's filler rules);
* ``prototxt fillers``: Caffe's reference fillers, the prototxt's own (CaffeNet's: N(0, 0.01²)
  convolutions and fc8, N(0, 0.005²) fc6/fc7, biases 0 or 1 as it says): ``stats --fillers``;
* ``ours_gaussian.caffemodel`` and ``ours_kmeans.caffemodel``:
  ``magic_init models/caffenet.prototxt OUT --data FIRST --init gaussian|kmeans`` (Alg. 1 + Alg. 2,
  defaults) on the first ``--init-images`` photos.

Then one ``magic_init stats models/caffenet.prototxt --fillers --load ... --plot PNG --json JSON`` on
the next ``--measure-images`` photos (never seen by the inits), seed 0: the PNG is the paper's Fig. 1
(average change rate per layer, log scale; its coefficient of variation within each layer), in the
primary, gradient definition of the change rate (``orig_rate_*``; the JSON also has Eq. (4)'s ``rate_*``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import common  # bench/common.py: `python bench/X.py` puts bench/ first on sys.path
import magic_init
from magic_init.engine.fillers import fill
from magic_init.io import write_caffemodel
from magic_init.proto import caffe_pb2

MODEL = common.REPO / "models" / "caffenet.prototxt"


def magic_init_cli(*args):
    """Run ``python -m magic_init ARGS`` (the installed package, as imported here); returns its stdout
    and the seconds it took."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "magic_init", *map(str, args)], check=True,
                          stdout=subprocess.PIPE, text=True)
    return done.stdout, time.perf_counter() - began


def write_gaussian(path, std, seed):
    """A caffemodel of CaffeNet with every affine weight N(0, std²) and every bias 0."""
    model = magic_init.read_model(str(MODEL))
    net = magic_init.build_net(model, backend="torch", batch_size=1)
    rng = np.random.default_rng(seed)
    gaussian = caffe_pb2.FillerParameter(type="gaussian", std=std)
    weights = {name: [fill(gaussian, blobs[0].data.shape, rng, where=name)]
               + [np.zeros(b.data.shape, np.float32) for b in blobs[1:]] for name, blobs in net.params.items()}
    write_caffemodel(str(path), model.net, weights)


def print_table(stats):
    layers = [l["layer"] for l in stats["models"][0]["layers"]]
    rows = []
    for entry in stats["models"]:
        rates = [l["orig_rate_mean"] for l in entry["layers"]]
        cvs = [l["orig_rate_cv"] for l in entry["layers"]]
        rows.append([entry["model"]] + ["%.3g / %.2f" % (r, c) for r, c in zip(rates, cvs)]
                    + ["%.3g" % entry["summary"]["orig_rate_spread"], "%.3g" % entry["summary"]["rate_spread"]])
    print("change rate (gradient definition) / its coefficient of variation, per layer")
    print(common.format_table(["model"] + layers + ["spread", "spread eq.4"], rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", default=str(common.PHOTOS), help="folder with list.txt (160 photos)")
    parser.add_argument("--init-images", type=int, default=128)
    parser.add_argument("--measure-images", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(common.REPO / "out" / "fig1"), help="folder for the caffemodels")
    parser.add_argument("--json", default=str(common.REPO / "docs" / "results" / "fig1_caffenet.json"))
    parser.add_argument("--png", default=str(common.REPO / "docs" / "fig1_caffenet.png"))
    args = parser.parse_args(argv)
    photos = common.ensure_photos(args.init_images + args.measure_images, args.photos)
    init_list, measure_list = common.split_photos(photos, args.init_images, args.measure_images)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    seconds = {}
    gaussian = work / "gaussian_0.01.caffemodel"
    write_gaussian(gaussian, 0.01, args.seed)
    models = [gaussian]
    for init in ("gaussian", "kmeans"):
        out = work / ("ours_%s.caffemodel" % init)
        _, seconds["ours_" + init] = magic_init_cli(
            MODEL, out, "--data", init_list, "--num-images", args.init_images, "--init", init,
            "--seed", args.seed, "--backend", "torch", "-q")
        models.append(out)
        print("%s: %.1f s" % (out.name, seconds["ours_" + init]), file=sys.stderr)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    loads = [a for m in models for a in ("--load", m)]
    _, seconds["stats"] = magic_init_cli(
        "stats", MODEL, "--fillers", *loads, "--data", measure_list, "--num-images", args.measure_images,
        "--seed", args.seed, "--backend", "torch", "--json", args.json, "--plot", args.png, "-q")
    stats = json.loads(Path(args.json).read_text())
    stats.update(bench={"machine": common.machine(), "model": "models/caffenet.prototxt",
                        "init_images": args.init_images, "measure_images": args.measure_images,
                        "seed": args.seed, "seconds": seconds})
    Path(args.json).write_text(json.dumps(stats, indent=1, sort_keys=True, allow_nan=False))
    print_table(stats)
    print("wrote %s and %s (stats: %.1f s)" % (args.png, args.json, seconds["stats"]), file=sys.stderr)


if __name__ == "__main__":
    main()
