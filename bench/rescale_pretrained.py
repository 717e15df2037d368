"""Rescaling a badly scaled pretrained model (issue 6 part 4; paper §1 and §4.3).

1. Train the small Fashion-MNIST net briefly in real Caffe (a run of train_few_labels.py's
   setup, snapshot kept): the "pretrained" model.
2. Re-parameterize it: conv2 W, b x FACTOR and fc3 W / FACTOR. Between them are only ReLU and max
   pooling, both positively homogeneous (relu(a x) = a relu(x), max(a x) = a max(x) for a > 0), so the
   net computes exactly the same function (no LRN in between; conv1/conv2 would not be exact because
   of norm1). Test accuracy must not change.
3. Fine-tune original, scaled, and ``magic_init --load scaled`` (Alg. 2 only) with the same solver on
   the N training images; also the original rescaled the same way, as a control.
4. For each fine-tuned model: test accuracy along the way, divergence (first non-finite loss), and
   each layer's relative weight change ||W_end - W_start|| / ||W_start|| -- the paper's change rate
   summed over fine-tuning: a layer scaled up by k moves k^2 times less (it stalls), the layer scaled
   down moves k^2 times more (it thrashes or diverges).

Each seed s has its own pretrained model (MSRA init, seed s), shared by the factors, and its own
fine-tunings (solver seed s).

    python bench/rescale_pretrained.py [--factors 10,100] [--seeds 3] [--pretrain-iters 150]
                                       [--finetune-iters 300]

Prints a table (mean +/- std over seeds) and writes JSON (out/rescale_pretrained/).

``--agreement`` (issue 16, exact rescaling) skips fine-tuning: each pretrained model is
re-parameterized with fc3 x k / fc4 / k, rescaled by ``magic_init --load``, and both are run in real
Caffe on the 1000 test images: the share of identical predictions and the largest relative output
deviation after removing the common factor (the function must be kept exactly: 100 %, < 1e-5).
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import train_few_labels as tfl  # shared data, prototxt and Caffe-run helpers (bench/ is sys.path[0])
from magic_init.io import read_caffemodel, write_caffemodel

SCALED_UP, SCALED_DOWN = "conv2", "fc3"  # only ReLU + max pooling between them


def scale_pair(src: Path, dst: Path, factor: float, up=SCALED_UP, down=SCALED_DOWN):
    """dst = src with ``up``'s W, b x factor and ``down``'s W / factor (same function when only
    positively homogeneous layers lie between them)."""
    model = read_caffemodel(str(src))
    weights = model.weights
    weights[up] = [w * np.float32(factor) for w in weights[up]]
    weights[down] = [weights[down][0] / np.float32(factor)] + weights[down][1:]
    write_caffemodel(str(dst), model.net, weights)


def weight_norms(path: Path) -> dict:
    """||W|| (Frobenius) of each layer's first blob."""
    weights = read_caffemodel(str(path)).weights
    return {name: float(np.linalg.norm(blobs[0])) for name, blobs in weights.items() if blobs}


def relative_changes(start: Path, end: Path) -> dict:
    """||W_end - W_start|| / ||W_start|| of each layer's first blob."""
    before, after = read_caffemodel(str(start)).weights, read_caffemodel(str(end)).weights
    return {name: float(np.linalg.norm(after[name][0] - blobs[0]) / np.linalg.norm(blobs[0]))
            for name, blobs in before.items() if blobs}


def rescale_with_magic_init(work, src: Path, dst: Path, list_path: Path, seed: int):
    """``magic_init deploy dst --load src --data LIST`` (between-layer only, within-layer off by default)."""
    if not dst.exists():
        tfl.magic_init(dst, list_path, work, seed, "--load", str(src))


MODELS = ("original", "scaled", "scaled + magic_init --load", "original + magic_init --load")
LAYERS = ("conv1", "conv2", "fc3", "fc4")


