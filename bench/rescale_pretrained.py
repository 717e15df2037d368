"""Rescaling a badly scaled pretrained model (issue 6 part 4; paper §1 and §4.3).

1. Train the small Fashion-MNIST net briefly in real Caffe (a run of train_few_labels.py's
   setup, snapshot kept): the "pretrained" model.
2. Re-parameterize it: conv2 W, b x FACTOR and fc3 W / FACTOR. Between them are only ReLU and max
   pooling, both positively homogeneous (relu(a x) = a relu(x), max(a x) = a max(x) for a > 0), so the
   net computes exactly the same function (no LRN in between; conv1/conv2 would not be exact because
   of norm1). Test accuracy must not change.
3. Fine-tune original, scaled, and ``magic_init --load scaled`` (Alg. 2 only) with the same solver on
   the N training images; also the original rescaled the same way, as a control.

    python bench/rescale_pretrained.py [--factor 100] [--pretrain-iters 150] [--finetune-iters 300]

Prints a table and writes JSON (out/rescale_pretrained/).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_few_labels as tfl  # noqa: E402  (shared data, prototxt and Caffe-run helpers)

from magic_init.io import read_caffemodel, write_caffemodel  # noqa: E402

SCALED_UP, SCALED_DOWN = "conv2", "fc3"  # only ReLU + max pooling between them


def scale_pair(src: Path, dst: Path, factor: float):
    """dst = src with SCALED_UP's W, b x factor and SCALED_DOWN's W / factor (same function)."""
    model = read_caffemodel(str(src))
    weights = model.weights
    weights[SCALED_UP] = [w * np.float32(factor) for w in weights[SCALED_UP]]
    weights[SCALED_DOWN] = [weights[SCALED_DOWN][0] / np.float32(factor)] + weights[SCALED_DOWN][1:]
    write_caffemodel(str(dst), model.net, weights)


def weight_norms(path: Path) -> dict:
    """||W|| (Frobenius) of each layer's first blob."""
    weights = read_caffemodel(str(path)).weights
    return {name: float(np.linalg.norm(blobs[0])) for name, blobs in weights.items() if blobs}


def rescale_with_magic_init(work, src: Path, dst: Path, list_path: Path, seed: int):
    """``magic_init deploy dst --load src --data LIST`` (between-layer only, within-layer off by default)."""
    if not dst.exists():
        tfl.magic_init(dst, list_path, work, seed, "--load", str(src))


def acc_at(result: dict, it: int) -> str:
    """Test accuracy (%) at iteration ``it``; "NaN" once the loss diverged, "" if not measured."""
    for c in result["curve"]:
        if c["iter"] == it:
            return "NaN" if c["test_accuracy"] is None else "%.2f" % (100 * c["test_accuracy"])
    return "NaN (diverged at %d)" % result["curve"][-1]["iter"] if result["diverged"] else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factor", type=float, default=100.0)
    ap.add_argument("--init", default="caffe-msra", choices=tfl.INITS, help="init of the pretrained run")
    ap.add_argument("--pretrain-iters", type=int, default=150)
    ap.add_argument("--finetune-iters", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(tfl.REPO / "out" / "rescale_pretrained"))
    args = ap.parse_args(argv)
    work = tfl.Work()
    list_path, _ = tfl.prepare_data(work, 1000, 1000)
    d = work.host / "rescale"
    d.mkdir(exist_ok=True)
    t0 = time.time()

    init = tfl.make_init(work, args.init, False, args.seed, list_path)
    pretrained = d / ("pretrained_%s_it%d.caffemodel" % (args.init, args.pretrain_iters))
    tfl.train_run(work, init, args.seed, args.pretrain_iters, args.pretrain_iters,
                  "pretrain_%s_it%d" % (args.init, args.pretrain_iters), snapshot=pretrained)
    models = {"original": pretrained, "scaled": d / ("scaled_x%g.caffemodel" % args.factor)}
    scale_pair(pretrained, models["scaled"], args.factor)
    models["scaled + magic_init --load"] = d / ("scaled_x%g_fixed.caffemodel" % args.factor)
    models["original + magic_init --load"] = d / "original_fixed.caffemodel"
    rescale_with_magic_init(work, models["scaled"], models["scaled + magic_init --load"], list_path, args.seed)
    rescale_with_magic_init(work, pretrained, models["original + magic_init --load"], list_path, args.seed)

    results = {}
    for name, path in models.items():
        tag = "finetune_%s_x%g_it%d_%d" % (name.replace(" ", "").replace("--", "_").replace("+", "-"),
                                           args.factor, args.pretrain_iters, args.finetune_iters)
        results[name] = tfl.train_run(work, path, args.seed, args.finetune_iters, args.eval_every, tag)
        results[name]["weight_norms"] = weight_norms(path)
    print_table(results, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"args": vars(args), "seconds": time.time() - t0, "scaled_layers": [SCALED_UP, SCALED_DOWN],
               "models": results}
    (out / "rescale_pretrained.json").write_text(json.dumps(payload, indent=1))
    print("wrote %s" % (out / "rescale_pretrained.json"))


def print_table(results: dict, args):
    its = sorted({c["iter"] for r in results.values() for c in r["curve"]})
    shown = [its[0], its[1], its[len(its) // 2], its[-1]]
    print("\nfine-tuning (lr 0.01, momentum 0.9, batch 32), test accuracy %% at iteration; %s x%g, %s / %g"
          % (SCALED_UP, args.factor, SCALED_DOWN, args.factor))
    print("| model | " + " | ".join("@%d" % i for i in shown) + " | final test loss | ||W|| conv1 conv2 fc3 fc4 |")
    print("|---|" + "---|" * len(shown) + "---|---|")
    for name, r in results.items():
        norms = " ".join("%.3g" % r["weight_norms"][k] for k in ("conv1", "conv2", "fc3", "fc4"))
        loss = r["curve"][-1]["test_loss"]
        print("| %s | %s | %s | %s |" % (name, " | ".join(acc_at(r, i) for i in shown),
                                        "NaN" if loss is None else "%.3g" % loss, norms))


if __name__ == "__main__":
    main()
