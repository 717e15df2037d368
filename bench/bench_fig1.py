"""Benchmark (issue 6.2): the paper's Fig. 1 on CaffeNet — per-layer change rate and its variation.

    python bench/bench_fig1.py [--json FILE] [--png FILE] [--init-images 160] [--measure-images 100]

Six initializations of models/caffenet.prototxt, all on the built-in engine (CPU):

* ``gaussian 0.01``: every affine weight N(0, 0.01²), biases 0;
* ``caffe reference``: the prototxt's own fillers (CaffeNet's: N(0, 0.01²) convolutions and fc8,
  N(0, 0.005²) fc6/fc7, biases 0 or 1 as the prototxt says);
* ``xavier``: Caffe's XavierFiller, U(±sqrt(3/fan_in)), biases 0;
* ``msra``: Caffe's MSRAFiller, N(0, 2/fan_in), biases 0 (fan_in = C_in/group·kh·kw, Caffe's rule);
* ``ours (gaussian)`` and ``ours (k-means)``: ``magic_init.initialize`` (Alg. 1 + Alg. 2, defaults)
  on the first ``--init-images`` photos.

Each is measured with ``magic_init.measure_stat.measure`` on ``--measure-images`` *other* photos (the
next ones in the same list, never seen by the init), TEST phase. The figure plots measure_stat's
change rate (``orig_rate_mean``, the definition the paper's Fig. 1 and design §6 use) and its
coefficient of variation over a layer's input channels (``orig_rate_cv``); the JSON also keeps
the Eq. (4) rates (``rate_mean``/``rate_cv``). "spread" = max/min of a layer-mean over the 8 layers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.REPO))
import magic_init  # noqa: E402
from magic_init.engine.fillers import fill  # noqa: E402
from magic_init.measure_stat import measure  # noqa: E402
from magic_init.proto import caffe_pb2  # noqa: E402

MODEL = common.REPO / "models" / "caffenet.prototxt"
AFFINE = ("Convolution", "InnerProduct", "Deconvolution")
INITS = ["gaussian 0.01", "caffe reference", "xavier", "msra", "ours (gaussian)", "ours (k-means)"]


def filler(kind, **fields):
    """A FillerParameter of ``kind`` with ``fields`` set."""
    param = caffe_pb2.FillerParameter(type=kind)
    for key, value in fields.items():
        setattr(param, key, value)
    return param


def layer_fillers(model):
    """``{layer: (weight FillerParameter, bias FillerParameter)}`` from the prototxt's affine layers."""
    found = {}
    for layer in model.net.layer:
        if layer.type in AFFINE:
            params = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
            found[layer.name] = (params.weight_filler, params.bias_filler)
    return found


def apply_fillers(net, fillers_of, seed):
    """Fill every affine layer's blobs: ``fillers_of(layer) -> (weight filler, bias filler)``."""
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        weight, bias = fillers_of(name)
        blobs[0].data[...] = fill(weight, blobs[0].data.shape, rng, where=name)
        if len(blobs) > 1:
            blobs[1].data[...] = fill(bias, blobs[1].data.shape, rng, where=name)


def initialize(kind, net, model, init_sample, seed):
    """Set ``net``'s weights by initialization ``kind``; returns seconds spent."""
    began = time.perf_counter()
    zero = filler("constant", value=0.0)
    if kind == "gaussian 0.01":
        apply_fillers(net, lambda name: (filler("gaussian", std=0.01), zero), seed)
    elif kind == "caffe reference":
        apply_fillers(net, layer_fillers(model).__getitem__, seed)
    elif kind in ("xavier", "msra"):
        apply_fillers(net, lambda name: (filler(kind), zero), seed)
    else:
        for blobs in net.params.values():
            for blob in blobs:
                blob.data[...] = 0
        magic_init.initialize(net, init_sample, init="kmeans" if "k-means" in kind else "gaussian", seed=seed)
    return time.perf_counter() - began