def pretrained_model(work, args, list_path, seed: int):
    """(work folder for rescaling, the seed's pretrained model): ``args.init`` trained
    ``args.pretrain_iters`` steps in real Caffe (cached)."""
    d = work.host / "rescale"
    d.mkdir(exist_ok=True)
    init = tfl.InitMaker(work, list_path)("small", args.init, False, seed)
    pretrained = d / ("pretrained_%s_it%d_s%d.caffemodel" % (args.init, args.pretrain_iters, seed))
    tfl.train_run(work, init, seed, args.pretrain_iters, args.pretrain_iters,
                  "pretrain_%s_it%d_s%d" % (args.init, args.pretrain_iters, seed), snapshot=pretrained)
    return d, pretrained


def run_seed(work, args, list_path, seed: int, factor: float) -> dict:
    """The four fine-tunings of one (seed, factor): {model: result with curve, norms, changes}."""
    d, pretrained = pretrained_model(work, args, list_path, seed)
    scaled = d / ("scaled_x%g_s%d.caffemodel" % (factor, seed))
    if not scaled.exists():
        scale_pair(pretrained, scaled, factor)
    paths = dict(zip(MODELS, (pretrained, scaled, d / ("scaled_x%g_fixed_s%d.caffemodel" % (factor, seed)),
                              d / ("original_fixed_s%d.caffemodel" % seed))))
    rescale_with_magic_init(work, scaled, paths[MODELS[2]], list_path, seed)
    rescale_with_magic_init(work, pretrained, paths[MODELS[3]], list_path, seed)
    results = {}
    for name, path in paths.items():
        scale = "_x%g" % factor if name.startswith("scaled") else ""   # the originals are shared
        tag = "finetune_%s%s_it%d_%d_s%d" % (name.replace(" ", "").replace("--", "_").replace("+", "-"),
                                             scale, args.pretrain_iters, args.finetune_iters, seed)
        end = d / (tag + ".caffemodel")
        result = tfl.train_run(work, path, seed, args.finetune_iters, args.eval_every, tag, snapshot=end)
        result["weight_norms"] = weight_norms(path)
        result["relative_change"] = relative_changes(path, end) if end.exists() and not result["diverged"] \
            else None
        results[name] = result
    return results


def agreement(work, model_a: Path, model_b: Path) -> dict:
    """Predictions of two models of the small net on the test images in real Caffe (fashion_caffe.py agree)."""
    out = model_b.with_suffix(".agree.json")
    tfl.caffe_run("python3", "bench/fashion_caffe.py", "agree", work.chroot(tfl.train_prototxt(work, "gaussian")),
                  work.chroot(model_a), work.chroot(model_b), "fc4", "10", work.chroot(out))
    return json.loads(out.read_text())


