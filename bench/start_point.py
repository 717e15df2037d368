"""Where SGD starts from each init of the training suite: loss, logits std, relative gradients.

For each net, arm and seed, the init that bench/train_few_labels.py made (made now if missing,
cached in the same work folder) is loaded into the TRAIN net in real Caffe and run over a few
training batches with dropout active, as SGD sees it: the loss, the std of the logits, and per
affine layer ‖∂L/∂W‖/‖W‖ (the relative size of the first step per unit learning rate). Algorithm 2
keeps the geometric mean of the change rates of the net it is given; if Algorithm 1 leaves the
layers above a dropout layer with inflated outputs, every layer's rate, and so the step SGD takes
at a given learning rate, is inflated with them.

    python bench/start_point.py --nets caffenet,vgg,small --seeds 2 --original ORIG \\
        --arms ours-gaussian,ours-gaussian-tp,orig-elwise,caffe-msra \\
        --variant gaussian-tp="--init gaussian --no-stats-dropout" --out docs/results/train_suite
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import train_few_labels as suite


def measure(work, maker, net, arm, alg2, seed, batches):
    """The ``start`` JSON of one init (computed in the real-Caffe chroot, cached in the work folder)."""
    weights = maker(net, arm, alg2, seed)
    out = work.host / "start" / ("%s_%s.json" % (net, weights.stem))
    if not out.exists():
        out.parent.mkdir(exist_ok=True)
        suite.caffe_run("python3", "bench/fashion_caffe.py", "start",
                        work.chroot(suite.train_prototxt(work, "gaussian", net)), work.chroot(weights),
                        str(batches), work.chroot(out))
    return json.loads(out.read_text())


def table(net, rows):
    """Markdown: one row per arm, means over seeds."""
    layers = list(rows[0]["relative_gradient"])
    lines = ["#### %s net" % net, "",
             "| init | Alg. 2 | seeds | first loss | logits std | " + " | ".join(layers) + " | geo. mean |",
             "|---|---|---|---|---|" + "---|" * (len(layers) + 1)]
    for r in rows:
        rel = [r["relative_gradient"][k] for k in layers]
        lines.append("| %s | %s | %d | %.2f | %.2f | %s | %.3f |" % (
            r["arm"], "yes" if r["alg2"] else "no", r["seeds"], r["loss"], r["logits_std"],
            " | ".join("%.3f" % v for v in rel), float(np.exp(np.mean(np.log(rel))))))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="small,caffenet,vgg")
    ap.add_argument("--arms", default="ours-gaussian,orig-elwise,caffe-msra")
    ap.add_argument("--alg2", default="default", choices=("default", "with", "without"),
                    help="default: with Algorithm 2 for ours-/orig- arms, without for the Caffe fillers")
    ap.add_argument("--variant", action="append", metavar='LABEL="OPTIONS"')
    ap.add_argument("--original", help="snapshot of github philkr/magic_init (checkout or bare git folder)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--batches", type=int, default=8, help="training batches (32 images) per measurement")
    ap.add_argument("--out", default=str(suite.REPO / "out" / "train_few_labels"))
    args = ap.parse_args(argv)
    work = suite.Work()
    list_path, _ = suite.prepare_data(work, 1000, 1000)
    maker = suite.InitMaker(work, list_path, args.original, suite.parse_variants(args.variant))
    payload, markdown = {"args": vars(args), "nets": {}}, []
    for net in args.nets.split(","):
        rows = []
        for arm in args.arms.split(","):
            alg2 = {"with": True, "without": False}.get(args.alg2, not arm.startswith("caffe-"))
            runs = [measure(work, maker, net, arm, alg2, seed, args.batches) for seed in range(args.seeds)]
            rows.append({"arm": arm, "alg2": alg2, "seeds": len(runs),
                         "loss": float(np.mean([r["loss"] for r in runs])),
                         "logits_std": float(np.mean([r["logits_std"] for r in runs])),
                         "relative_gradient": {k: float(np.mean([r["relative_gradient"][k] for r in runs]))
                                               for k in runs[0]["relative_gradient"]},
                         "runs": runs})
        payload["nets"][net] = rows
        markdown += table(net, rows) + [""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "start_point.json").write_text(json.dumps(payload, indent=1))
    (out / "start_point.md").write_text("\n".join(markdown))
    print("\n".join(markdown))


if __name__ == "__main__":
    main()