def read_photos(net, model, listing, count):
    """The preprocessed images of list file ``listing`` (paths relative to its folder), float32 NCHW."""
    return magic_init.load_sample(net, model, data=str(listing), root=str(Path(listing).parent),
                                  num_images=count).data


def per_layer(stats):
    """The statistics' per-layer numbers the figure uses (channel arrays dropped)."""
    keys = ("rate_mean", "rate_cv", "orig_rate_mean", "orig_rate_cv", "act_mean", "act_std", "act_cv")
    return [dict(layer=l["layer"], **{k: l.get(k) for k in keys}) for l in stats["layers"]]


def plot(results, path):
    """Two panels like the paper's Fig. 1: log-scale mean change rate, and its coefficient of variation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind, entry in results.items():
        layers = [l["layer"] for l in entry["layers"]]
        x = np.arange(len(layers))
        style = "-o" if kind.startswith("ours") else "--s"
        left.semilogy(x, [l["orig_rate_mean"] for l in entry["layers"]], style, label=kind, markersize=4)
        right.plot(x, [l["orig_rate_cv"] for l in entry["layers"]], style, label=kind, markersize=4)
    for axis, title in ((left, "(a) average change rate (log scale)"),
                        (right, "(b) coefficient of variation of the change rate")):
        axis.set_xticks(x)
        axis.set_xticklabels(layers)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle("CaffeNet, change rates on %d held-out photos (measure_stat definition)"
                 % next(iter(results.values()))["measured_on"])
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)


def spread(values):
    values = [v for v in values if v and v > 0]
    return max(values) / min(values) if values else None


def print_table(results):
    layers = [l["layer"] for l in next(iter(results.values()))["layers"]]
    rows = []
    for kind, entry in results.items():
        rates = [l["orig_rate_mean"] for l in entry["layers"]]
        cvs = [l["orig_rate_cv"] for l in entry["layers"]]
        in_sample = entry.get("summary_on_init_sample", {}).get("orig_rate_spread")
        rows.append([kind] + ["%.3g / %.2f" % (r, c) for r, c in zip(rates, cvs)]
                    + ["%.3g" % spread(rates), "%.3g" % in_sample if in_sample else ""])
    print("change rate (measure_stat) / its coefficient of variation, per layer")
    print(common.format_table(["init"] + layers + ["spread", "spread on init sample"], rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init-images", type=int, default=160)
    parser.add_argument("--measure-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inits", default=",".join(INITS))
    parser.add_argument("--json", default=str(common.REPO / "out" / "results" / "fig1.json"))
    parser.add_argument("--png", default=str(common.REPO / "out" / "results" / "fig1.png"))
    args = parser.parse_args(argv)
    photos = common.ensure_photos(args.init_images + args.measure_images)
    init_list, measure_list = common.split_photos(photos, args.init_images, args.measure_images)
    model = magic_init.read_model(str(MODEL))
    net = magic_init.build_net(model, backend="torch", batch_size=16)
    init_sample = read_photos(net, model, init_list, args.init_images)
    held_out = read_photos(net, model, measure_list, args.measure_images)
    results = {}
    for kind in args.inits.split(","):
        seconds = initialize(kind, net, model, init_sample, args.seed)
        stats = measure(net, held_out, seed=args.seed + 100)
        results[kind] = {"init_seconds": seconds, "measured_on": len(held_out), "layers": per_layer(stats),
                         "summary": stats["summary"]}
        if kind.startswith("ours"):
            # the original's figures measure on the sample it initialized with: give that number too
            results[kind]["summary_on_init_sample"] = measure(net, init_sample, seed=args.seed + 100)["summary"]
        print("%s: init %.1f s, spread %.3g" % (kind, seconds, stats["summary"]["orig_rate_spread"]),
              file=sys.stderr)
    print_table(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": common.machine(), "model": "models/caffenet.prototxt",
                                           "init_images": args.init_images, "seed": args.seed,
                                           "measure_images": args.measure_images, "results": results}, indent=1))
    plot(results, args.png)


if __name__ == "__main__":
    main()