def agreement_seed(work, args, list_path, seed: int, factor: float) -> dict:
    """fc3 x factor / fc4 / factor of the seed's pretrained model, rescaled; agreement with the scaled input."""
    d, pretrained = pretrained_model(work, args, list_path, seed)
    scaled = d / ("scaled_fc3fc4_x%g_s%d.caffemodel" % (factor, seed))
    fixed = d / ("scaled_fc3fc4_x%g_fixed_s%d.caffemodel" % (factor, seed))
    if not scaled.exists():
        scale_pair(pretrained, scaled, factor, up="fc3", down="fc4")
    rescale_with_magic_init(work, scaled, fixed, list_path, seed)
    return {"scaled_vs_pretrained": agreement(work, pretrained, scaled),
            "rescaled_vs_scaled": agreement(work, scaled, fixed)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factors", default="10,100", help="comma-separated scale factors")
    ap.add_argument("--init", default="caffe-msra", choices=tfl.ARMS, help="init of the pretrained run")
    ap.add_argument("--pretrain-iters", type=int, default=150)
    ap.add_argument("--finetune-iters", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="seeds run side by side (1 core each)")
    ap.add_argument("--agreement", action="store_true",
                    help="no fine-tuning: fc3 x k / fc4 / k, rescaled; predictions compared in real Caffe")
    ap.add_argument("--out", default=str(tfl.REPO / "out" / "rescale_pretrained"))
    args = ap.parse_args(argv)
    factors = [float(f) for f in args.factors.split(",")]
    work = tfl.Work()
    list_path, _ = tfl.prepare_data(work, 1000, 1000)
    t0 = time.time()
    if args.agreement:
        results = {"x%g" % f: {"seed%d" % s: agreement_seed(work, args, list_path, s, f) for s in range(args.seeds)}
                   for f in factors}
        for factor, by_seed in results.items():
            for seed, r in by_seed.items():
                print("%s %s: scaled vs pretrained %.2f %% agree (dev %.2g); rescaled vs scaled %.2f %% agree "
                      "(dev %.2g, factor %.4g)" % (factor, seed, 100 * r["scaled_vs_pretrained"]["agreement"],
                                                   r["scaled_vs_pretrained"]["deviation"],
                                                   100 * r["rescaled_vs_scaled"]["agreement"],
                                                   r["rescaled_vs_scaled"]["deviation"],
                                                   r["rescaled_vs_scaled"]["factor"]))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "rescale_agreement.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
        return

    def one_seed(seed):  # one thread per seed: its factors share the seed's pretrained model
        return [run_seed(work, args, list_path, seed, factor) for factor in factors]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(one_seed, range(args.seeds)))
    runs = {"x%g" % factor: {} for factor in factors}
    for seed, per_factor in enumerate(done):
        for factor, results in zip(factors, per_factor):
            runs["x%g" % factor]["seed%d" % seed] = results
    rows = summarize(runs)
    print_table(rows, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"args": vars(args), "seconds": time.time() - t0, "scaled_layers": [SCALED_UP, SCALED_DOWN],
               "summary": rows, "runs": runs}
    (out / "rescale_pretrained.json").write_text(json.dumps(payload, indent=1))
    print("wrote %s" % (out / "rescale_pretrained.json"))


def summarize(runs: dict) -> list:
    """One row per (factor, model): accuracy at 50 and at the end (mean, std over seeds; a diverged
    run counts as chance, 10 %), divergences, median relative weight change per layer."""
    rows = []
    for factor, by_seed in runs.items():
        for name in MODELS:
            results = [seeds[name] for seeds in by_seed.values()]
            final = [tfl.accuracy_or_chance(r["final_test_accuracy"]) for r in results]
            at50 = [tfl.accuracy_or_chance(_accuracy_at(r, 50)) for r in results]
            changes = [r["relative_change"] for r in results if r["relative_change"]]
            rows.append({"factor": factor, "model": name, "seeds": len(results),
                         "diverged": sum(r["diverged"] for r in results),
                         "final_mean": float(np.mean(final)), "final_std": float(np.std(final, ddof=1))
                         if len(final) > 1 else 0.0, "at50_mean": float(np.mean(at50)),
                         "relative_change": {k: float(np.median([c[k] for c in changes])) for k in LAYERS}
                         if changes else None,
                         "weight_norms": {k: float(np.median([r["weight_norms"][k] for r in results]))
                                          for k in LAYERS}})
    return rows


def _accuracy_at(result: dict, it: int):
    for c in result["curve"]:
        if c["iter"] == it:
            return c["test_accuracy"]
    return None


def print_table(rows: list, args):
    print("\nfine-tuning %d iterations (lr 0.01, momentum 0.9, batch 32) of a model pretrained %d iterations; "
          "%s x k, %s / k; %d seeds" % (args.finetune_iters, args.pretrain_iters, SCALED_UP, SCALED_DOWN,
                                        args.seeds))
    print("| k | model | test acc @50 | final test acc | diverged | rel. change conv1 conv2 fc3 fc4 "
          "| ||W|| conv1 conv2 fc3 fc4 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        change = " ".join("%.3g" % r["relative_change"][k] for k in LAYERS) if r["relative_change"] else "-"
        norms = " ".join("%.3g" % r["weight_norms"][k] for k in LAYERS)
        print("| %s | %s | %.1f %% | %.1f ± %.1f %% | %d/%d | %s | %s |"
              % (r["factor"], r["model"], 100 * r["at50_mean"], 100 * r["final_mean"], 100 * r["final_std"],
                 r["diverged"], r["seeds"], change, norms))


if __name__ == "__main__":
    main()
